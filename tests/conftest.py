"""Shared fixtures: one real Kafka broker per test run, one chDB folder, and per-test isolation.

The broker is the project's own local stack (Apache Kafka, KRaft) on a free
loopback port, with its SASL_SSL listener on another, and its own state
folder; its classpath download is cached under the repository's ``.state``
so repeated runs need no network. With
pytest-xdist (``-n N``, as ``make test`` runs) the controlling process starts
the one broker before the workers and stops it after them; each worker is
told its address. chDB allows one data folder per process, so every test of a
worker shares one folder and gets its own database and topic prefix.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from pipeline.config import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent

# A stage restarted after a kill waits this long for its dead predecessor's partitions.
TEST_GROUP_SESSION_TIMEOUT = 3.0

# CI (.ci/run sets CI=true) runs the property tests on a fixed sequence of
# examples: a run passes or fails for what changed, not for what was drawn.
# Locally every run draws new examples.
# No deadline on examples in either: timings never go into tests (and two test
# workers share the machine's cores with the broker and the stages).
hypothesis_settings.register_profile("local", deadline=None)
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True, deadline=None)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "local")


BROKER_KEY = "o2o_test_broker"  # how the controlling process tells the workers


class SessionBroker:
    """The project's local Kafka broker on free ports, in a state folder of its own."""

    def __init__(self, state: Path) -> None:
        from pipeline.stack.local_kafka import LocalKafka, free_port

        self.state = state
        port, controller, secure = free_port(), free_port(), free_port()
        self.settings = load_settings(
            state_dir=state, kafka_port=port, kafka_controller_port=controller, kafka_secure_port=secure
        )
        self.stack = LocalKafka(self.settings, dist_cache=REPO / ".state" / "kafka" / "dist")
        # with the SASL_SSL listener of `o2o stack up --secure` (tests/integration/test_secure_kafka.py)
        self.bootstrap = self.stack.up(secure=True).bootstrap

    def stack_settings(self) -> Settings:
        """Settings that reach this broker, with its state folder and ports (for `o2o stack`)."""
        return self.settings.model_copy(update={"bootstrap_servers": self.bootstrap})

    def cpu_seconds(self) -> float | None:
        """CPU time the broker used so far (user and system), None when it is not running."""
        import psutil

        pid = self.stack._running_pid()
        if pid is None:
            return None
        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)

    def down(self) -> None:
        """Stop the broker and delete its data."""
        self.stack.down(purge=True)


BROKER = pytest.StashKey[SessionBroker]()  # the controlling process's broker, under xdist


def _controls_workers(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput") and bool(config.getoption("numprocesses", None))


def pytest_configure(config: pytest.Config) -> None:
    """Under xdist, the controlling process starts the run's one broker before any worker."""
    if _controls_workers(config):
        config.stash[BROKER] = SessionBroker(Path(tempfile.mkdtemp(prefix="o2o-test-kafka-")))


def pytest_configure_node(node: Any) -> None:
    """xdist: tell each worker where the broker is."""
    settings = node.config.stash[BROKER].stack_settings()
    node.workerinput[BROKER_KEY] = settings.model_dump(
        mode="json",
        include={
            "bootstrap_servers",
            "state_dir",
            "kafka_port",
            "kafka_controller_port",
            "kafka_secure_port",
        },
    )


def _cpu_seconds() -> float:
    """CPU time of this process and of the children it has waited for."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Note each test's CPU time (setup, call and teardown, with the processes it ran) on its reports."""
    item.user_properties.append(("cpu_start", _cpu_seconds()))
    yield


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    """The CPU time so far, on the teardown report (the last of a test)."""
    if call.when == "teardown":
        start = dict(item.user_properties).get("cpu_start")
        if isinstance(start, float):
            item.user_properties.append(("cpu_seconds", _cpu_seconds() - start))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect the tests' CPU times where the summary is written (the controlling process)."""
    if report.when == "teardown":
        for name, value in report.user_properties:
            if name == "cpu_seconds" and isinstance(value, float):
                CPU_TIMES[report.nodeid] = value


CPU_TIMES: dict[str, float] = {}


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The CPU the tests and the broker took: on 2 cores it is what the suite's length follows."""
    if CPU_TIMES:
        total = sum(CPU_TIMES.values())
        terminalreporter.write_line(f"CPU of the tests, with the processes they ran: {total:.0f} s; most:")
        for nodeid, spent in sorted(CPU_TIMES.items(), key=lambda kv: -kv[1])[:15]:
            terminalreporter.write_line(f"  {spent:7.1f} s  {nodeid}")
    broker = config.stash.get(BROKER, None)
    used = broker.cpu_seconds() if broker is not None else None
    if used is not None:
        terminalreporter.write_line(f"test broker: {used:.0f} CPU-s over the run")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Under xdist, stop the broker once every worker is done."""
    broker = config.stash.get(BROKER, None)
    if broker is not None:
        broker.down()
        shutil.rmtree(broker.state, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """Settings of the run's Kafka broker: the controlling process's under xdist, else started here."""
    shared = getattr(request.config, "workerinput", {}).get(BROKER_KEY)
    if shared:
        yield load_settings(**shared)
        return
    broker = SessionBroker(tmp_path_factory.mktemp("kafka-state"))
    try:
        yield broker.stack_settings()
    finally:
        broker.down()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_stack: Settings) -> str:
    """Bootstrap servers of the session's broker."""
    return kafka_stack.bootstrap_servers


@pytest.fixture(scope="session")
def chdb_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one embedded ClickHouse folder of this test run."""
    return tmp_path_factory.mktemp("chdb") / "clickhouse"


@pytest.fixture
def settings(kafka_bootstrap: str, chdb_folder: Path, tmp_path: Path) -> Settings:
    """Settings of one test: its own topic prefix, consumer groups and database."""
    tag = uuid.uuid4().hex[:10]
    return load_settings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t{tag}.",
        clickhouse_database=f"t_{tag}",
        clickhouse_dsn=f"chdb://{chdb_folder}",
        state_dir=tmp_path / "state",
        partitions=2,
        sink_flush_seconds=0.3,
        group_session_timeout_seconds=TEST_GROUP_SESSION_TIMEOUT,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment for a child ``o2o`` process with exactly these settings."""
    from pipeline.runtime.stages import settings_env as to_env

    env = {k: v for k, v in os.environ.items() if not k.startswith("O2O_")}
    env.update(to_env(settings))
    return env


def start_o2o(settings: Settings, *args: str) -> subprocess.Popen[str]:
    """Start the ``o2o`` CLI in the background, in its own process group."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=settings_env(settings),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # so a timeout can stop the stages `run all` started too
    )


def start_o2o_logged(settings: Settings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start the ``o2o`` CLI in the background, its own process group, its log appended to ``log``.

    For runs of a minute or more: a pipe (:func:`start_o2o`) fills and stalls them.
    """
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *args],
            env=settings_env(settings), cwd=REPO, stdout=subprocess.DEVNULL, stderr=sink,
            start_new_session=True,
        )  # fmt: skip


