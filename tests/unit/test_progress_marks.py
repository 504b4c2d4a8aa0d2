"""Ingest's progress marks and how identity's reorder buffer uses them (no broker)."""

from __future__ import annotations

from typing import Any

from pipeline.identity.reorder import ReorderBuffer
from pipeline.identity.stage import RELEASE_PER_STEP, IdentityHandler
from pipeline.ingest.progress import ProgressMarks
from tests.unit.hand_clock import HandClock


def ev(at: int, stream: str) -> dict[str, Any]:
    return {"event_id": f"{stream}{at}", "source": stream, "occurred_at": at, "person_id": "p"}


def times(events: list[dict[str, Any]]) -> list[int]:
    return [e["occurred_at"] for e in events]


def test_a_caught_up_stream_stops_holding_back_at_once_and_holds_again_with_its_next_event() -> None:
    clock = HandClock()
    buf = ReorderBuffer(idle_seconds=60, clock=clock)
    buf.add(ev(10, "pos"))
    buf.add(ev(100, "web"))
    assert times(buf.release()) == [10]  # pos, at 10, holds web's 100
    buf.progress("pos", caught_up=True)  # ingest read pos to its end: long before 60 s idle
    assert times(buf.release()) == [100]
    buf.add(ev(150, "pos"))  # pos sends again: it holds back again
    buf.add(ev(200, "web"))
    assert times(buf.release()) == [150]
    assert buf.late == 0


def test_a_stream_reading_again_holds_back_and_its_idle_clock_restarts() -> None:
    clock = HandClock()
    buf = ReorderBuffer(idle_seconds=5, clock=clock)
    buf.add(ev(10, "pos"))
    buf.progress("pos", caught_up=True)
    buf.progress("pos", caught_up=False)  # more pos input on its way, none here yet
    buf.add(ev(100, "web"))
    assert times(buf.release()) == [10]  # pos, at 10, holds web's 100 again
    clock.now = 4.0
    buf.progress("pos", caught_up=False)  # still reading: not idle at 5 s after its last event
    clock.now = 6.0
    assert buf.release() == []
    clock.now = 9.5  # 5.5 s since the source last said anything: a stall (a broker away), not idle
    assert buf.release() == []
    buf.progress("web", caught_up=False)  # the source speaks again, pos stays quiet: now pos is idle
    assert times(buf.release()) == [100]


def test_an_expected_stream_read_to_its_end_without_events_holds_nothing() -> None:
    buf = ReorderBuffer(idle_seconds=60, clock=HandClock())
    buf.expect(["web", "pos"])
    buf.add(ev(10, "web"))
    assert buf.release() == []
    buf.progress("pos", caught_up=False)  # still reading: keeps holding
    assert buf.release() == []
    buf.progress("pos", caught_up=True)
    assert times(buf.release()) == [10]


def test_marks_are_sent_when_changed_and_at_most_once_per_interval() -> None:
    clock = HandClock()
    marks = ProgressMarks(interval_seconds=0.1, clock=clock)
    assert not marks.due()
    marks.passed("web/0", 10)
    marks.reached_end("pos/1")
    assert marks.due()
    assert marks.records(2) == [
        {
            "record": "progress",
            "partition": p,
            "marks": {"pos/1": True, "web/0": False},
            "times": {"web/0": 10},
        }
        for p in (0, 1)
    ]
    marks.passed("web/0", 10)
    assert not marks.due()  # nothing changed
    marks.reached_end("web/0")
    assert not marks.due()  # within the interval
    clock.now = 0.2
    assert marks.due()
    assert marks.records(1)[0]["marks"] == {"pos/1": True, "web/0": True}
    marks.passed("web/0", 10)  # reading again
    assert marks.records(1)[0]["marks"]["web/0"] is False


def test_unchanged_marks_go_out_again_every_second_and_a_revoked_origin_is_forgotten() -> None:
    clock = HandClock()
    marks = ProgressMarks(interval_seconds=0.1, clock=clock, refresh_seconds=1.0)
    marks.passed("web/0", 10)
    marks.reached_end("pos/1")
    marks.records(1)
    clock.now = 0.5
    assert not marks.due()  # nothing changed, no refresh yet
    clock.now = 1.0
    assert marks.due()
    assert marks.records(1)[0]["marks"] == {"pos/1": True, "web/0": False}
    marks.forget("web/0")  # a rebalance gave web/0 to another ingest process
    clock.now = 2.0
    assert marks.due() and marks.records(1)[0]["marks"] == {"pos/1": True}


def test_a_stream_its_reader_keeps_marking_as_reading_never_goes_idle() -> None:
    clock = HandClock()
    buffer = ReorderBuffer(idle_seconds=5.0, clock=clock)
    buffer.add(ev(10, "web"))
    buffer.add(ev(20, "pos"))
    for second in range(1, 30):
        clock.now = float(second)
        buffer.progress("web", caught_up=False)  # ingest alive, still reading web
        buffer.progress("pos", caught_up=True)
        assert times(buffer.release()) == ([10] if second == 1 else [])
    buffer.add(ev(15, "web"))  # web's next event: not late, pos's was held for it
    assert buffer.late == 0 and times(buffer.release()) == [15]


