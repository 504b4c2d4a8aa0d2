"""Event-time reordering before sessionising, and crediting conversions over paths."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.attribution.models import Touch
from pipeline.attribution.paths import PathAttributor, conversion_id_for, new_state, o2o_label
from pipeline.identity.reorder import DurableReorder, ReorderBuffer, held_key
from tests.unit.hand_clock import HandClock

DAY = 86_400_000


def ev(at: int, source: str) -> dict[str, Any]:
    return {"event_id": f"{source}{at}", "source": source, "occurred_at": at, "person_id": "p"}


def test_buffer_waits_for_the_slowest_source() -> None:
    buf = ReorderBuffer(idle_seconds=5, clock=HandClock())
    for at in (10, 20, 30):
        buf.add(ev(at, "web"))
    assert buf.release() == [ev(10, "web"), ev(20, "web"), ev(30, "web")]  # only one source so far
    for at in (40, 50):
        buf.add(ev(at, "web"))
    buf.add(ev(35, "pos"))
    assert [e["occurred_at"] for e in buf.release()] == [35]
    buf.add(ev(60, "pos"))
    assert [e["occurred_at"] for e in buf.release()] == [40, 50]


def test_idle_source_stops_holding_back_and_late_events_pass_at_once() -> None:
    clock = HandClock()
    buf = ReorderBuffer(idle_seconds=5, clock=clock)
    buf.add(ev(10, "pos"))
    buf.add(ev(100, "web"))
    assert [e["occurred_at"] for e in buf.release()] == [10]
    clock.now = 10  # pos idle
    buf.add(ev(200, "web"))
    assert [e["occurred_at"] for e in buf.release()] == [100, 200]
    assert buf.add(ev(50, "pos")) == [ev(50, "pos")]
    assert buf.late == 1


def test_an_expected_stream_holds_back_from_the_first_input_until_it_sends_or_idles() -> None:
    clock = HandClock()
    buf = ReorderBuffer(idle_seconds=5, clock=clock)
    buf.expect(["web", "pos"])
    clock.now = 100.0  # a slow start-up: the idle clock has not started yet
    buf.add(ev(10, "web"))
    assert buf.release() == []  # pos has not sent yet
    clock.now = 104.0
    assert buf.release() == []
    buf.add(ev(5, "pos"))
    assert buf.release() == [ev(5, "pos")]  # pos at 5 now holds web's 10
    clock.now = 110.0
    assert buf.release() == [ev(10, "web")]  # pos idle


def test_a_source_fallen_silent_is_a_stall_and_its_quiet_streams_keep_holding_back() -> None:
    clock = HandClock()
    buf = ReorderBuffer(idle_seconds=5, clock=clock, stall_seconds=3)
    buf.add(ev(10, "pos"))
    buf.add(ev(100, "web"))
    buf.progress("pos", False)
    buf.progress("web", False)  # the source is reading both
    assert [e["occurred_at"] for e in buf.release()] == [10]
    clock.now = 10  # neither sent for 10 s, nor did the source say anything since: a broker away
    assert buf.release() == []  # web's 100 waits: pos may still have older events on their way
    buf.add(ev(50, "pos"))  # it had: in order, not late
    buf.progress("pos", False)
    assert [e["occurred_at"] for e in buf.release()] == [50] and buf.late == 0
    clock.now = 20  # the source speaks again and pos stays quiet: now it is idle
    buf.progress("web", False)
    assert [e["occurred_at"] for e in buf.release()] == [100]


def test_caught_up_only_while_the_source_keeps_saying_everything_was_read() -> None:
    clock = HandClock()
    buffer = ReorderBuffer(idle_seconds=5, clock=clock)
    buffer.expect(["web", "app"])
    assert not buffer.caught_up(3)  # nothing said yet: a stalled source looks the same
    buffer.add(ev(10, "web"))
    buffer.progress("web", True)
    buffer.progress("app", True)
    assert not buffer.caught_up(3)  # an event is still held
    buffer.release(everything=True)
    assert buffer.caught_up(3)
    buffer.progress("app", False)  # reading app again
    assert not buffer.caught_up(3)
    buffer.progress("app", True)
    clock.now = 4.0
    assert not buffer.caught_up(3)  # ingest fell silent: its marks are stale


def test_release_everything_sorts_all() -> None:
    buf = ReorderBuffer(clock=HandClock())
    for at, source in ((5, "web"), (3, "app"), (4, "pos")):
        buf.add(ev(at, source))
    assert [e["occurred_at"] for e in buf.release(everything=True)] == [3, 4, 5]
    assert len(buf) == 0


def test_a_bounded_release_lets_the_rest_go_next_time_in_the_same_order() -> None:
    clock = HandClock()
    unbounded, bounded = ReorderBuffer(clock=clock), DurableReorder(lambda e: e["event_id"], at_most=4)
    bounded.buffer.clock = clock
    events = [ev(at, source) for at in range(30, 0, -1) for source in ("web", "pos")] + [ev(40, "web")]
    for event in events:
        unbounded.add(event)
    everything = unbounded.release()  # up to pos's 30: web's 40 waits
    first = bounded.add_all(events)
    assert len(first) == 4 and bounded.buffer.releasable() and len(bounded.table) == 57
    chunks = [first]
    while bounded.buffer.releasable():
        chunks.append(bounded.release())
        assert 0 < len(chunks[-1]) <= 4
    assert [e for chunk in chunks for e in chunk] == everything  # oldest first, as in one release
    assert len(everything) == 60 and bounded.table == {held_key("web40", "web40"): ev(40, "web")}


def touch(sid: str, started_at: int, kind: str = "digital", channel: str = "email") -> dict[str, Any]:
    return {"session_id": sid, "started_at": started_at, "kind": kind, "channel": channel, "person_id": "p"}


def conversion(event_id: str, at: int, session_id: str, source: str = "web", **kw: Any) -> dict[str, Any]:
    base = {
        "person_id": "p", "event_id": event_id, "kind": "order", "source": source, "occurred_at": at,
        "revenue": 90.0, "currency": "EUR", "order_id": "o", "store_id": "", "session_id": session_id,
    }  # fmt: skip
    return {**base, **kw}


def test_path_resets_after_a_conversion_and_falls_back_to_the_own_session() -> None:
    attributor = PathAttributor(["linear"], lookback_days=30, half_life_days=7)
    state = new_state()
    for t in (touch("s1", 0), touch("s2", DAY)):
        state = attributor.add_touch(state, t, [])
    out: list[tuple[str, dict[str, Any]]] = []
    state = attributor.convert(state, conversion("e1", DAY + 1000, "s2"), out)
    credits = [r for table, r in out if table == "attribution"]
    assert [(r["session_id"], r["credit"]) for r in credits] == [("s1", 0.5), ("s2", 0.5)]
    out.clear()
    state = attributor.convert(state, conversion("e2", DAY + 2000, "s2"), out)
    credits = [r for table, r in out if table == "attribution"]
    assert [(r["session_id"], r["credit"], r["revenue_credit"]) for r in credits] == [("s2", 1.0, 90.0)]


def test_lookback_window_drops_old_touches() -> None:
    attributor = PathAttributor(["first_touch"], lookback_days=30, half_life_days=7)
    state = new_state()
    for t in (touch("old", 0), touch("new", 40 * DAY)):
        state = attributor.add_touch(state, t, [])
    out: list[tuple[str, dict[str, Any]]] = []
    attributor.convert(state, conversion("e", 40 * DAY + 1, "new"), out)
    assert [r["session_id"] for t, r in out if t == "attribution"] == ["new"]


def test_no_marketing_consent_credits_only_the_converting_session() -> None:
    attributor = PathAttributor(["linear"], lookback_days=30, half_life_days=7)
    state = new_state()
    for t in (touch("s1", 0), touch("s2", 1000)):
        state = attributor.add_touch(state, t, [])
    out: list[tuple[str, dict[str, Any]]] = []
    attributor.convert(state, conversion("e", 2000, "s2", marketing=False), out)
    assert [r["session_id"] for t, r in out if t == "attribution"] == ["s2"]


def test_o2o_labels() -> None:
    web, store, web2 = Touch("w", "email", 1), Touch("v", "store", 2), Touch("w2", "direct", 3)
    visits = {"v"}
    assert o2o_label("pos", "v", [web, store], visits) == "online_to_offline"
    assert o2o_label("pos", "v", [store], visits) == "offline_only"
    assert o2o_label("web", "w2", [store, web2], visits) == "offline_to_online"
    assert o2o_label("web", "w2", [web, web2], visits) == "online_only"
    assert o2o_label("web", "w2", [web, store, web2], visits) == "mixed"


def test_a_return_adjusts_every_model_like_the_original_credits() -> None:
    attributor = PathAttributor(["linear", "last_touch"], lookback_days=30, half_life_days=7)
    state = new_state()
    for t in (touch("s1", 0, channel="email"), touch("s2", 1000, kind="store_visit", channel="store")):
        state = attributor.add_touch(state, t, [])
    out: list[tuple[str, dict[str, Any]]] = []
    state = attributor.convert(state, conversion("e1", 2000, "s2", source="pos", order_id="t-1"), out)
    out.clear()
    ret = {"person_id": "p", "event_id": "r1", "occurred_at": 5000, "order_ref": "t-1", "refund": 30.0}
    state, matched = attributor.refund(state, ret, out)
    assert matched
    rows = {
        (r["model"], r["session_id"]): r["revenue_adjustment"]
        for t, r in out
        if t == "attribution_adjustments"
    }
    assert rows == {("linear", "s1"): -15.0, ("linear", "s2"): -15.0, ("last_touch", "s1"): -0.0,
                    ("last_touch", "s2"): -30.0}  # fmt: skip
    assert all(r["conversion_id"] == out[0][1]["conversion_id"] for _t, r in out)
    assert not attributor.refund(state, {**ret, "order_ref": "unknown"}, [])[1]


def rows_of(out: list[tuple[str, dict[str, Any]]], table: str) -> list[dict[str, Any]]:
    return [r for t, r in out if t == table]


def test_a_late_touch_re_attributes_a_credited_conversion_with_a_new_version() -> None:
    attributor = PathAttributor(["linear"], lookback_days=30, half_life_days=7)
    out: list[tuple[str, dict[str, Any]]] = []
    state = attributor.add_touch(None, touch("s2", 1000), out)
    state = attributor.convert(state, conversion("e1", 2000, "s2"), out)
    assert [(r["session_id"], r["version"]) for r in rows_of(out, "attribution")] == [("s2", 1)]
    out.clear()
    state = attributor.add_touch(state, touch("s1", 0, channel="paid_search"), out)
    credits = rows_of(out, "attribution")
    assert [(r["session_id"], r["credit"], r["version"]) for r in credits] == [("s1", 0.5, 2), ("s2", 0.5, 2)]
    (row,) = rows_of(out, "conversions")
    assert (row["path_length"], row["version"]) == (2, 2)
    out.clear()
    attributor.add_touch(state, touch("s1", 0, channel="paid_search"), out)
    assert out == []  # the same touch again changes no path


def test_a_touch_outside_every_path_re_attributes_nothing() -> None:
    attributor = PathAttributor(["linear"], lookback_days=30, half_life_days=7)
    out: list[tuple[str, dict[str, Any]]] = []
    state = attributor.add_touch(None, touch("s1", 1000), out)
    state = attributor.convert(state, conversion("e1", 2000, "s1"), out)
    out.clear()
    attributor.add_touch(state, touch("later", 5000), out)
    assert out == []


def test_a_removed_touch_re_attributes_without_it() -> None:
    attributor = PathAttributor(["linear"], lookback_days=30, half_life_days=7)
    out: list[tuple[str, dict[str, Any]]] = []
    state = None
    for t in (touch("s1", 0), touch("s2", 1000)):
        state = attributor.add_touch(state, t, out)
    state = attributor.convert(state, conversion("e1", 2000, "s2"), out)
    out.clear()
    attributor.remove_touch(state, {"person_id": "p", "session_id": "s1"}, out)
    assert [(r["session_id"], r["credit"], r["version"]) for r in rows_of(out, "attribution")] == [
        ("s2", 1.0, 2)
    ]


def test_a_late_conversion_resets_the_path_of_the_next_one() -> None:
    attributor = PathAttributor(["linear"], lookback_days=30, half_life_days=7)
    out: list[tuple[str, dict[str, Any]]] = []
    state = None
    for t in (touch("s1", 0), touch("s2", 3000)):
        state = attributor.add_touch(state, t, out)
    state = attributor.convert(state, conversion("e2", 4000, "s2", order_id="o2"), out)
    out.clear()
    attributor.convert(state, conversion("e1", 1000, "s1", order_id="o1"), out)
    by_conversion = {(r["conversion_id"], r["session_id"]): r["version"] for r in rows_of(out, "attribution")}
    e1, e2 = conversion_id_for("e1"), conversion_id_for("e2")
    assert by_conversion == {(e1, "s1"): 1, (e2, "s2"): 2}  # e2 re-credited over s2 alone


def test_a_return_follows_a_re_attribution() -> None:
    attributor = PathAttributor(["linear"], lookback_days=30, half_life_days=7)
    out: list[tuple[str, dict[str, Any]]] = []
    state = attributor.add_touch(None, touch("s2", 1000), out)
    state = attributor.convert(state, conversion("e1", 2000, "s2", order_id="t"), out)
    ret = {"person_id": "p", "event_id": "r1", "occurred_at": 5000, "order_ref": "t", "refund": 30.0}
    state, _ = attributor.refund(state, ret, out)
    out.clear()
    attributor.add_touch(state, touch("s1", 0), out)
    adjustments = {
        (r["session_id"], r["revenue_adjustment"], r["version"])
        for r in rows_of(out, "attribution_adjustments")
    }
    assert adjustments == {("s1", -15.0, 2), ("s2", -15.0, 2)}


def test_a_merged_person_brings_touches_that_re_attribute_and_its_conversions() -> None:
    attributor = PathAttributor(["linear"], lookback_days=30, half_life_days=7)
    out: list[tuple[str, dict[str, Any]]] = []
    a = attributor.add_touch(None, touch("store", 2000, kind="store_visit", channel="store"), out)
    a = attributor.convert(a, conversion("buy", 3000, "store", source="pos", order_id="t1"), out)
    b = attributor.add_touch(None, {**touch("web", 1000, channel="paid_search"), "person_id": "b"}, [])
    b = attributor.convert(b, {**conversion("order", 1500, "web", order_id="o1"), "person_id": "b"}, [])
    a = attributor.remove_touch(a, {"person_id": "p", "session_id": "gone"}, [])
    b = attributor.add_touch(b, {**touch("gone", 1200), "person_id": "b"}, [])
    out.clear()
    merged = attributor.absorb(a, b, "p", out)
    assert "gone" not in merged["touches"]  # withdrawn by journeys before the hand-over
    credits = {
        (r["conversion_id"], r["session_id"]): (r["credit"], r["person_id"])
        for r in rows_of(out, "attribution")
    }
    buy, order = conversion_id_for("buy"), conversion_id_for("order")
    assert credits[(order, "web")] == (1.0, "p")
    assert (buy, "web") not in credits  # the order at 1500 ends the web path: the purchase keeps its own
    assert {r["o2o_label"] for r in rows_of(out, "conversions") if r["event_id"] == "order"} == {
        "online_only"
    }


def test_a_merge_adds_touches_from_before_a_conversion() -> None:
    attributor = PathAttributor(["linear"], lookback_days=30, half_life_days=7)
    out: list[tuple[str, dict[str, Any]]] = []
    a = attributor.add_touch(None, touch("store", 2000, kind="store_visit", channel="store"), out)
    a = attributor.convert(a, conversion("buy", 3000, "store", source="pos", order_id="t1"), out)
    b = attributor.add_touch(None, {**touch("web", 1000, channel="paid_search"), "person_id": "b"}, [])
    out.clear()
    attributor.absorb(a, b, "p", out)
    credits = [(r["session_id"], r["credit"], r["version"]) for r in rows_of(out, "attribution")]
    assert credits == [("web", 0.5, 2), ("store", 0.5, 2)]
    assert [r["o2o_label"] for r in rows_of(out, "conversions")] == ["online_to_offline"]


def test_data_driven_models_credit_with_the_newest_fit_and_record_its_version() -> None:
    from pipeline.attribution.datadriven import FittedModel

    attributor = PathAttributor(["linear", "markov"], lookback_days=30, half_life_days=7)
    out: list[tuple[str, dict[str, Any]]] = []
    state = None
    for t in (touch("s1", 0, channel="email"), touch("s2", 1000, channel="direct")):
        state = attributor.add_touch(state, t, out)
    state = attributor.convert(state, conversion("e1", 2000, "s2"), out)
    assert {r["model"] for r in rows_of(out, "attribution")} == {"linear"}  # no fit yet
    attributor.fitted = {
        "markov": FittedModel("markov", "m-1", {"email": 0.75, "direct": 0.25}, 1, 10.0, 4.0)
    }
    out.clear()
    attributor.convert(state, conversion("e2", 3000, "s2", order_id="o2"), out)
    markov = [
        (r["session_id"], r["credit"], r["model_version"])
        for r in rows_of(out, "attribution")
        if r["model"] == "markov"
    ]
    assert markov == [("s2", 1.0, "m-1")]
    out.clear()
    state = new_state()
    for t in (touch("s1", 0, channel="email"), touch("s2", 1000, channel="direct")):
        state = attributor.add_touch(state, t, out)
    attributor.convert(state, conversion("e3", 2000, "s2"), out)
    markov = [(r["session_id"], r["credit"]) for r in rows_of(out, "attribution") if r["model"] == "markov"]
    assert markov == [("s1", 0.75), ("s2", 0.25)]


def test_a_replayed_conversion_or_return_emits_nothing_new() -> None:
    attributor = PathAttributor(["linear"], lookback_days=30, half_life_days=7)
    out: list[tuple[str, dict[str, Any]]] = []
    state = attributor.add_touch(None, touch("s1", 0), out)
    state = attributor.convert(state, conversion("e1", 2000, "s1", order_id="t"), out)
    ret = {"person_id": "p", "event_id": "r1", "occurred_at": 5000, "order_ref": "t", "refund": 30.0}
    state, _ = attributor.refund(state, ret, out)
    out.clear()
    state = attributor.convert(state, conversion("e1", 2000, "s1", order_id="t"), out)
    state, matched = attributor.refund(state, ret, out)
    assert matched and out == []


def test_state_stays_bounded() -> None:
    attributor = PathAttributor(["last_touch"], lookback_days=1, half_life_days=7)
    state = None
    for i in range(200):
        state = attributor.add_touch(state, touch(f"s{i}", i * DAY), [])
        state = attributor.convert(state, conversion(f"e{i}", i * DAY + 1, f"s{i}", order_id=f"o{i}"), [])
    assert state is not None
    assert len(state["conversions"]) == 50 and len(state["touches"]) <= 52


def test_without_path_reset_every_touch_in_the_lookback_counts() -> None:
    attributor = PathAttributor(["linear"], lookback_days=30, half_life_days=7, reset_after_conversion=False)
    out: list[tuple[str, dict[str, Any]]] = []
    state = None
    for t in (touch("s1", 0), touch("s2", DAY)):
        state = attributor.add_touch(state, t, out)
    state = attributor.convert(state, conversion("e1", DAY + 1000, "s2"), out)
    out.clear()
    attributor.convert(state, conversion("e2", DAY + 2000, "s2", order_id="o2"), out)
    assert [(r["session_id"], r["credit"]) for r in rows_of(out, "attribution")] == [("s1", 0.5), ("s2", 0.5)]


record_strategy = st.lists(
    st.one_of(
        st.tuples(
            st.just("touch"),
            st.integers(0, 9),
            st.integers(0, 40 * DAY),
            st.sampled_from(["email", "direct", "store"]),
        ),
        st.tuples(st.just("conversion"), st.integers(0, 9), st.integers(0, 40 * DAY), st.just("")),
        st.tuples(st.just("removed"), st.integers(0, 9), st.just(0), st.just("")),
    ),
    min_size=1,
    max_size=25,
)


def live_credits(rows: list[tuple[str, dict[str, Any]]]) -> dict[tuple[str, str, str], float]:
    """What the attribution view shows: the credits of each conversion's newest version."""
    newest: dict[str, int] = {}
    for r in rows_of(rows, "conversions"):
        newest[r["conversion_id"]] = max(newest.get(r["conversion_id"], 0), r["version"])
    return {
        (r["conversion_id"], r["model"], r["session_id"]): r["credit"]
        for r in rows_of(rows, "attribution")
        if r["version"] == newest[r["conversion_id"]]
    }


