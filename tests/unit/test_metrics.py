"""Stage counters as Prometheus metrics."""

from __future__ import annotations

from collections import Counter

from prometheus_client import CollectorRegistry, generate_latest

from pipeline.metrics import CountsCollector, counter_of


def test_counters_are_exposed_by_stage_and_outcome() -> None:
    counts: Counter[str] = Counter()
    registry = CollectorRegistry()
    registry.register(CountsCollector("ingest", {"": counter_of(counts), "x": lambda: {"y": 2}}))
    counts["valid"] += 3
    counts["dead_letter.malformed_json"] += 1
    text = generate_latest(registry).decode()
    assert 'o2o_stage_records_total{outcome="valid",stage="ingest"} 3.0' in text
    assert 'o2o_stage_records_total{outcome="dead_letter.malformed_json",stage="ingest"} 1.0' in text
    assert 'o2o_stage_records_total{outcome="x.y",stage="ingest"} 2.0' in text
