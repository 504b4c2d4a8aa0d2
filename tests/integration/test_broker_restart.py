"""The Kafka broker restarted under load, cleanly and by SIGKILL: the views still equal an undisturbed run.

A broker of its own (the project's local stack, on free ports) is stopped
twice while `run all` works through the input that keeps arriving: once with
SIGTERM (a clean shutdown), once with SIGKILL. It is started again each
time on the same ports and data. Every stage rides through (`run all` keeps
running), the clients' reconnect errors are logged once in a while rather
than at every attempt, and after a final drain every analyst view equals
the undisturbed run of the same input, row for row, the two history views
(merges and consent) by their end state (tests/integration/views.py).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import Settings, load_settings
from pipeline.stack.local_kafka import LocalKafka, free_port
from tests.conftest import REPO, o2o, start_o2o_logged
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


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalKafka]:
    """A broker of this test's own, which it may stop and start."""
    state = tmp_path / "kafka-state"
    own = load_settings(state_dir=state, kafka_port=free_port(), kafka_controller_port=free_port())
    stack = LocalKafka(own, dist_cache=REPO / ".state" / "kafka" / "dist")
    stack.up()
    try:
        yield stack
    finally:
        stack.down(purge=True)


def test_broker_stopped_and_killed_under_load_then_views_equal_an_undisturbed_run(
    settings: Settings,
    events_file: Path,
    undisturbed: dict[str, list[tuple[object, ...]]],
    broker: LocalKafka,
    tmp_path: Path,
) -> None:
    settings = settings.model_copy(update={"bootstrap_servers": broker.status().bootstrap})
    o2o(settings, "init")
    pieces = chunks(events_file, 3)
    log = tmp_path / "run-all.log"
    run = start_o2o_logged(settings, log, "run", "all")
    try:
        produce_piece(settings, pieces[0])
        wait_until_the_sink_commits(settings, run, beyond=0)  # every stage up and at work
        broker.down()  # a clean stop (SIGTERM) under load
        time.sleep(6)
        broker.up()
        sunk = stage_offsets(settings, "sink")[0]
        produce_piece(settings, pieces[1])
        wait_until_the_sink_commits(settings, run, beyond=sunk)  # the second piece on its way
        pid = broker._running_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # and a crash
        time.sleep(6)
        broker.up()
        produce_piece(settings, pieces[2])
        time.sleep(8)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGTERM)
        run.wait(120)
    text = log.read_text()
    # every stage rode through both restarts: run all was still up and stopped cleanly
    assert run.returncode == 0 and "failed; stopped the others" not in text, text[-3000:]
    refused = text.count("Connection refused")
    assert 0 < refused < 300, f"{refused} lines about refused connections"  # repeats are counted, not logged
    # Each piece comes after a quiet spell in which ingest read every raw partition to its end, so
    # identity may resolve some of a piece's events after newer ones of another partition: the
    # history views are compared by their end state (tests/integration/views.py)
    expect_same(settings, undisturbed, late_events_possible=True)  # a final drain, then every view
