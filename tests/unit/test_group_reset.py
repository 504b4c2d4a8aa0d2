"""A reset's consumer groups: listed again while a broker loads them, deleted once it has."""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipeline.errors import KafkaUnavailable
from pipeline.kafka.admin import _delete_groups, _prefixed_groups


class Listed:
    """What confluent-kafka's list_consumer_groups result holds."""

    def __init__(self, groups: list[str], errors: list[KafkaException]) -> None:
        self.valid = [type("Group", (), {"group_id": group})() for group in groups]
        self.errors = errors


def done(value: Any = None, error: KafkaError | None = None) -> Future[Any]:
    future: Future[Any] = Future()
    if error is None:
        future.set_result(value)
    else:
        future.set_exception(KafkaException(error))
    return future


LOADING = KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, "Broker: Coordinator load in progress")


class JustStartedBroker:
    """An admin client of a broker that answers "still loading" the first ``loading`` times."""

    def __init__(self, groups: list[str], loading: int) -> None:
        self.groups = groups
        self.loading = loading
        self.deleted: list[str] = []

    def list_consumer_groups(self, request_timeout: float) -> Future[Listed]:
        if self.loading:
            self.loading -= 1
            return done(Listed([], [KafkaException(LOADING)]))
        return done(Listed(self.groups, []))

    def delete_consumer_groups(self, groups: list[str], request_timeout: float) -> dict[str, Future[None]]:
        answers = {}
        for group in groups:
            if self.loading:
                self.loading -= 1
                answers[group] = done(error=LOADING)
            elif group in self.groups:
                self.groups.remove(group)
                self.deleted.append(group)
                answers[group] = done()
            else:
                answers[group] = done(error=KafkaError(KafkaError.GROUP_ID_NOT_FOUND))
        return answers


def test_the_list_is_asked_for_again_while_the_broker_loads_its_groups() -> None:
    broker = JustStartedBroker(["o2o.journeys", "o2o.sink", "other.journeys"], loading=2)
    assert _prefixed_groups(broker, "o2o.", time.monotonic() + 5) == {"o2o.journeys", "o2o.sink"}  # type: ignore[arg-type]


def test_a_broker_that_keeps_loading_past_the_deadline_is_an_error() -> None:
    broker = JustStartedBroker(["o2o.journeys"], loading=1000)
    with pytest.raises(KafkaUnavailable, match="listing the consumer groups failed"):
        _prefixed_groups(broker, "o2o.", time.monotonic() + 0.5)  # type: ignore[arg-type]


def test_groups_are_deleted_once_the_coordinator_has_loaded_and_missing_ones_are_fine() -> None:
    broker = JustStartedBroker(["o2o.journeys", "o2o.activation"], loading=3)
    _delete_groups(broker, ["o2o.journeys", "o2o.activation", "o2o.never-ran"], time.monotonic() + 5)  # type: ignore[arg-type]
    assert sorted(broker.deleted) == ["o2o.activation", "o2o.journeys"] and broker.groups == []
