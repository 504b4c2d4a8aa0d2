"""A faust table recovery that restores nothing for long is noticed and reported with the consumer's state."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import pytest
from aiokafka import TopicPartition
from faust.types import TP

from pipeline.runtime.recovery_watch import RecoveryGuard, RecoveryWatch, report_if_stalled
from tests.unit.hand_clock import HandClock

CHANGELOG = "o2o.journeys-journeys_state-changelog"


def test_a_stall_is_noticed_after_each_stall_time_without_progress_and_progress_starts_the_count_again() -> (
    None
):
    clock = HandClock()
    watch = RecoveryWatch(30, clock)
    assert not watch.stalled(True, 500)  # the recovery begins
    clock.now = 20
    assert not watch.stalled(True, 200)  # progress
    clock.now = 49
    assert not watch.stalled(True, 200)
    clock.now = 50
    assert watch.stalled(True, 200)  # 30 s without fewer records left
    clock.now = 79
    assert not watch.stalled(True, 200)  # the next notice 30 s after this one
    clock.now = 80
    assert watch.stalled(True, 200)
    clock.now = 90
    assert not watch.stalled(True, 150)  # progress again
    clock.now = 119
    assert not watch.stalled(True, 150)
    clock.now = 120
    assert watch.stalled(True, 150) and watch.stalls == 3


def test_a_new_recovery_starts_the_count_again_even_with_more_records_left() -> None:
    clock = HandClock()
    watch = RecoveryWatch(10, clock)
    assert not watch.stalled(True, 500, "first")
    clock.now = 5
    assert not watch.stalled(True, 40, "first")  # progress
    clock.now = 9
    assert not watch.stalled(True, 300, "second")  # a rebalance began another recovery (still in recovery)
    clock.now = 18
    assert not watch.stalled(True, 120, "second")  # its progress counts, not the first one's least
    clock.now = 28
    assert watch.stalled(True, 120, "second") and watch.stalls == 1


def test_no_stall_when_nothing_is_left_or_outside_a_recovery() -> None:
    clock = HandClock()
    watch = RecoveryWatch(30, clock)
    assert not watch.stalled(True, 0)
    clock.now = 100
    assert not watch.stalled(True, 0)  # caught up: faust ends the recovery next
    assert not watch.stalled(False, 0)
    clock.now = 200
    assert not watch.stalled(True, 10)  # a new recovery starts its own count
    assert watch.stalls == 0


class Recovery:
    """The attributes of faust's Recovery service the report reads."""

    def __init__(self, highwaters: dict[TP, int], offsets: dict[TP, int]) -> None:
        self.in_recovery = True
        self.active_highwaters = Counter(highwaters)
        self.active_offsets = Counter(offsets)

    def active_remaining(self) -> Counter[TP]:
        return Counter({tp: hw - self.active_offsets[tp] for tp, hw in self.active_highwaters.items()})

    def active_remaining_total(self) -> int:
        return sum(self.active_remaining().values())


class KafkaClient:
    def paused(self) -> set[TP]:
        return {TP(CHANGELOG, 3)}


class Thread:
    def _ensure_consumer(self) -> KafkaClient:
        return KafkaClient()


class Consumer:
    """The attributes of faust's consumer the report reads."""

    def __init__(self) -> None:
        self._paused_partitions = {TP(CHANGELOG, 3), TP("o2o.events.identified", 3)}
        self._thread = Thread()
        self.flow_active = True
        self.resumed: list[set[Any]] = []

    def resume_partitions(self, tps: set[Any]) -> None:
        self.resumed.append(set(tps))

    def assignment(self) -> set[TP]:
        return {TP(CHANGELOG, 3), TP("o2o.events.identified", 3)}


def test_the_report_names_the_partitions_left_their_offsets_and_what_is_paused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = HandClock()
    watch = RecoveryWatch(30, clock)
    recovery = Recovery(
        {TP(CHANGELOG, 3): 120, TP(CHANGELOG, 5): 40}, {TP(CHANGELOG, 3): 99, TP(CHANGELOG, 5): 40}
    )
    assert not report_if_stalled(recovery, Consumer(), watch, "journeys")
    clock.now = 31
    with caplog.at_level(logging.ERROR):
        assert report_if_stalled(recovery, Consumer(), watch, "journeys")
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "journeys: table recovery restored nothing for 30 s with 21 changelog records left" in line
    assert f"by partition: {{'{CHANGELOG}/3': 21}}" in line
    assert (
        f"paused by faust: ['o2o.events.identified/3', '{CHANGELOG}/3'], by the client: ['{CHANGELOG}/3']"
        in line
    )
    clock.now = 61
    with caplog.at_level(logging.WARNING):
        assert report_if_stalled(recovery, Consumer(), watch, "journeys")
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.WARNING]  # an error the first time


def test_a_consumer_without_the_expected_internals_still_gets_a_report(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = HandClock()
    watch = RecoveryWatch(30, clock)
    recovery = Recovery({TP(CHANGELOG, 3): 10}, {TP(CHANGELOG, 3): 5})
    consumer = Consumer()
    del consumer._thread
    report_if_stalled(recovery, consumer, watch, "identity")
    clock.now = 30
    with caplog.at_level(logging.ERROR):
        assert report_if_stalled(recovery, consumer, watch, "identity")
    assert "paused by faust: ['unknown (AttributeError(" in caplog.text


class App:
    """What the guard reads of a faust app."""

    def __init__(self, recovery: Recovery, consumer: Any) -> None:
        self.tables = type("Tables", (), {"recovery": recovery})()
        self.consumer = consumer
        self.on_partitions_assigned = type("Signal", (), {"connect": lambda self, receiver: None})()


def test_the_guard_seeks_a_stalled_restore_back_and_resumes_it_with_fausts_partition_type() -> None:
    # faust keys its highwaters with aiokafka's TopicPartition; its active set must hold its own TP
    stalled, done = TopicPartition(CHANGELOG, 3), TopicPartition(CHANGELOG, 5)
    recovery = SeekingRecovery({stalled: 120, done: 40}, {stalled: 99, done: 40})
    consumer = Consumer()
    consumer.flow_active = True
    guard = RecoveryGuard(App(recovery, consumer), "journeys", stall_seconds=0)  # type: ignore[arg-type]
    assert not asyncio.run(guard.check())  # the first look starts the count
    assert asyncio.run(guard.check())
    assert recovery.sought == [({TP(CHANGELOG, 3)}, {stalled: 99, done: 40})]
    assert consumer.resumed == [{TP(CHANGELOG, 3)}]
    assert all(type(tp) is TP for tp in consumer.resumed[0])
    consumer.flow_active = False  # a rebalance under way seeks every changelog itself
    assert not asyncio.run(guard.check())
    assert len(recovery.sought) == 1


class SeekingRecovery(Recovery):
    def __init__(self, highwaters: dict[Any, int], offsets: dict[Any, int]) -> None:
        super().__init__(highwaters, offsets)
        self.sought: list[tuple[set[Any], dict[Any, int]]] = []

    async def _seek_offsets(self, consumer: Any, tps: set[Any], offsets: Any, title: str) -> None:
        self.sought.append((set(tps), dict(offsets)))
