"""Two processes of every stage over 8 partitions, one killed mid-stream and restarted, in turn.

Each stage runs as two processes (`o2o run STAGE --copy N`) that split its
input partitions; the sink is one process, as the embedded ClickHouse belongs
to one process. While they work through the input, one process of identity,
journeys, attribution and ingest is SIGKILLed in turn as soon as its stage has
committed more of it; the other takes its partitions over (the test waits
until the group shows it holding them all and it has committed more), and the killed one is started
again, taking some back from a live process, which must let go of their
state. The stages after ingest run in drain mode from the start, so the
processes that lived through the moves also flush at the end, side by side;
every analyst view then equals, row for row, a run of the same input by one
process per stage.

Identity is killed too: its restore after the partitions move, in the
survivor and in the restarted process, is where faust's table recovery once
waited for ever (docs/operations.md, "Table restores that stall").
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipeline.config import Settings
from pipeline.kafka.admin import end_offsets
from pipeline.runtime.drain import UPSTREAM
from pipeline.status import gather
from tests.conftest import o2o, start_o2o_logged
from tests.integration import crash_runs
from tests.integration.crash_runs import (
    LATENESS_MINUTES,
    drained_views,
    expect_same,
    keep_log,
    produce_piece,
    record_kill,
    stage_inputs,
    stage_offsets,
)

pytestmark = [pytest.mark.integration, pytest.mark.outage, pytest.mark.timeout(900)]

events_file = crash_runs.events_file  # bound here for pytest to find

PARTITIONS = 8
COPIES = {"ingest": 2, "identity": 2, "journeys": 2, "attribution": 2, "sink": 1}
KILLED_IN_TURN = ("identity", "journeys", "attribution", "ingest")

T = TypeVar("T")
NO_LEADER_YET = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)


def test_two_processes_per_stage_killed_and_restarted_match_one(
    settings: Settings, events_file: Path, tmp_path: Path
) -> None:
    base = settings.model_copy(
        update={"partitions": PARTITIONS, "allowed_lateness_minutes": LATENESS_MINUTES}
    )
    expected = _one_process_run(base, events_file)

    copies = base.model_copy(
        update={
            "identity_workers": 2,
            "workers_ingest": 2,
            "workers_journeys": 2,
            "workers_attribution": 2,
        }
    )
    o2o(copies, "init")
    produce_piece(copies, events_file.read_bytes())  # all of it, as for the one-process run
    log = tmp_path / "copies.log"

    def start(stage: str, copy: int) -> subprocess.Popen[bytes]:
        return start_o2o_logged(copies, log, "run", stage, "--copy", str(copy), *_drain_args(stage))

    running = {(stage, copy): start(stage, copy) for stage, count in COPIES.items() for copy in range(count)}
    try:
        for stage in KILLED_IN_TURN:
            _kill_at_work(copies, stage, running[(stage, 1)])
            _wait_for_one_holder(copies, stage)
            _wait_for_work(copies, stage)
            running[(stage, 1)] = start(stage, 1)
        # the long-lived ingest processes make way for one that drains; the other
        # stages, draining from the start, then finish one after the other
        for copy in range(COPIES["ingest"]):
            os.killpg(running.pop(("ingest", copy)).pid, signal.SIGTERM)
        keep_log(copies, "ingest-drain", o2o(copies, "run", "ingest", "--drain", timeout=300).stderr)
        for (stage, copy), process in running.items():
            assert process.wait(300) == 0, f"{stage} copy {copy} exited {process.returncode}"
    finally:
        for process in running.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        keep_log(copies, "copies", log.read_text(errors="replace"))

    moved = r"(journeys|attribution): partitions \[[^]]*\] moved to another process; (\d+)"
    dropped = re.findall(moved, log.read_text())
    # partitions moved away from a live process of each, and from one with state in memory (a
    # stage killed with nothing pending may take its partitions back before the survivor restored them)
    assert {s for s, _n in dropped} == {"journeys", "attribution"}, dropped
    assert any(int(n) > 0 for _s, n in dropped), dropped
    expect_same(copies, expected, drain=False)


def _drain_args(stage: str) -> list[str]:
    """Ingest runs until stopped; every other stage drains once the stages before it have."""
    if stage == "ingest":
        return []
    after = [arg for upstream in UPSTREAM[stage] if upstream in COPIES for arg in ("--after", upstream)]
    return ["--drain", *after]


def _one_process_run(base: Settings, events_file: Path) -> dict[str, list[tuple[object, ...]]]:
    """The views after one process per stage drained the whole input (own topics and database)."""
    one = base.model_copy(
        update={
            "topic_prefix": f"{base.topic_prefix}one.",
            "consumer_group_prefix": f"{base.topic_prefix}one.",
            "clickhouse_database": f"{base.clickhouse_database}_one",
        }
    )
    return drained_views(one, events_file, "one-process")


def _members(settings: Settings, stage: str) -> dict[str, set[tuple[str, int]]]:
    """The stage's group members now: client id -> the (topic, partition) pairs assigned to it."""
    status = _retried(gather, settings, [stage], False)
    members: dict[str, set[tuple[str, int]]] = {}
    for member in status.stages[0].members if status.stages else ():
        held = members.setdefault(member.client_id, set())
        for listed in member.partitions:  # "topic[0,2]"
            topic, numbers = listed[:-1].split("[")
            held.update((topic, int(n)) for n in numbers.split(",") if n)
    return members


