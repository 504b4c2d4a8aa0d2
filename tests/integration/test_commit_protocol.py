"""Crash safety, proven: kill a stage at each named point of its commit cycle, restart, compare.

Each stage process kills itself (SIGKILL) at a named point of its commit
cycle (``O2O_FAULT_AT``, pipeline/runtime/faults.py); `run all --drain` is
then started again, and after a final undisturbed drain every analyst view
must equal, row for row, the views of an undisturbed run of the same input.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import OffsetSpec

from pipeline.config import Settings
from pipeline.kafka import topics
from pipeline.kafka.admin import admin_client, committed_offsets, end_offsets
from pipeline.simulate import simulate
from tests.conftest import TEST_GROUP_SESSION_TIMEOUT, o2o, start_o2o
from tests.integration.views import differences, snapshot

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

STAGE_NAMES = ("ingest", "identity", "journeys", "attribution", "sink")


# Longer than the input's span: no session becomes final before the last drain.
# Which sessions a merge can still re-cut depends on when the watermark passed
# them, that is on batch boundaries and timing, which a restart changes by
# nature; with nothing final early, the views depend on the input alone, and
# any difference is the commit protocol's.
LATENESS_MINUTES = 14 * 24 * 60


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test's settings with the long lateness."""
    return settings.model_copy(update={"allowed_lateness_minutes": LATENESS_MINUTES})


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few hundred O2O customers: web and app sessions, store visits, logins that merge persons.

    In event-time order (the simulator's output is not: local times with
    offsets), so a piece produced later never holds events older than what
    identity resolved from the pieces before it. Identity handles such late
    events, but renames a person whose older identifier comes late, and the
    rename stays in `person_merges`: a view that depends on arrival, which
    the runs with pieces would then not share with the undisturbed run.
    """
    path = tmp_path_factory.mktemp("crash-input") / "events.jsonl"
    events = sorted(
        simulate(customers=120, days=6, seed=11),
        key=lambda e: (datetime.fromisoformat(e["occurred_at"]), e["event_id"]),
    )
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return path


@pytest.fixture(scope="module")
def undisturbed(
    kafka_bootstrap: str, chdb_folder: Path, tmp_path_factory: pytest.TempPathFactory, events_file: Path
) -> Iterator[dict[str, list[tuple[object, ...]]]]:
    """The analyst views after one run with no fault."""
    from pipeline.config import load_settings

    tag = uuid.uuid4().hex[:10]
    settings = load_settings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=f"t{tag}.", clickhouse_database=f"t_{tag}",
        clickhouse_dsn=f"chdb://{chdb_folder}", state_dir=tmp_path_factory.mktemp("undisturbed"),
        partitions=2, sink_flush_seconds=0.3, allowed_lateness_minutes=LATENESS_MINUTES,
        group_session_timeout_seconds=TEST_GROUP_SESSION_TIMEOUT,
    )  # fmt: skip
    o2o(settings, "init")
    o2o(settings, "produce", "--file", str(events_file))
    _keep_log(settings, "undisturbed", o2o(settings, "run", "all", "--drain", timeout=300).stderr)
    views = snapshot(settings)
    assert views["events"] and views["conversions"] and views["attribution"] and views["person_merges"]
    yield views


def _chunks(events_file: Path, parts: int) -> list[bytes]:
    lines = events_file.read_bytes().splitlines(keepends=True)
    size = -(-len(lines) // parts)
    return [b"".join(lines[i : i + size]) for i in range(0, len(lines), size)]


def _produce(settings: Settings, data: bytes, tmp_path: Path) -> None:
    path = tmp_path / f"chunk-{uuid.uuid4().hex[:6]}.jsonl"
    path.write_bytes(data)
    o2o(settings, "produce", "--file", str(path))


def _keep_log(settings: Settings, name: str, err: str) -> None:
    """Keep a run's log next to the view differences, for when the comparison fails."""
    folder = settings.state_dir / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    number = len(list(folder.iterdir()))
    (folder / f"{number:02d}-{name.replace(':', '-')}.log").write_text(err)


def _record_kill(settings: Settings, how: str, stage: str, committed: int, end: int) -> None:
    """Print a kill with the killed stage's offsets, and keep it in the state folder's kills.txt."""
    line = f"{how}: {stage} committed {committed} of {end} at the kill (lag {end - committed})"
    print(line)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with (settings.state_dir / "kills.txt").open("a") as kills:
        kills.write(line + "\n")


def _run_until_fault(settings: Settings, plan: str, drain: bool = False, bound: float = 150.0) -> str:
    """`run all` with the fault plan: it must die at the planned point within ``bound`` seconds."""
    faulty = settings.model_copy(update={"fault_at": plan})
    run = start_o2o(faulty, "run", "all", *(["--drain"] if drain else []))
    try:
        _out, err = run.communicate(timeout=bound)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        _out, err = run.communicate()
        raise AssertionError(f"the fault {plan} did not fire within {bound} s:\n{err[-3000:]}") from None
    _keep_log(settings, plan, err)
    fired = [line for line in err.splitlines() if "fault injected at" in line]
    assert run.returncode != 0 and fired, (
        f"run ended ({run.returncode}) without the fault {plan}:\n{err[-3000:]}"
    )
    stage, point = plan.split(":")[:2]
    assert any(f"{stage}: fault injected at {point}" in line for line in fired), (plan, fired)
    committed, end = _offsets(settings, stage)
    _record_kill(settings, plan, stage, committed, end)
    if point in UNACKED_POINTS:
        assert committed < end, f"{plan}: the input of the killed step was acknowledged ({committed}/{end})"
    return fired[0]


