"""The confluent-kafka stage loop's offset bookkeeping: what it may commit after a rebalance."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from pipeline.config import load_settings
from pipeline.errors import CommitNotMade, ConfigError
from pipeline.kafka.clients import consumer_config
from pipeline.runtime import confluent_stage
from pipeline.runtime.confluent_stage import ConfluentStageLoop


class Recorder:
    """A handler that remembers what it was told."""

    def __init__(self) -> None:
        self.revoked_partitions: list[tuple[str, int]] = []

    def handle(self, messages: Sequence[Message]) -> None:
        pass

    def due(self) -> bool:
        return False

    def progress(self, at_end: Sequence[tuple[str, int]], final: bool = False) -> None:
        pass

    def revoked(self, partitions: Sequence[tuple[str, int]]) -> None:
        self.revoked_partitions.extend(partitions)

    def make_durable(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_offsets_of_partitions_taken_away_are_never_committed(tmp_path: Path) -> None:
    # the consumer is never subscribed: nothing here reaches a broker
    settings = load_settings(bootstrap_servers="127.0.0.1:9", state_dir=tmp_path)
    handler = Recorder()
    loop = ConfluentStageLoop(settings, "sink", ["t"], handler)
    try:
        loop._uncommitted = {("t", 0): 5, ("t", 1): 7, ("u", 1): 3}
        loop._on_revoke(None, [TopicPartition("t", 1), TopicPartition("u", 1)])
        assert loop._uncommitted == {("t", 0): 5}  # t[1] and u[1] belong to their next owner now
        assert handler.revoked_partitions == [("t", 1), ("u", 1)]
    finally:
        loop._consumer.close()


class BrokerAwayConsumer:
    """A consumer whose commits fail as librdkafka's do while the broker restarts, then pass."""

    def __init__(self, failures: list[int]) -> None:
        self.failures = failures
        self.committed: list[list[TopicPartition]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        if self.failures:
            raise KafkaException(KafkaError(self.failures.pop(0)))
        self.committed.append(offsets)


def test_a_commit_while_the_broker_restarts_is_retried_not_fatal(tmp_path: Path) -> None:
    settings = load_settings(bootstrap_servers="127.0.0.1:9", state_dir=tmp_path)
    loop = ConfluentStageLoop(settings, "sink", ["t"], Recorder())
    real = loop._consumer
    try:
        away = [KafkaError._WAIT_COORD, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN]
        loop._consumer = BrokerAwayConsumer(list(away))  # type: ignore[assignment]
        assert loop._commit([TopicPartition("t", 0, 5)]) is True
        assert loop.stats.retries == 3 and len(loop._consumer.committed) == 1  # type: ignore[attr-defined]
        loop._consumer = BrokerAwayConsumer([KafkaError.INVALID_COMMIT_OFFSET_SIZE])  # type: ignore[assignment]
        with pytest.raises(KafkaException):  # not about the broker being away: stops the stage
            loop._commit([TopicPartition("t", 0, 6)])
    finally:
        real.close()


def test_a_commit_waits_out_a_broker_away_longer_than_the_retry_bound_and_a_stop_ends_the_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(confluent_stage, "COMMIT_RETRY_SECONDS", 0.0)  # any wait is past the bound
    monkeypatch.setattr(confluent_stage.time, "sleep", lambda _seconds: None)
    settings = load_settings(bootstrap_servers="127.0.0.1:9", state_dir=tmp_path)
    loop = ConfluentStageLoop(settings, "sink", ["t"], Recorder())
    real = loop._consumer
    try:
        # two restarts in a row: waiting for the coordinator, then the coordinator loading
        away = [KafkaError._WAIT_COORD] * 30 + [KafkaError.COORDINATOR_LOAD_IN_PROGRESS] * 5
        loop._consumer = BrokerAwayConsumer(away)  # type: ignore[assignment]
        assert loop._commit([TopicPartition("t", 0, 5)]) is True
        assert loop.stats.retries == 35
        loop._consumer = BrokerAwayConsumer([KafkaError.REQUEST_TIMED_OUT] * 2)  # type: ignore[assignment]
        with pytest.raises(KafkaException):  # retriable, but not the broker away: bounded
            loop._commit([TopicPartition("t", 0, 6)])
        loop._consumer = BrokerAwayConsumer([KafkaError._TRANSPORT] * 3)  # type: ignore[assignment]
        loop.stop()
        with pytest.raises(CommitNotMade, match="reads them again"):
            loop._commit([TopicPartition("t", 0, 7)])
    finally:
        real.close()


def test_consumers_leave_their_group_after_the_max_poll_interval_of_the_settings(tmp_path: Path) -> None:
    settings = load_settings(
        state_dir=tmp_path, max_poll_interval_seconds=20, group_session_timeout_seconds=10
    )
    conf = consumer_config(settings, "g")
    assert conf["max.poll.interval.ms"] == 20_000 and conf["session.timeout.ms"] == 10_000
    with pytest.raises(ConfigError, match="O2O_MAX_POLL_INTERVAL_SECONDS"):  # librdkafka would refuse it
        load_settings(state_dir=tmp_path, max_poll_interval_seconds=5, group_session_timeout_seconds=10)
