"""ClickHouse away under load for longer than the session timeout and the poll interval: the views
still equal an undisturbed run.

While `run all` works through input that keeps arriving, every storage
table's folder of the chDB engine the sink writes to is made immutable
(``chattr +i``: even root cannot add a part there), so each insert fails as
it does when ClickHouse cannot write. The outage lasts longer than the
consumer-group session timeout and the sink's poll interval (lowered here
to 8 s): the sink, retrying the insert without asking for input, leaves its
group, and its commit after ClickHouse is back is refused. It must neither
stop nor lose a row: it joins again, reads what it had not committed once
more, and after a final drain every analyst view equals the undisturbed run
of the same input, row for row.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.config import Settings
from tests.conftest import TEST_GROUP_SESSION_TIMEOUT, o2o, query, start_o2o_logged
from tests.integration import crash_runs
from tests.integration.crash_runs import (
    chunks,
    expect_same,
    produce_piece,
    stage_offsets,
    wait_until_the_sink_commits,
)

pytestmark = [pytest.mark.integration, pytest.mark.outage, pytest.mark.timeout(900)]

settings, events_file, undisturbed = crash_runs.FIXTURES  # bound here for pytest to find

POLL_INTERVAL = 8.0
OUTAGE_SECONDS = 2 * POLL_INTERVAL  # longer than the poll interval and the session timeout


def test_clickhouse_away_longer_than_the_poll_interval_then_views_equal_an_undisturbed_run(
    settings: Settings,
    events_file: Path,
    undisturbed: dict[str, list[tuple[object, ...]]],
    tmp_path: Path,
) -> None:
    assert OUTAGE_SECONDS > TEST_GROUP_SESSION_TIMEOUT
    settings = settings.model_copy(update={"max_poll_interval_seconds": POLL_INTERVAL})
    o2o(settings, "init")
    pieces = chunks(events_file, 3)
    log = tmp_path / "run-all.log"
    run = start_o2o_logged(settings, log, "run", "all")
    frozen: list[str] = []
    try:
        produce_piece(settings, pieces[0])
        wait_until_the_sink_commits(settings, run, beyond=0)  # every stage up and at work
        frozen = _storage_folders(settings)
        subprocess.run(["chattr", "+i", *frozen], check=True)
        produce_piece(settings, pieces[1])
        time.sleep(OUTAGE_SECONDS)
        assert run.poll() is None, "run all stopped while ClickHouse was away"
        subprocess.run(["chattr", "-i", *frozen], check=True)
        frozen = []
        sunk = stage_offsets(settings, "sink")[0]
        wait_until_the_sink_commits(settings, run, beyond=sunk)
        produce_piece(settings, pieces[2])
        time.sleep(5)
    finally:
        if frozen:
            subprocess.run(["chattr", "-i", *frozen], check=False)
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGTERM)
        run.wait(120)
    text = log.read_text()
    assert run.returncode == 0 and "failed; stopped the others" not in text, text[-3000:]
    assert "(nothing committed)" in text, text[-3000:]  # inserts failed and were retried
    assert "commit refused" in text, text[-3000:]  # the sink had left its group meanwhile
    expect_same(settings, undisturbed, late_events_possible=True)  # a final drain, then every view


def _storage_folders(settings: Settings) -> list[str]:
    """The data folder of every storage table of the test's database (asked through the sink)."""
    rows = query(
        settings,
        "SELECT data_paths FROM system.tables WHERE database = '{db}' AND name LIKE '%\\_store'",
    )
    folders = [path.rstrip("/") for (paths,) in rows for path in paths]
    assert len(folders) >= 5, folders
    return folders
