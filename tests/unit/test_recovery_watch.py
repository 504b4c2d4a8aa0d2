"""A faust table recovery that restores nothing for long is noticed and reported with the consumer's state."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
from faust.types import TP

from pipeline.runtime.recovery_watch import RecoveryWatch, report_if_stalled
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
    assert "reading those changelog partitions again" in line
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
