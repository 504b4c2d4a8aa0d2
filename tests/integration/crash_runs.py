"""The runs of the crash tests: input, the undisturbed run, runs that kill a stage, the comparison.

Shared by test_commit_protocol.py (each stage kills itself at each named
point of its commit cycle, and skips a record) and test_chaos.py (kills in
the sink and mid-tick, and random SIGKILLs from outside). Each process
kills itself at a named point (``O2O_FAULT_AT``, pipeline/runtime/faults.py)
or is killed; `run all --drain` is then started again, and after a final
undisturbed drain every analyst view must equal, row for row, the views of
an undisturbed run of the same input.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import signal
import subprocess
import time
import uuid
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from pipeline.config import Settings
from pipeline.kafka import topics
from pipeline.kafka.admin import committed_offsets, end_offsets
from pipeline.producer import send_events
from pipeline.simulate import simulate
from tests.conftest import TEST_GROUP_SESSION_TIMEOUT, o2o, start_o2o
from tests.integration.views import differences, snapshot

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
    kafka_bootstrap: str,
    chdb_folder: Path,
    tmp_path_factory: pytest.TempPathFactory,
    events_file: Path,
    worker_id: str,
) -> dict[str, list[tuple[object, ...]]]:
    """The analyst views after one run with no fault, made once per test run.

    Both crash modules compare with it, often in two test processes at once:
    the first makes it and keeps it in the run's shared temporary folder, the
    other waits for it there (the views depend on the input alone, not on the
    topic prefix or database of the run that made them).
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if worker_id != "master" else base  # under xdist: the run's, not the worker's
    cache = shared / "undisturbed-views.pickle"
    with (shared / "undisturbed-views.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not cache.exists():
            views = run_undisturbed(kafka_bootstrap, chdb_folder, tmp_path_factory, events_file)
            cache.write_bytes(pickle.dumps(views))
    loaded: dict[str, list[tuple[object, ...]]] = pickle.loads(cache.read_bytes())
    return loaded


def run_undisturbed(
    kafka_bootstrap: str, chdb_folder: Path, tmp_path_factory: pytest.TempPathFactory, events_file: Path
) -> dict[str, list[tuple[object, ...]]]:
    """Init, produce the input, `run all --drain`, and read the views."""
    from pipeline.config import load_settings

    tag = uuid.uuid4().hex[:10]
    settings = load_settings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=f"t{tag}.", clickhouse_database=f"t_{tag}",
        clickhouse_dsn=f"chdb://{chdb_folder}", state_dir=tmp_path_factory.mktemp("undisturbed"),
        partitions=2, sink_flush_seconds=0.3, allowed_lateness_minutes=LATENESS_MINUTES,
        group_session_timeout_seconds=TEST_GROUP_SESSION_TIMEOUT,
    )  # fmt: skip
    return drained_views(settings, events_file, "undisturbed")


def drained_views(settings: Settings, events_file: Path, name: str) -> dict[str, list[tuple[object, ...]]]:
    """Init, produce all of the input, `run all --drain` (its log kept as ``name``), read the views."""
    o2o(settings, "init")
    produce_piece(settings, events_file.read_bytes())
    keep_log(settings, name, o2o(settings, "run", "all", "--drain", timeout=300).stderr)
    views = snapshot(settings)
    assert views["events"] and views["conversions"] and views["attribution"] and views["person_merges"]
    return views


FIXTURES = (settings, events_file, undisturbed)
"""The fixtures a crash test module binds (pytest finds fixtures among a module's names)."""


