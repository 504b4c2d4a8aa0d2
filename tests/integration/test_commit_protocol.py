"""Crash safety, proven: each stateful stage kills itself at each named point of its commit cycle.

Identity, journeys and attribution each die (SIGKILL of themselves) at a
named point (``O2O_FAULT_AT``) and skip a record (``misread``); after the
restarts and a drain, every analyst view equals an undisturbed run row for
row (tests/integration/crash_runs.py). The sink, timer ticks and random
kills from outside are in test_chaos.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.config import Settings
from tests.conftest import o2o
from tests.integration import crash_runs
from tests.integration.crash_runs import expect_same, keep_log, produce_piece, run_plans

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


def test_records_the_consumer_skipped_are_read_again(
    settings: Settings, events_file: Path, undisturbed: dict[str, list[tuple[object, ...]]]
) -> None:
    """A record faust's fetcher never handed over (it can, around a seek) is read again, not lost.

    Identity, journeys and attribution each skip the first record of their
    first batch in one drain of the whole input (ingest is through it
    before, so identity's first batch holds records that follow the one it
    skips; downstream, the next record of the partition shows the hole).
    """
    o2o(settings, "init")
    produce_piece(settings, events_file.read_bytes())
    o2o(settings, "run", "ingest", "--drain", timeout=120)
    stages = ("identity", "journeys", "attribution")
    faulty = settings.model_copy(update={"fault_at": ",".join(f"{stage}:misread:1" for stage in stages)})
    err = o2o(faulty, "run", "all", "--drain", timeout=240).stderr
    keep_log(settings, "misread", err)
    for stage in stages:
        assert f"{stage}: fault injected at misread" in err, err[-3000:]
        assert re.search(rf"{stage}: offsets \d+ to \d+ of .* reading them again", err), (stage, err[-3000:])
    expect_same(settings, undisturbed, drain=False)  # that drain read everything
