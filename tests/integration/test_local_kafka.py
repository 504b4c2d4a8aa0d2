"""The local Apache Kafka stack (``pipeline.stack.local_kafka``) against a real broker.

The broker classpath comes from the cache the session broker of
tests/conftest.py uses (``.state/kafka/dist``), and one broker runs for the
whole module on random free ports with a temporary state folder.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pipeline.config import Settings, load_settings
from pipeline.errors import StackError
from pipeline.kafka.admin import committed_offsets, offsets_consumer
from pipeline.kafka.reset import delete_prefixed
from pipeline.stack.kafka_dist import DIST_CACHE_ENV
from pipeline.stack.local_kafka import LocalKafka, StackStatus, free_port
from tests.conftest import REPO, settings_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

VERSION = load_settings().kafka_version
TOPIC = "o2o.test.local-kafka"


@pytest.fixture(scope="session")
def dist_cache() -> Path:
    """The classpath cache of the session broker (tests/conftest.py): the same, never a skip.

    Without java, or without mvn and a cached classpath, the brokers fail
    to start and the tests fail (.ci/run installs both).
    """
    return REPO / ".state" / "kafka" / "dist"


def _settings(state_dir: Path, port: int | None = None) -> Settings:
    return load_settings(
        state_dir=state_dir,
        kafka_port=port or free_port(),
        kafka_controller_port=free_port(),
        kafka_heap="256m",
    )


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory, dist_cache: Path) -> Iterator[LocalKafka]:
    """A broker running for the whole module; stopped and purged at the end."""
    stack = LocalKafka(_settings(tmp_path_factory.mktemp("state")), dist_cache=dist_cache)
    stack.up()
    try:
        yield stack
    finally:
        stack.down(purge=True)


def _ensure_topic(bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if TOPIC in admin.list_topics(timeout=10).topics:
        return
    for future in admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)]).values():
        future.result(timeout=30)


def _topics(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


def test_produce_and_consume_one_message(kafka: LocalKafka) -> None:
    bootstrap = kafka.status().bootstrap
    _ensure_topic(bootstrap)
    payload = uuid.uuid4().hex.encode()
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    producer.produce(TOPIC, key=b"k", value=payload)
    assert producer.flush(30) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([TOPIC])
    got: list[bytes] = []
    deadline = time.monotonic() + 40
    try:
        while time.monotonic() < deadline and payload not in got:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None and msg.value() is not None:
                got.append(msg.value() or b"")
                consumer.commit(message=msg, asynchronous=False)
    finally:
        consumer.close()
    assert payload in got


def test_status_of_running_broker(kafka: LocalKafka) -> None:
    _ensure_topic(kafka.status().bootstrap)
    status = kafka.status()
    assert isinstance(status, StackStatus)
    assert status.running and status.ready
    assert status.pid is not None and status.pid > 0
    assert status.bootstrap == f"127.0.0.1:{kafka.settings.kafka_port}"
    assert status.version == VERSION
    assert status.topics is not None and status.topics >= 1
    assert status.data_dir == kafka.data_dir and (status.data_dir / "meta.properties").is_file()
    assert status.log_file.is_file()
    assert kafka.pid_file.read_text().strip() == str(status.pid)


def test_up_again_is_idempotent(kafka: LocalKafka) -> None:
    before = kafka.status()
    again = kafka.up()
    assert again.running and again.pid == before.pid
    # a second handle on the same state folder finds the same broker
    other = LocalKafka(kafka.settings, dist_cache=kafka.dist_cache)
    assert other.up().pid == before.pid


def test_other_ports_while_running_are_refused(kafka: LocalKafka) -> None:
    moved = kafka.settings.model_copy(update={"kafka_port": free_port()})
    with pytest.raises(StackError, match=f"already running .* on port {kafka.settings.kafka_port}"):
        LocalKafka(moved, dist_cache=kafka.dist_cache).up()


def test_taken_port_gives_stack_error(tmp_path: Path, dist_cache: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        stack = LocalKafka(_settings(tmp_path, port=port), dist_cache=dist_cache)
        with pytest.raises(StackError, match=f"port {port} is taken by another process; set O2O_KAFKA_PORT"):
            stack.up()
    assert not stack.status().running
    assert not stack.pid_file.exists()


def stack_cli(kafka: LocalKafka, *args: str) -> subprocess.CompletedProcess[str]:
    """``o2o stack ARGS`` through the real command line, on this module's broker."""
    env = {**settings_env(kafka.settings), DIST_CACHE_ENV: str(kafka.dist_cache)}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "stack", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_down_then_up_keeps_data_through_the_cli(kafka: LocalKafka) -> None:
    _ensure_topic(kafka.status().bootstrap)
    old_pid = kafka.status().pid
    status = stack_cli(kafka, "status")
    assert status.returncode == 0 and "running: True" in status.stdout and f"pid: {old_pid}" in status.stdout
    down = stack_cli(kafka, "down")
    assert down.returncode == 0 and "Kafka stopped" in down.stderr, down.stderr
    stopped = kafka.status()
    assert not stopped.running and stopped.pid is None and stopped.topics is None
    assert not kafka.pid_file.exists()
    assert stack_cli(kafka, "status").returncode == 3  # not running
    assert stack_cli(kafka, "down").returncode == 0  # idempotent
    up = stack_cli(kafka, "up")
    assert up.returncode == 0 and f"Kafka {VERSION} running" in up.stderr, up.stderr
    status = kafka.status()
    assert status.ready and status.pid != old_pid
    assert TOPIC in _topics(status.bootstrap)


def test_a_reset_right_after_a_start_deletes_the_groups_and_their_offsets(kafka: LocalKafka) -> None:
    """A reset (``o2o demo``, the bench) just after a start deletes the groups and their offsets.

    A broker just started lists only the groups of the offsets partitions it
    has loaded, with no error for the others (seen with the bench's broker,
    whose stages then took the new run's input as handled, and here when the
    machine was busy); the reset waits for every coordinator first. The
    waiting itself is checked in tests/unit/test_group_reset.py.
    """
    bootstrap = kafka.status().bootstrap
    settings = load_settings(bootstrap_servers=bootstrap, topic_prefix="reset.")
    _ensure_topic(bootstrap)
    groups = [settings.group("journeys"), settings.group("activation"), settings.group("a-tool")]
    for group in groups:
        consumer = offsets_consumer(settings, group)
        consumer.commit(offsets=[TopicPartition(TOPIC, 0, 5)], asynchronous=False)
        consumer.close()
    assert committed_offsets(settings, groups[0], [TOPIC]) == {(TOPIC, 0): 5}
    kafka.down()
    kafka.up()
    delete_prefixed(settings)
    left = {group: committed_offsets(settings, group, [TOPIC]) for group in groups}
    assert left == {group: {} for group in groups}


def test_down_purge_wipes_data(kafka: LocalKafka) -> None:
    assert kafka.data_dir.exists()
    kafka.down(purge=True)
    assert not kafka.data_dir.exists()
    assert not kafka.logs_dir.exists()
    assert (kafka.dist_cache / VERSION / "lib").is_dir()  # the classpath stays cached
    status = kafka.up()  # a fresh, empty broker
    assert status.ready
    assert TOPIC not in _topics(status.bootstrap)