# Points where the killed stage has not acknowledged the input it worked on.
UNACKED_POINTS = ("after_outputs", "after_state", "before_ack", "mid_handover", "mid_insert", "after_insert")


def _inputs(settings: Settings, stage: str) -> list[str]:
    if stage == "ingest":
        return topics.raw_topics(settings)
    if stage == "sink":
        return topics.row_topics(settings)
    return [settings.topic(topics.stage_input(settings, stage))]


def _offsets(settings: Settings, stage: str) -> tuple[int, int]:
    """(committed, end) offsets of a stage's group, summed over its input partitions."""
    inputs = _inputs(settings, stage)
    ends = end_offsets(settings, inputs)
    done = committed_offsets(settings, settings.group(stage), inputs)
    return sum(done.values()), sum(ends.values())


def _expect_same(settings: Settings, expected: dict[str, list[tuple[object, ...]]]) -> None:
    o2o(settings, "run", "all", "--drain", timeout=300)
    actual = snapshot(settings)
    diffs = differences(expected, actual)
    if diffs:
        report = settings.state_dir / "view-differences.txt"
        report.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for view in diffs:
            lines += [f"== {view} missing", *map(repr, (r for r in expected[view] if r not in actual[view]))]
            lines += [f"== {view} extra", *map(repr, (r for r in actual[view] if r not in expected[view]))]
        report.write_text("\n".join(lines))
        raise AssertionError(f"views differ from the undisturbed run ({report}): {sorted(diffs)}")


def _run_plans(settings: Settings, events_file: Path, tmp_path: Path, plans: list[str]) -> None:
    """Each plan gets a fresh slice of the input, so every stage has work when its fault is due.

    The runs do not drain (a drain closes every session; the next slice
    would then start new ones): the last plan runs in a drain, then a clean
    drain finishes.
    """
    o2o(settings, "init")
    for chunk, plan in zip(_chunks(events_file, len(plans) - 1), plans, strict=False):
        _produce(settings, chunk, tmp_path)
        _run_until_fault(settings, plan)
    _run_until_fault(settings, plans[-1], drain=True)


def test_kills_at_every_point_of_the_stateful_stages(
    settings: Settings, events_file: Path, tmp_path: Path, undisturbed: dict[str, list[tuple[object, ...]]]
) -> None:
    plans = [
        "journeys:after_outputs:1",
        "identity:after_outputs:1",
        "attribution:after_outputs:1",
        "journeys:during_restore:1",
        "identity:after_state:1",
        "journeys:mid_handover:1",
        "attribution:before_ack:2",
        "journeys:mid_flush:1",
    ]
    _run_plans(settings, events_file, tmp_path, plans)
    _expect_same(settings, undisturbed)


def test_records_the_consumer_skipped_are_read_again(
    settings: Settings, events_file: Path, undisturbed: dict[str, list[tuple[object, ...]]]
) -> None:
    """A record faust's fetcher never handed over (it can, around a seek) is read again, not lost.

    The stages drain one after the other, so each finds its whole input in
    the log and its first batch holds records that follow the one it skips.
    """
    o2o(settings, "init")
    o2o(settings, "produce", "--file", str(events_file))
    o2o(settings, "run", "ingest", "--drain", timeout=120)
    for stage in ("identity", "journeys", "attribution"):
        faulty = settings.model_copy(update={"fault_at": f"{stage}:misread:1"})
        err = o2o(faulty, "run", stage, "--drain", timeout=120).stderr
        _keep_log(settings, f"{stage}-misread", err)
        assert f"{stage}: fault injected at misread" in err, err[-3000:]
        assert re.search(rf"{stage}: offsets \d+ to \d+ of .* reading them again", err), err[-3000:]
    _expect_same(settings, undisturbed)


def test_kills_in_the_sink_and_mid_tick(
    settings: Settings, events_file: Path, tmp_path: Path, undisturbed: dict[str, list[tuple[object, ...]]]
) -> None:
    plans = ["sink:mid_insert:1", "sink:after_insert:2", "identity:mid_tick:1"]
    _run_plans(settings, events_file, tmp_path, [*plans, "attribution:mid_flush:1"])
    _expect_same(settings, undisturbed)


class _Offsets:
    """Committed and end offsets of every stage's inputs, read with clients kept open (fast to poll)."""

    def __init__(self, settings: Settings) -> None:
        self.inputs = {stage: _inputs(settings, stage) for stage in STAGE_NAMES}
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
    settings: Settings, events_file: Path, tmp_path: Path, undisturbed: dict[str, list[tuple[object, ...]]]
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
    pieces = _chunks(events_file, 9)
    kills: list[tuple[str, int, int]] = []
    try:
        for round_pieces in (pieces[:3], pieces[3:6], pieces[6:]):
            before = {stage: offsets.of(stage)[0] for stage in STAGE_NAMES}
            run = start_o2o(settings, "run", "all")
            try:
                killed = False
                for number, piece in enumerate(round_pieces, 1):
                    _produce(settings, piece, tmp_path)
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
                _keep_log(settings, "chaos", run.communicate(timeout=120)[1])
            finally:
                if run.poll() is None:
                    os.killpg(run.pid, signal.SIGKILL)
                    run.communicate()
    finally:
        offsets.close()
    for stage, committed, end in kills:
        _record_kill(settings, "chaos", stage, committed, end)
    assert len(kills) >= 2 and all(0 < committed < end for _s, committed, end in kills), kills
    _expect_same(settings, undisturbed)


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
    for child in psutil.Process(parent).children():
        with contextlib.suppress(psutil.Error):
            if child.cmdline()[3:5] == ["run", stage]:
                return child
    return None