@settings(max_examples=200, deadline=None)
@given(raw=record_strategy)
def test_property_credits_sum_to_one_and_a_replay_changes_nothing(
    raw: list[tuple[str, int, int, str]],
) -> None:
    attributor = PathAttributor(["linear", "first_touch", "time_decay"], lookback_days=30, half_life_days=7)

    def apply(state: dict[str, Any] | None, out: list[tuple[str, dict[str, Any]]]) -> dict[str, Any] | None:
        for i, (kind, n, at, channel) in enumerate(raw):
            if kind == "touch":
                state = attributor.add_touch(state, touch(f"s{n}", at, channel=channel), out)
            elif kind == "removed":
                state = attributor.remove_touch(state, {"person_id": "p", "session_id": f"s{n}"}, out)
            else:
                state = attributor.convert(state, conversion(f"e{i}", at, f"s{n}", order_id=f"o{i}"), out)
        return state

    first: list[tuple[str, dict[str, Any]]] = []
    state = apply(None, first)
    live = live_credits(first)
    totals: dict[tuple[str, str], list[float]] = {}
    for (conversion_id, model, _sid), credit in live.items():
        totals.setdefault((conversion_id, model), []).append(credit)
    assert all(math.fsum(credits) == 1.0 for credits in totals.values())
    # a replay (a restart re-reading uncommitted input) leaves the same credits in the view
    replayed: list[tuple[str, dict[str, Any]]] = []
    apply(state, replayed)
    assert live_credits(first + replayed) == live
    touched = [n for kind, n, *_ in raw if kind == "touch"]
    if len(touched) == len(set(touched)) and not any(kind == "removed" for kind, *_ in raw):
        assert replayed == []  # each session once, none withdrawn: a replay writes no row at all


def test_a_touch_older_than_pruned_ones_stays_out_so_a_replay_credits_the_same() -> None:
    attributor = PathAttributor(["linear"], lookback_days=30, half_life_days=7)
    first: list[tuple[str, dict[str, Any]]] = []
    state = attributor.add_touch(None, touch("s0", 0), first)
    state = attributor.add_touch(state, touch("s1", 30 * DAY + 1), first)  # s0 now out of every reach
    state = attributor.convert(state, conversion("e0", 0, "s0"), first)  # older than the pruned touch
    assert rows_of(first, "attribution") == []
    replayed: list[tuple[str, dict[str, Any]]] = []
    state = attributor.add_touch(state, touch("s0", 0), replayed)  # a restart re-reads the input
    state = attributor.add_touch(state, touch("s1", 30 * DAY + 1), replayed)
    attributor.convert(state, conversion("e0", 0, "s0"), replayed)
    assert replayed == []