def chunks(events_file: Path, parts: int) -> list[bytes]:
    """The input file cut into ``parts`` pieces of whole lines, in order."""
    lines = events_file.read_bytes().splitlines(keepends=True)
    size = -(-len(lines) // parts)
    return [b"".join(lines[i : i + size]) for i in range(0, len(lines), size)]


def produce_piece(settings: Settings, data: bytes) -> None:
    """Produce JSON lines to the raw topics, in this process (`o2o produce` has its own tests)."""
    send_events(settings, data.splitlines())


def keep_log(settings: Settings, name: str, err: str) -> None:
    """Keep a run's log next to the view differences, for when the comparison fails."""
    folder = settings.state_dir / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    number = len(list(folder.iterdir()))
    (folder / f"{number:02d}-{name.replace(':', '-')}.log").write_text(err)


def record_kill(settings: Settings, how: str, stage: str, committed: int, end: int) -> None:
    """Print a kill with the killed stage's offsets, and keep it in the state folder's kills.txt."""
    line = f"{how}: {stage} committed {committed} of {end} at the kill (lag {end - committed})"
    print(line)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with (settings.state_dir / "kills.txt").open("a") as kills:
        kills.write(line + "\n")


def run_until_fault(settings: Settings, plan: str, drain: bool = False, bound: float = 150.0) -> str:
    """`run all` with the fault plan: it must die at the planned point within ``bound`` seconds."""
    faulty = settings.model_copy(update={"fault_at": plan})
    run = start_o2o(faulty, "run", "all", *(["--drain"] if drain else []))
    try:
        _out, err = run.communicate(timeout=bound)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        _out, err = run.communicate()
        raise AssertionError(f"the fault {plan} did not fire within {bound} s:\n{err[-3000:]}") from None
    keep_log(settings, plan, err)
    fired = [line for line in err.splitlines() if "fault injected at" in line]
    assert run.returncode != 0 and fired, (
        f"run ended ({run.returncode}) without the fault {plan}:\n{err[-3000:]}"
    )
    stage, point = plan.split(":")[:2]
    assert any(f"{stage}: fault injected at {point}" in line for line in fired), (plan, fired)
    committed, end = stage_offsets(settings, stage)
    record_kill(settings, plan, stage, committed, end)
    if point in UNACKED_POINTS:
        assert committed < end, f"{plan}: the input of the killed step was acknowledged ({committed}/{end})"
    return fired[0]


# Points where the killed stage has not acknowledged the input it worked on.
UNACKED_POINTS = ("after_outputs", "after_state", "before_ack", "mid_handover", "mid_insert", "after_insert")


def stage_inputs(settings: Settings, stage: str) -> list[str]:
    """The topics ``stage`` reads."""
    if stage == "ingest":
        return topics.raw_topics(settings)
    if stage == "sink":
        return topics.row_topics(settings)
    return [settings.topic(topics.stage_input(settings, stage))]


def stage_offsets(settings: Settings, stage: str) -> tuple[int, int]:
    """(committed, end) offsets of a stage's group, summed over its input partitions."""
    inputs = stage_inputs(settings, stage)
    ends = end_offsets(settings, inputs)
    done = committed_offsets(settings, settings.group(stage), inputs)
    return sum(done.values()), sum(ends.values())


def wait_until_the_sink_commits(settings: Settings, run: subprocess.Popen[bytes], beyond: int) -> None:
    """Until the sink has committed past ``beyond`` (the input reached ClickHouse) while ``run`` runs:
    a fixed sleep let a slow machine disturb the pipeline while the stages were still starting."""
    deadline = time.monotonic() + 180
    while stage_offsets(settings, "sink")[0] <= beyond:
        assert run.poll() is None, "run all stopped"
        assert time.monotonic() < deadline, "the sink committed nothing new within 180 s"
        time.sleep(0.5)


def expect_same(
    settings: Settings,
    expected: dict[str, list[tuple[object, ...]]],
    drain: bool = True,
    late_events_possible: bool = False,
) -> None:
    """After a final undisturbed drain (unless the last run was one), every view equals ``expected``.

    ``late_events_possible``: see :func:`tests.integration.views.differences`.
    """
    if drain:
        o2o(settings, "run", "all", "--drain", timeout=300)
    actual = snapshot(settings)
    diffs = differences(expected, actual, late_events_possible)
    if diffs:
        report = settings.state_dir / "view-differences.txt"
        report.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for view in diffs:
            lines += [f"== {view} missing", *map(repr, (r for r in expected[view] if r not in actual[view]))]
            lines += [f"== {view} extra", *map(repr, (r for r in actual[view] if r not in expected[view]))]
        report.write_text("\n".join(lines))
        raise AssertionError(f"views differ from the undisturbed run ({report}): {sorted(diffs)}")


def run_plans(settings: Settings, events_file: Path, plans: list[str]) -> None:
    """Each plan gets a fresh slice of the input, so every stage has work when its fault is due.

    The runs do not drain (a drain closes every session; the next slice
    would then start new ones): the last plan runs in a drain, then a clean
    drain finishes.
    """
    o2o(settings, "init")
    for chunk, plan in zip(chunks(events_file, len(plans) - 1), plans, strict=False):
        produce_piece(settings, chunk)
        run_until_fault(settings, plan)
    run_until_fault(settings, plans[-1], drain=True)
