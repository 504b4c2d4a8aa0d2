"""Offset reads right after a broker restart: retriable answers are asked again (no broker)."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from pipeline.kafka import admin


class SettlingAdmin:
    """An admin client whose ListOffsets answers fail per partition as a restarted broker's do, then pass."""

    def __init__(self, failures: dict[int, list[int]]) -> None:
        self.failures = failures
        self.requests: list[list[int]] = []

    def list_offsets(
        self, request: dict[TopicPartition, Any], request_timeout: float
    ) -> dict[Any, Future[Any]]:
        self.requests.append(sorted(tp.partition for tp in request))
        out: dict[Any, Future[Any]] = {}
        for tp in request:
            future: Future[Any] = Future()
            pending = self.failures.get(tp.partition) or []
            if pending:
                future.set_exception(KafkaException(KafkaError(pending.pop(0))))
            else:
                future.set_result(SimpleNamespace(offset=100 + tp.partition))
            out[tp] = future
        return out


def test_partitions_whose_leader_is_settling_are_asked_again_and_the_rest_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("time.sleep", lambda _seconds: None)
    client = SettlingAdmin({1: [KafkaError.UNKNOWN_LEADER_EPOCH, KafkaError.LEADER_NOT_AVAILABLE]})
    offsets = admin.partition_offsets(client, [("t", 0), ("t", 1)])  # type: ignore[arg-type]
    assert offsets == {("t", 0): 100, ("t", 1): 101}
    assert client.requests == [[0, 1], [1], [1]]  # only the partition that failed, again


def test_an_error_that_is_no_restart_is_raised_at_once() -> None:
    client = SettlingAdmin({0: [KafkaError.TOPIC_AUTHORIZATION_FAILED]})
    with pytest.raises(KafkaException):
        admin.partition_offsets(client, [("t", 0)])  # type: ignore[arg-type]
    assert client.requests == [[0]]