def stop_o2o(child: subprocess.Popen[str], timeout: float = 90) -> None:
    """SIGTERM to a background ``o2o`` and its stages; SIGKILL if they do not stop in time."""
    os.killpg(child.pid, signal.SIGTERM)
    try:
        child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # never leave a stage holding the chDB folder
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()


def o2o(
    settings: Settings, *args: str, timeout: float = 240, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the ``o2o`` CLI as a child process with these settings, and wait for it."""
    child = start_o2o(settings, *args)
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        stdout, stderr = child.communicate()
        command = " ".join(args)
        raise AssertionError(f"o2o {command} did not finish in {timeout} s\n{stderr[-4000:]}") from None
    proc = subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        (settings.state_dir / "failed-command.log").parent.mkdir(parents=True, exist_ok=True)
        (settings.state_dir / "failed-command.log").write_text(proc.stderr)
        raise AssertionError(
            f"o2o {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
        )
    return proc


def query(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a query on this test's database (opens and closes the chDB folder)."""
    from pipeline.clickhouse.query_server import query_any

    _cols, rows = query_any(settings, sql.replace("{db}", settings.clickhouse_database))
    return [tuple(r) for r in rows]


def query_each(settings: Settings, sqls: list[str]) -> list[list[tuple[Any, ...]]]:
    """Rows of each query, ClickHouse (the chDB folder) opened once for all of them."""
    from pipeline.clickhouse.query_server import query_many

    statements = [sql.replace("{db}", settings.clickhouse_database) for sql in sqls]
    return [[tuple(r) for r in rows] for _cols, rows in query_many(settings, statements)]


STORY_T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def at(**delta: float) -> str:
    """RFC 3339 time ``delta`` after the stories' start (2026-11-01 10:00 UTC)."""
    return (STORY_T0 + timedelta(**delta)).isoformat()


def story_event(
    event_id: str, source: str, etype: str, when: str, ids: dict[str, str], **extra: Any
) -> dict[str, Any]:
    """One contract event of a hand-written test story."""
    return {"event_id": event_id, "source": source, "type": etype, "occurred_at": when, "ids": ids, **extra}


def random_identifier_graph(seed: int = 3, n: int = 400) -> list[dict[str, Any]]:
    """Web and app events over a random identifier graph, in random time order over six days.

    No user or loyalty ids, so no conflicts: identifiers join into a few large
    persons, which identity renames back and forth as older sightings arrive.
    """
    rng = random.Random(seed)
    pool = [("anonymous_id", f"c{i}") for i in range(120)] + [("device_id", f"d{i}") for i in range(60)]
    pool += [("email", f"m{i}@example.com") for i in range(40)]
    out = []
    for i in range(n):
        ids = dict(rng.sample(pool, rng.choice([1, 1, 2, 3])))
        when = at(minutes=rng.randrange(0, 6 * 24 * 60))
        if rng.random() < 0.1:
            props = {"order_id": f"o{i}", "revenue": 10.0 + i % 7, "currency": "EUR"}
            props["fulfillment"] = "delivery"
            out.append(story_event(f"e{i}", "web", "order_completed", when, ids, properties=props))
        else:
            source, etype = rng.choice([("web", "page_view"), ("app", "screen_view")])
            medium = rng.choice(["", "cpc", "email", "social"])
            context = {"campaign": {"medium": medium}}
            out.append(story_event(f"e{i}", source, etype, when, ids, context=context))
    return out