def test_identity_applies_a_progress_record_to_the_stream_of_its_partition() -> None:
    handler = IdentityHandler(origins=["web/0", "pos/0"], valid_partitions=1)
    tables: dict[str, dict[str, Any]] = {name: {} for name in handler.table_names}
    handler.bind(tables, partitions=1)  # type: ignore[arg-type]
    event = {
        "event_id": "e1", "source": "web", "type": "page_view", "occurred_at": 1_000, "origin": "web/0",
        "ids": {"anonymous_id": "a1"}, "consent": {},
    }  # fmt: skip
    assert handler.process([event]) == []  # pos/0 is expected and has said nothing
    assert tables["identity_pending"]  # the held event is kept in state
    out = handler.process([{"record": "progress", "partition": 0, "marks": {"pos/0": True}}])
    assert [(topic, record["event_id"]) for topic, _key, record in out if "event_id" in record] == [
        ("events.identified", "e1")
    ]
    assert not tables["identity_pending"]


def test_a_stream_that_never_sent_holds_back_only_up_to_its_sources_mark() -> None:
    """app/1 reaches only events.valid partition 1: its stream on partition 0 must not hold everything."""
    buffer = ReorderBuffer(idle_seconds=60, clock=HandClock())
    buffer.expect(["app/1>0", "app/1>1", "web/0>0"])
    for at, stream in ((10, "web/0>0"), (20, "app/1>1"), (30, "web/0>0")):
        buffer.add(ev(at, stream))
    buffer.progress("app/1>0", caught_up=False)  # a mark without times: it holds everything
    assert buffer.release() == []
    buffer.progress("app/1>0", caught_up=False, source_at=20)  # app/1 passed events up to 20, none this way
    assert times(buffer.release()) == [10, 20]
    buffer.progress("app/1>0", caught_up=False, source_at=15)  # an older mark takes nothing back
    assert buffer.watermark() == 20
    buffer.add(ev(25, "app/1>1"))
    assert buffer.release() == []  # app/1>0 may still send something after 20
    buffer.progress("app/1>0", caught_up=False, source_at=26)
    assert times(buffer.release()) == [25]
    buffer.add(ev(40, "app/1>0"))  # its first event: from now on it holds at its own time
    buffer.progress("app/1>0", caught_up=False, source_at=90)
    buffer.add(ev(50, "app/1>1"))
    buffer.add(ev(60, "web/0>0"))
    assert times(buffer.release()) == [30, 40]
    assert buffer.late == 0


def test_marks_carry_the_newest_event_time_of_each_origin_and_a_newer_time_is_a_change() -> None:
    clock = HandClock()
    marks = ProgressMarks(interval_seconds=0.1, clock=clock)
    marks.passed("app/1", 50)
    marks.passed("app/1", 40)  # a late upload does not take the time back
    assert marks.records(1)[0]["times"] == {"app/1": 50}
    clock.now = 0.5
    marks.passed("app/1", 45)
    assert not marks.due()  # nothing new to say
    marks.passed("app/1", 60)
    assert marks.due() and marks.records(1)[0]["times"] == {"app/1": 60}
    marks.forget("app/1")
    assert marks.records(1)[0]["times"] == {}


def page_view(at: int, origin: str, anonymous_id: str) -> dict[str, Any]:
    return {
        "event_id": f"e{at}", "source": "web", "type": "page_view", "occurred_at": at, "origin": origin,
        "ids": {"anonymous_id": anonymous_id}, "consent": {},
    }  # fmt: skip


def test_identity_applies_a_marks_time_to_a_stream_that_never_sent() -> None:
    handler = IdentityHandler(origins=["web/0", "app/1"], valid_partitions=2)
    tables: dict[str, dict[str, Any]] = {name: {} for name in handler.table_names}
    handler.bind(tables, partitions=2)  # type: ignore[arg-type]
    events = [
        page_view(1_000, "web/0", "a1"),
        page_view(2_000, "web/0", "a4"),
        page_view(1_500, "app/1", "a5"),
    ]
    assert [handler._stream(e) for e in events] == ["web/0>0", "web/0>1", "app/1>1"]
    assert handler.process(events) == []  # app/1>0 has said nothing yet
    mark = {"record": "progress", "partition": 0, "marks": {"app/1": False}}
    assert handler.process([mark]) == []  # a mark without times holds on
    out = handler.process([{**mark, "times": {"app/1": 1_500}}])  # web/0>0, at 1,000, holds e1500
    assert [record["event_id"] for _t, _k, record in out if "event_id" in record] == ["e1000"]


def test_identity_resolves_a_backlog_freed_at_once_in_bounded_steps_and_says_what_is_left() -> None:
    handler = IdentityHandler(origins=["web/0", "pos/0"], valid_partitions=1)
    tables: dict[str, dict[str, Any]] = {name: {} for name in handler.table_names}
    handler.bind(tables, partitions=1)  # type: ignore[arg-type]
    step = RELEASE_PER_STEP
    held = [page_view(1_000 + i, "web/0", f"a{i % 50}") for i in range(step * 2 + 10)]
    assert handler.process(held) == [] and not handler.backlog()  # pos/0 holds everything
    resolved: list[str] = []
    out = handler.process([{"record": "progress", "partition": 0, "marks": {"pos/0": True}}])
    steps = [out]
    while handler.backlog():  # what the runtime does: ticks until nothing freed is left
        steps.append(handler.tick())
    for emitted in steps:
        ids = [record["event_id"] for topic, _k, record in emitted if topic == "events.identified"]
        assert 0 < len(ids) <= step
        resolved += ids
    assert len(steps) == 3 and resolved == [e["event_id"] for e in held]  # all of them, oldest first
    assert not tables["identity_pending"]
