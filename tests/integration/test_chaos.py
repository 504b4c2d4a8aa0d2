"""Crash safety, proven: random SIGKILLs of any stage while input keeps coming.

After the restarts and a drain, every analyst view equals an undisturbed
run row for row (tests/integration/crash_runs.py). Each stateful stage's
named points are in test_commit_protocol.py, the sink's and the timers' in
test_sink_kills.py (separate files, so that the test workers run them side
by side).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import OffsetSpec

from pipeline.config import Settings
from pipeline.kafka.admin import admin_client, end_offsets
from pipeline.runtime.stage_child import command_of
from tests.conftest import o2o, start_o2o
from tests.integration import crash_runs
from tests.integration.crash_runs import (
    STAGE_NAMES,
    chunks,
    expect_same,
    keep_log,
    produce_piece,
    record_kill,
    stage_inputs,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

settings, events_file, undisturbed = crash_runs.FIXTURES  # bound here for pytest to find


class _Offsets:
    """Committed and end offsets of every stage's inputs, read with clients kept open (fast to poll)."""

    def __init__(self, settings: Settings) -> None:
        self.inputs = {stage: stage_inputs(settings, stage) for stage in STAGE_NAMES}
        self.groups = {
            stage: Consumer(
                {"bootstrap.servers": settings.bootstrap_servers, "group.id": settings.group(stage)}
            )
            for stage in STAGE_NAMES
        }
        self.admin = admin_client(settings)
        self.partitions = {
            stage: [TopicPartition(t, p) for t, p in end_offsets(settings, inputs)]
            for stage, inputs in self.inputs.items()
        }

    def of(self, stage: str) -> tuple[int, int]:
        """(committed, end) of ``stage``, summed over its input partitions."""
        wanted = self.partitions[stage]
        latest = {tp: OffsetSpec.latest() for tp in wanted}  # type: ignore[no-untyped-call]
        ends = [f.result().offset for f in self.admin.list_offsets(latest, request_timeout=10).values()]
        done = self.groups[stage].committed(wanted, timeout=10)
        return sum(max(tp.offset, 0) for tp in done), sum(ends)

    def close(self) -> None:
        for consumer in self.groups.values():
            consumer.close()


def test_random_kills_of_any_stage(
    settings: Settings, events_file: Path, undisturbed: dict[str, list[tuple[object, ...]]]
) -> None:
    """Chaos: SIGKILLs of stages, in random order, each on a condition, never after a fixed time.

    The input arrives in pieces while `run all` runs, so every stage keeps
    having work pending. In each round, the first stage (checked in a random
    order) that has committed more in this round and still has input pending
    is killed; `run all` then stops the others. Its offsets are read again
    once it is dead, so what is recorded is what it had committed when it died.
    """
    o2o(settings, "init")
    chance = random.Random(20261202)
    offsets = _Offsets(settings)
    pieces = chunks(events_file, 9)
    kills: list[tuple[str, int, int]] = []
    try:
        for round_pieces in (pieces[:3], pieces[3:6], pieces[6:]):
            before = {stage: offsets.of(stage)[0] for stage in STAGE_NAMES}
            run = start_o2o(settings, "run", "all")
            try:
                killed = False
                for number, piece in enumerate(round_pieces, 1):
                    produce_piece(settings, piece)
                    # after the round's last piece, keep looking while stages start up and
                    # work through it: a round whose stages never had a chance is no test
                    deadline = time.monotonic() + (3.0 if number < len(round_pieces) else 30.0)
                    while not killed and run.poll() is None and time.monotonic() < deadline:
                        killed = _kill_one(run.pid, offsets, before, chance, kills)
                        if number == len(round_pieces) and not killed and not _pending(offsets):
                            break  # every stage is through its input: nothing left to interrupt
                        time.sleep(0.05)
                if not killed:
                    os.killpg(run.pid, signal.SIGTERM)  # a clean stop; the next round goes on
                keep_log(settings, "chaos", run.communicate(timeout=120)[1])
            finally:
                if run.poll() is None:
                    os.killpg(run.pid, signal.SIGKILL)
                    run.communicate()
    finally:
        offsets.close()
    for stage, committed, end in kills:
        record_kill(settings, "chaos", stage, committed, end)
    # a stage picked while it had input pending may commit the rest in the moment before the
    # signal lands (seen once: ingest at 636 of 636): such a kill interrupted nothing, so at least
    # two others must have
    interrupted = [kill for kill in kills if kill[1] < kill[2]]
    assert all(committed > 0 for _s, committed, _end in kills) and len(interrupted) >= 2, kills
    # the whole stack restarts while input keeps coming, so identity may resolve an event after
    # newer ones and the merge history take a step more or fewer: seen once in a loaded full run
    # (one merge step missing, every other view equal)
    expect_same(settings, undisturbed, late_events_possible=True)


def _pending(offsets: _Offsets) -> bool:
    """True while some stage has not committed all of its input."""
    return any(committed < end for committed, end in map(offsets.of, STAGE_NAMES))


def _kill_one(
    parent: int, offsets: _Offsets, before: dict[str, int], chance: random.Random, kills: list[Any]
) -> bool:
    """Kill the first stage that committed in this run and has input pending; record its offsets.

    Stages are checked in a random order, those not killed yet first.
    """
    order = chance.sample(STAGE_NAMES, len(STAGE_NAMES))
    order.sort(key=lambda stage: any(killed == stage for killed, *_ in kills))  # others first
    for stage in order:
        committed, end = offsets.of(stage)
        if before[stage] < committed < end:
            victim = _stage_process(parent, stage)
            if victim is None:
                continue
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            kills.append((stage, *offsets.of(stage)))
            return True
    return False


def _stage_process(parent: int, stage: str) -> psutil.Process | None:
    for child in psutil.Process(parent).children(recursive=True):  # forked by run all's fork server
        with contextlib.suppress(psutil.Error):
            if command_of(child.cmdline())[3:5] == ["run", stage]:
                return child
    return None
