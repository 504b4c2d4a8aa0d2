"""Deterministic fault injection: a stage kills itself at a named point of its commit cycle.

Crash safety is proven by killing a process where it hurts most, not where a
random signal happens to land. ``O2O_FAULT_AT=journeys:after_outputs:3`` makes
the journeys process SIGKILL itself the third time it passes the point
``after_outputs``; several ``STAGE:POINT[:N]`` entries may be given, separated
by commas. Without the setting every call is a dictionary miss.

The points, in the order a stateful stage passes them:

* ``during_restore`` -- while state is read back from the changelog at start;
* ``after_outputs`` -- a batch's outputs are durable, its state is not;
* ``after_state`` -- outputs and state durable, the input not acknowledged;
* ``before_ack`` -- the step is complete, just before the input is acknowledged;
* ``mid_tick`` -- a timer tick's outputs are durable, its state is not;
* ``mid_handover`` -- a batch carrying a merge or hand-over record sent its
  outputs, its state is not durable;
* ``mid_flush`` -- the drain's final flush sent its outputs, its state is not durable.

One point does not kill: at ``misread`` the stage behaves as if its consumer
had skipped the first record a batch holds of a partition (never handed
over, the later ones were), which faust's fetcher can do around a seek; the
stage must notice the hole and read the partition again from it
(:mod:`pipeline.runtime.input_order`). Two more act on the first batch of
changelog records a stage fetches while restoring its tables:
``fetch_in_rebalance`` stops faust's flow as the batch comes back (faust
drops it, as in a rebalance; :mod:`pipeline.runtime.unhanded` must put it
back), and ``lost_fetch`` loses it without a trace and moves the client to
the changelogs' ends (the restore stalls;
:mod:`pipeline.runtime.recovery_watch` must read them again).

The sink passes ``after_insert`` (rows in ClickHouse, offsets not committed)
and ``mid_insert`` (some tables of a batch inserted, others not);
``o2o activations deliver`` (stage ``deliver``) passes ``after_post`` (a
decision posted, its answer not recorded yet).
"""

from __future__ import annotations

import logging
import os
import signal
from collections import Counter

log = logging.getLogger(__name__)

STATEFUL_POINTS = (
    "during_restore",
    "after_outputs",
    "after_state",
    "before_ack",
    "mid_tick",
    "mid_handover",
    "mid_flush",
    "misread",
    "fetch_in_rebalance",
    "lost_fetch",
)
SINK_POINTS = ("after_insert", "mid_insert")
DELIVERY_POINTS = ("after_post",)
POINTS = STATEFUL_POINTS + SINK_POINTS + DELIVERY_POINTS


def parse_plan(spec: str) -> dict[tuple[str, str], int]:
    """``STAGE:POINT[:N],...`` as {(stage, point): N}; raises ValueError on an unknown point."""
    plan: dict[tuple[str, str], int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        stage, point, *rest = part.split(":")
        if point not in POINTS:
            raise ValueError(f"unknown fault point {point!r}; points: {', '.join(POINTS)}")
        plan[(stage, point)] = int(rest[0]) if rest else 1
    return plan


class FaultPlan:
    """Where this process kills itself; :meth:`reach` is called at every named point."""

    def __init__(self, stage: str, spec: str = "") -> None:
        self.stage = stage
        self.plan = {point: n for (s, point), n in parse_plan(spec).items() if s == stage}
        self.passed: Counter[str] = Counter()

    def due(self, point: str) -> bool:
        """Count a pass of ``point``; True on the planned pass."""
        if not self.plan:
            return False
        self.passed[point] += 1
        return self.plan.get(point) == self.passed[point]

    def reach(self, point: str) -> None:
        """Count a pass of ``point``; SIGKILL this process on the planned pass."""
        if self.due(point):
            log.warning("%s: fault injected at %s (pass %d): SIGKILL", self.stage, point, self.passed[point])
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)
