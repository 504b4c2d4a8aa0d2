"""Crash safety, proven: the sink kills itself mid-insert and after an insert, identity mid-tick.

After the restarts and a drain, every analyst view equals an undisturbed
run row for row (tests/integration/crash_runs.py). The stateful stages'
commit points are in test_commit_protocol.py, random kills in test_chaos.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Settings
from tests.integration import crash_runs
from tests.integration.crash_runs import expect_same, run_plans

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

settings, events_file, undisturbed = crash_runs.FIXTURES  # bound here for pytest to find


def test_kills_in_the_sink_and_mid_tick(
    settings: Settings, events_file: Path, undisturbed: dict[str, list[tuple[object, ...]]]
) -> None:
    plans = ["sink:mid_insert:1", "sink:after_insert:2", "identity:mid_tick:1"]
    run_plans(settings, events_file, [*plans, "attribution:mid_flush:1"])
    expect_same(settings, undisturbed)
