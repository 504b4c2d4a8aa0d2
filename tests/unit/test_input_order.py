"""InputOrder: a stage handles each partition's records in offset order, never past a hole."""

from __future__ import annotations

import logging

import pytest

from pipeline.runtime.input_order import InputOrder, Verdict
from tests.unit.hand_clock import HandClock

HANDLE, REPEAT, HOLD = Verdict.HANDLE, Verdict.REPEAT, Verdict.HOLD


def test_records_in_order_from_the_committed_offset_are_handled() -> None:
    order: InputOrder[str] = InputOrder("journeys")
    assert [order.sort("p0", offset, start=7) for offset in (7, 8, 9)] == [HANDLE] * 3
    assert order.seeks_due() == {}
    assert order.holes_found == 0


def test_a_hole_holds_everything_after_it_until_the_hole_is_read() -> None:
    clock = HandClock(100.0)
    order: InputOrder[str] = InputOrder("journeys", reseek_seconds=1.0, clock=clock)
    assert order.sort("p0", 7, start=7) is HANDLE
    # offsets 8 and 9 were never handed over
    assert [order.sort("p0", offset, start=7) for offset in (10, 11)] == [HOLD, HOLD]
    assert order.seeks_due() == {"p0": 8}
    assert order.seeks_due() == {}, "a second seek waits for the first to bring the records"
    # records fetched before the seek still come through: held, no new seek yet
    assert order.sort("p0", 12, start=7) is HOLD
    clock.now += 1.5
    assert order.seeks_due() == {"p0": 8}, "the hole is read again once more after a while"
    assert [order.sort("p0", offset, start=7) for offset in (8, 9, 10, 11, 12)] == [HANDLE] * 5
    assert order.open_holes == 0
    assert order.holes_found == 1


def test_records_already_handled_or_committed_pass_as_repeats() -> None:
    order: InputOrder[str] = InputOrder("attribution")
    assert [order.sort("p1", offset, start=3) for offset in (3, 4)] == [HANDLE, HANDLE]
    assert [order.sort("p1", offset, start=3) for offset in (3, 4, 5)] == [REPEAT, REPEAT, HANDLE]
    fresh: InputOrder[str] = InputOrder("attribution")
    assert fresh.sort("p1", 1, start=3) is REPEAT, "below the committed offset on arrival"
    assert fresh.sort("p1", 3, start=3) is HANDLE


def test_the_first_record_must_be_where_reading_starts() -> None:
    order: InputOrder[str] = InputOrder("identity")
    assert order.sort("p0", 12, start=10) is HOLD
    assert order.seeks_due() == {"p0": 10}
    other: InputOrder[str] = InputOrder("identity")
    assert not other.knows("p0")
    assert order.knows("p0")


def test_partitions_are_independent() -> None:
    order: InputOrder[str] = InputOrder("journeys")
    assert order.sort("p0", 0, start=0) is HANDLE
    assert order.sort("p1", 5, start=4) is HOLD
    assert order.sort("p0", 1, start=0) is HANDLE
    assert order.seeks_due() == {"p1": 4}


def test_a_partition_that_moved_away_starts_again_from_its_committed_offset() -> None:
    order: InputOrder[str] = InputOrder("journeys")
    for offset in range(5):
        order.sort("p0", offset, start=0)
    order.sort("p0", 9, start=0)
    order.forget(["p0"])
    assert order.open_holes == 0
    assert order.sort("p0", 3, start=3) is HANDLE, "re-read from the committed offset after a move"


def test_records_gone_from_the_log_are_given_up_with_an_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    order: InputOrder[str] = InputOrder("sink")
    order.sort("p0", 2, start=2)
    assert order.sort("p0", 50, start=2) is HOLD
    assert order.seeks_due() == {"p0": 3}
    order.restart_at("p0", 40)
    assert "offsets 3 to 39 of p0 were deleted from the log" in caplog.text
    assert order.sort("p0", 40, start=2) is HANDLE
    assert order.open_holes == 0


def test_records_fetched_and_never_handed_over_at_the_tail_are_read_again() -> None:
    clock = HandClock(100.0)
    order: InputOrder[str] = InputOrder("journeys", reseek_seconds=1.0, clock=clock)
    for offset in (4, 5):
        order.sort("p0", offset, start=4)
    order.watch({"p0": 9}, {})  # records 6 to 8 fetched, on their way
    clock.now += 0.6
    order.sort("p0", 6, start=4)
    order.watch({"p0": 9}, {})  # progress: the wait starts again
    clock.now += 0.6
    order.watch({"p0": 9}, {})
    assert order.open_holes == 0, "records on their way are not a hole"
    clock.now += 0.5
    order.watch({"p0": 9}, {})
    assert order.seeks_due() == {"p0": 7}, "7 and 8 fetched, nothing handed over for a second"
    assert [order.sort("p0", offset, start=4) for offset in (7, 8)] == [HANDLE, HANDLE]
    assert order.open_holes == 0


def test_a_quiet_partition_is_not_a_hole() -> None:
    clock = HandClock(100.0)
    order: InputOrder[str] = InputOrder("journeys", reseek_seconds=1.0, clock=clock)
    order.sort("p0", 0, start=0)
    for _ in range(5):
        clock.now += 1.0
        order.watch({"p0": 1, "p1": 7}, {"p1": 7})  # p0 read to its end; p1 brought nothing yet
    assert order.open_holes == 0
    assert order.seeks_due() == {}


def test_a_partition_whose_fetched_records_never_came_is_read_again() -> None:
    clock = HandClock(100.0)
    order: InputOrder[str] = InputOrder("attribution", reseek_seconds=1.0, clock=clock)
    order.watch({"p1": 12}, {"p1": 10})  # 10 and 11 fetched, nothing handed over yet
    clock.now += 0.5
    order.watch({"p1": 12}, {"p1": 10})
    assert order.seeks_due() == {}
    clock.now += 0.6
    order.watch({"p1": 12}, {"p1": 10})
    assert order.seeks_due() == {"p1": 10}
    assert [order.sort("p1", offset, start=10) for offset in (10, 11)] == [HANDLE, HANDLE]
