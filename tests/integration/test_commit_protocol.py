"""Crash safety, proven: each stateful stage kills itself at each named point of its commit cycle.

Identity, journeys and attribution each die (SIGKILL of themselves) at a
named point (``O2O_FAULT_AT``); after the
restarts and a drain, every analyst view equals an undisturbed run row for
row (tests/integration/crash_runs.py). Skipped records are in
test_misread.py, the sink and timer ticks in test_sink_kills.py, random
kills from outside in test_chaos.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Settings
from tests.integration import crash_runs
from tests.integration.crash_runs import expect_same, run_plans

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

settings, events_file, undisturbed = crash_runs.FIXTURES  # bound here for pytest to find


def test_kills_at_every_point_of_the_stateful_stages(
    settings: Settings, events_file: Path, undisturbed: dict[str, list[tuple[object, ...]]]
) -> None:
    plans = [
        "journeys:after_outputs:1",
        "identity:after_outputs:1",
        "attribution:after_outputs:1",
        "journeys:during_restore:1",
        "identity:after_state:1",
        "attribution:before_ack:1",
        # the slice with merges in it (the simulator's seed 11: slices 1 and 6 of 7)
        "journeys:mid_handover:1",
        "journeys:mid_flush:1",
    ]
    run_plans(settings, events_file, plans)
    expect_same(settings, undisturbed)
