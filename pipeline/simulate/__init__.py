"""Deterministic simulation of realistic O2O customers emitting contract-v1 events.

``simulate(customers, days, seed)`` yields plain-dict events sorted by event
time; ``count_estimate(customers, days)`` tells roughly how many to expect.
"""

from pipeline.simulate.generator import count_estimate, simulate

__all__ = ["count_estimate", "simulate"]
