"""A reset's consumer groups: listed once every group coordinator has loaded, deleted once it has."""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipeline.errors import KafkaUnavailable
from pipeline.kafka.reset import (
    delete_groups,
    java_string_hash,
    offsets_partition,
    prefixed_groups,
    probe_groups,
    wait_group_coordinators,
)


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
    assert prefixed_groups(broker, "o2o.", time.monotonic() + 5) == {"o2o.journeys", "o2o.sink"}  # type: ignore[arg-type]


def test_a_broker_that_keeps_loading_past_the_deadline_is_an_error() -> None:
    broker = JustStartedBroker(["o2o.journeys"], loading=1000)
    with pytest.raises(KafkaUnavailable, match="listing the consumer groups failed"):
        prefixed_groups(broker, "o2o.", time.monotonic() + 0.5)  # type: ignore[arg-type]


def test_groups_are_deleted_once_the_coordinator_has_loaded_and_missing_ones_are_fine() -> None:
    broker = JustStartedBroker(["o2o.journeys", "o2o.activation"], loading=3)
    delete_groups(broker, ["o2o.journeys", "o2o.activation", "o2o.never-ran"], time.monotonic() + 5)  # type: ignore[arg-type]
    assert sorted(broker.deleted) == ["o2o.activation", "o2o.journeys"] and broker.groups == []


def test_java_string_hash_is_javas_and_places_groups_as_kafka_does() -> None:
    assert java_string_hash("") == 0
    assert java_string_hash("hello") == 99162322
    assert java_string_hash("Aa") == java_string_hash("BB") == 2112
    assert java_string_hash("\U0001f600") == 31 * 0xD83D + 0xDE00  # UTF-16 code units, as Java counts
    assert java_string_hash("polygenelubricants") == -(1 << 31)
    assert offsets_partition("polygenelubricants", 50) == 0  # Kafka's Utils.abs maps MIN_VALUE to 0
    assert offsets_partition("hello", 50) == 99162322 % 50


def test_the_probes_cover_every_offsets_partition_once() -> None:
    probes = probe_groups("o2o.", 50)
    assert len(probes) == 50 and all(p.startswith("o2o.coordinator-probe-") for p in probes)
    assert sorted(offsets_partition(p, 50) for p in probes) == list(range(50))


NOT_COORDINATOR = KafkaError(KafkaError.NOT_COORDINATOR, "Broker: Not coordinator")


class StartingCoordinators:
    """An admin client of a broker whose offsets partitions become active one describe round at a time."""

    def __init__(
        self, partitions: int, rounds_loading: int, error: KafkaError = NOT_COORDINATOR, stuck: bool = False
    ) -> None:
        self.partitions = partitions
        self.stuck = stuck
        self.rounds_loading = rounds_loading
        self.error = error
        self.described: list[list[str]] = []

    def list_topics(self, timeout: float) -> Any:
        offsets = type("Topic", (), {"partitions": dict.fromkeys(range(self.partitions))})()
        topics = {"__consumer_offsets": offsets}
        return type("Metadata", (), {"topics": topics if self.partitions else {}})()

    def describe_consumer_groups(self, groups: list[str], request_timeout: float) -> dict[str, Future[Any]]:
        self.described.append(list(groups))
        loading = len(self.described) <= self.rounds_loading
        # the first group answers at once (unless stuck): only the others are asked again
        answers = {}
        for i, group in enumerate(groups):
            answers[group] = done(error=self.error) if loading and (i or self.stuck) else done("Dead")
        return answers


def test_the_wait_asks_again_for_the_partitions_still_loading_until_all_answer() -> None:
    broker = StartingCoordinators(partitions=6, rounds_loading=2)
    wait_group_coordinators(broker, "o2o.", time.monotonic() + 5)  # type: ignore[arg-type]
    assert [len(r) for r in broker.described] == [6, 5, 4]


def test_no_offsets_topic_means_no_group_to_wait_for() -> None:
    broker = StartingCoordinators(partitions=0, rounds_loading=100)
    wait_group_coordinators(broker, "o2o.", time.monotonic() + 5)  # type: ignore[arg-type]
    assert broker.described == []


def test_coordinators_loading_past_the_deadline_are_an_error() -> None:
    broker = StartingCoordinators(partitions=3, rounds_loading=1000, error=LOADING, stuck=True)
    with pytest.raises(KafkaUnavailable, match="the group coordinators are still loading"):
        wait_group_coordinators(broker, "o2o.", time.monotonic() + 0.5)  # type: ignore[arg-type]


def test_a_probe_the_client_may_not_describe_ends_the_wait_without_an_error() -> None:
    denied = KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED, "Broker: Group authorization failed")
    broker = StartingCoordinators(partitions=3, rounds_loading=1000, error=denied)
    wait_group_coordinators(broker, "o2o.", time.monotonic() + 5)  # type: ignore[arg-type]
    assert len(broker.described) == 1
