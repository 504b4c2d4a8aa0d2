"""A stage's life cycle on the real broker: an interrupted drain, a commit the group refuses."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
import pytest
from confluent_kafka import Message

from pipeline.config import Settings
from pipeline.kafka.admin import committed_offsets
from pipeline.runtime.confluent_stage import ConfluentStageLoop
from pipeline.runtime.drain import DrainGate, marker, marker_dir
from pipeline.runtime.stage_child import command_of
from tests.conftest import o2o, start_o2o, start_o2o_logged
from tests.integration.test_status import produce_raw

pytestmark = pytest.mark.integration


def test_sigterm_during_a_drain_exits_non_zero_and_marks_nothing_drained(settings: Settings) -> None:
    o2o(settings, "init")
    produce_raw(settings, 50, time.time())
    run = start_o2o(settings, "run", "all", "--drain")
    deadline = time.monotonic() + 120
    while not marker(settings, "ingest").exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker(settings, "ingest").exists(), "ingest never drained"
    os.kill(run.pid, signal.SIGTERM)  # `run all` only: it stops its stages
    _out, err = run.communicate(timeout=120)
    assert run.returncode == 2, err[-3000:]
    assert "stopped by a signal before the drain finished; nothing is marked drained" in err
    assert not list(marker_dir(settings).glob("*.drained"))


def test_run_all_stopped_with_its_process_group_waits_for_every_stage(
    settings: Settings, tmp_path: Path
) -> None:
    """SIGTERM to the whole group (a terminal closing, a test stopping it) reaches the fork server
    too: `run all` must still see each stage end, not take the server's end for theirs."""
    o2o(settings, "init")
    log = tmp_path / "run-all.log"
    run = start_o2o_logged(settings, log, "run", "all")  # not a pipe: the stages would hold it open
    deadline = time.monotonic() + 60
    stages: list[psutil.Process] = []
    while len(stages) < 5 and time.monotonic() < deadline:  # ingest, identity, journeys, attribution, sink
        children = psutil.Process(run.pid).children(recursive=True)
        stages = [p for p in children if "run" in command_of(p.cmdline())]
        time.sleep(0.2)
    assert len(stages) == 5, [p.cmdline() for p in stages]
    time.sleep(3)  # the stages are up
    os.killpg(run.pid, signal.SIGTERM)
    assert run.wait(120) == 0, log.read_text()[-3000:]
    running = [p.pid for p in stages if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert running == [], f"stages still running after run all ended: {running}"


class SlowFirstCheckpoint:
    """Remembers what it handled; its first checkpoint outlasts the consumer's poll interval."""

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self.handled: list[tuple[str, int, int]] = []
        self.checkpoints = 0

    def handle(self, messages: Sequence[Message]) -> None:
        self.handled += [(m.topic() or "", m.partition() or 0, m.offset() or 0) for m in messages]

    def due(self) -> bool:
        return True

    def progress(self, at_end: Sequence[tuple[str, int]], final: bool = False) -> None:
        pass

    def revoked(self, partitions: Sequence[tuple[str, int]]) -> None:
        pass

    def make_durable(self) -> None:
        self.checkpoints += 1
        if self.checkpoints == 1:
            time.sleep(self.pause)

    def close(self) -> None:
        pass


def test_a_commit_refused_after_a_long_step_reads_the_records_again(settings: Settings) -> None:
    """The sink waiting for ClickHouse past max.poll.interval.ms: its commit is refused, it goes on."""
    o2o(settings, "init")
    topic = produce_raw(settings, 20, time.time())
    handler = SlowFirstCheckpoint(pause=8.0)
    interval = {"max.poll.interval.ms": 4000}  # the smallest above the test session timeout (3 s)
    loop = ConfluentStageLoop(settings, "ingest", [topic], handler, DrainGate(settings, "ingest", []),
                              consumer_options=interval)  # fmt: skip
    stats = loop.run()
    assert stats.drained and stats.commits_refused >= 1
    offsets = sorted(offset for _t, _p, offset in handler.handled)
    assert set(offsets) == set(range(20)) and len(offsets) > 20  # read again, none lost
    assert committed_offsets(settings, settings.group("ingest"), [topic])[(topic, 0)] == 20