def _kill_at_work(settings: Settings, stage: str, process: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``process`` as soon as its stage has committed more input, or has done all of it.

    The input is all there before the processes start: arriving in pieces
    while they run, events race each other through ingest's partitions and
    identity resolves some after newer ones (counted as late, as live
    traffic can), which no two runs do alike.
    """
    before = _committed(settings, stage)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        committed, end = _retried(stage_offsets, settings, stage)
        if before < committed or 0 < committed == end:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            record_kill(settings, "copies", stage, *_retried(stage_offsets, settings, stage))
            return
        time.sleep(0.05)
    raise AssertionError(f"{stage} committed nothing within 90 s")


def _committed(settings: Settings, stage: str) -> int:
    """What the stage's group has committed, summed over its input partitions."""
    return _retried(stage_offsets, settings, stage)[0]


def _retried(read: Callable[..., T], *args: Any) -> T:
    """``read(*args)``, again for up to 30 s while the broker answers with a retriable error.

    Just after `o2o init`, a new topic's partitions may still be without a leader.
    """
    deadline = time.monotonic() + 30
    while True:
        try:
            return read(*args)
        except KafkaException as exc:
            error = exc.args[0]
            retry = error.retriable() or error.code() in NO_LEADER_YET
            if not retry or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _wait_for_work(settings: Settings, stage: str) -> None:
    """Wait until the stage commits more input, or has committed all of it.

    A faust process handles nothing before it restored the state of every
    partition it was given, so a commit means the survivor holds the killed
    process's state; started again at once, the killed one could take its
    partitions back before that, and there would be no state to let go of.
    """
    committed, end = _retried(stage_offsets, settings, stage)
    deadline = time.monotonic() + 60
    while committed < end and time.monotonic() < deadline:
        time.sleep(0.1)
        now, end = _retried(stage_offsets, settings, stage)
        if now > committed:
            return
    assert committed >= end or time.monotonic() < deadline, f"{stage} committed nothing more within 60 s"


def _wait_for_one_holder(settings: Settings, stage: str) -> None:
    """Wait until one process of ``stage`` holds every partition of its input (the killed one's too)."""
    inputs = set(_retried(end_offsets, settings, stage_inputs(settings, stage)))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        members = list(_members(settings, stage).values())
        if len(members) == 1 and inputs <= members[0]:
            return
        time.sleep(0.2)
    raise AssertionError(f"the surviving {stage} process did not take every partition over within 60 s")
