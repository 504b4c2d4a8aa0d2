"""A table restore whose changelog records faust's consumer dropped, or lost, ends with the right state.

faust's consumer can take a batch of records from the Kafka client and drop
it (a rebalance stops its flow as the batch comes back): the client's
position is past those records, and a table restoring from that changelog
would wait for ever (pipeline/runtime/unhanded.py puts them back). Should
records be lost some other way, the recovery guard notices the restore
making no progress and reads those changelogs again
(pipeline/runtime/recovery_watch.py). Each stateful stage is stopped after
some work, restarted with more input, and meets one of the two faults in its
restore; after the drain every analyst view equals an undisturbed run.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.runtime.recovery_watch import STALL_SECONDS
from tests.conftest import o2o, start_o2o_logged
from tests.integration import crash_runs
from tests.integration.crash_runs import (
    chunks,
    expect_same,
    keep_log,
    produce_piece,
    wait_until_the_sink_commits,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

settings, events_file, undisturbed = crash_runs.FIXTURES  # bound here for pytest to find

DROPPED = ("identity", "attribution")  # faust drops a batch of their changelogs: put back at once
LOST = ("journeys",)  # a batch of its changelogs is lost: the guard reads them again


def test_restores_whose_changelog_records_were_dropped_or_lost_end_with_the_right_state(
    settings: Settings, events_file: Path, undisturbed: dict[str, list[tuple[object, ...]]], tmp_path: Path
) -> None:
    o2o(settings, "init")
    first, second = chunks(events_file, 2)
    log = tmp_path / "first.log"
    run = start_o2o_logged(settings, log, "run", "all")
    try:
        produce_piece(settings, first)
        wait_until_the_sink_commits(settings, run, beyond=0)  # every stage has written state
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        run.wait(120)
    assert run.returncode == 0, log.read_text()[-3000:]
    produce_piece(settings, second)
    plan = [f"{stage}:fetch_in_rebalance:1" for stage in DROPPED]
    plan += [f"{stage}:lost_fetch:1" for stage in LOST]
    faulty = settings.model_copy(update={"fault_at": ",".join(plan)})
    err = o2o(faulty, "run", "all", "--drain", timeout=300).stderr
    keep_log(settings, "restore-fetches", err)
    for stage in DROPPED:
        assert f"{stage}: fault injected at fetch_in_rebalance" in err, err[-3000:]
        assert re.search(rf"{stage}: faust's consumer took \d+ records it did not hand on", err), err[-3000:]
        assert f"{stage}: table recovery restored nothing" not in err, err[-3000:]  # put back at once
    for stage in LOST:
        assert f"{stage}: fault injected at lost_fetch" in err, err[-3000:]
        assert f"{stage}: table recovery restored nothing for {STALL_SECONDS:.0f} s" in err, err[-3000:]
        assert re.search(rf"{stage}: changelog partitions \[.*\] read again from the offsets restored", err)
    # the first piece was read to its end before the second came (see test_broker_restart.py)
    expect_same(settings, undisturbed, drain=False, late_events_possible=True)
