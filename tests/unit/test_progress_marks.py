"""Ingest's progress marks and how identity's reorder buffer uses them (no broker)."""

from __future__ import annotations

from typing import Any

from pipeline.identity.reorder import ReorderBuffer
from pipeline.identity.stage import IdentityHandler
from pipeline.ingest.progress import ProgressMarks
from tests.unit.test_reorder_and_paths import FakeClock


def ev(at: int, stream: str) -> dict[str, Any]:
    return {"event_id": f"{stream}{at}", "source": stream, "occurred_at": at, "person_id": "p"}


def times(events: list[dict[str, Any]]) -> list[int]:
    return [e["occurred_at"] for e in events]


def test_a_caught_up_stream_stops_holding_back_at_once_and_holds_again_with_its_next_event() -> None:
    clock = FakeClock()
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
    clock = FakeClock()
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
    clock.now = 9.5  # 5.5 s since pos last said anything: idle
    assert times(buf.release()) == [100]


def test_an_expected_stream_read_to_its_end_without_events_holds_nothing() -> None:
    buf = ReorderBuffer(idle_seconds=60, clock=FakeClock())
    buf.expect(["web", "pos"])
    buf.add(ev(10, "web"))
    assert buf.release() == []
    buf.progress("pos", caught_up=False)  # still reading: keeps holding
    assert buf.release() == []
    buf.progress("pos", caught_up=True)
    assert times(buf.release()) == [10]


def test_marks_are_sent_when_changed_and_at_most_once_per_interval() -> None:
    clock = FakeClock()
    marks = ProgressMarks(interval_seconds=0.1, clock=clock)
    assert not marks.due()
    marks.passed("web/0")
    marks.reached_end("pos/1")
    assert marks.due()
    assert marks.records(2) == [
        {"record": "progress", "partition": p, "marks": {"pos/1": True, "web/0": False}} for p in (0, 1)
    ]
    marks.passed("web/0")
    assert not marks.due()  # nothing changed
    marks.reached_end("web/0")
    assert not marks.due()  # within the interval
    clock.now = 0.2
    assert marks.due()
    assert marks.records(1)[0]["marks"] == {"pos/1": True, "web/0": True}
    marks.passed("web/0")  # reading again
    assert marks.records(1)[0]["marks"]["web/0"] is False


def test_unchanged_marks_go_out_again_every_second_and_a_revoked_origin_is_forgotten() -> None:
    clock = FakeClock()
    marks = ProgressMarks(interval_seconds=0.1, clock=clock, refresh_seconds=1.0)
    marks.passed("web/0")
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
    clock = FakeClock()
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
