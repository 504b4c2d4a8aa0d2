"""Event-time reordering before sessionising, and crediting conversions over paths."""

from __future__ import annotations

from typing import Any

from pipeline.attribution.models import Touch
from pipeline.attribution.paths import PathAttributor, new_state, o2o_label
from pipeline.identity.reorder import ReorderBuffer

DAY = 86_400_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def ev(at: int, source: str) -> dict[str, Any]:
    return {"event_id": f"{source}{at}", "source": source, "occurred_at": at, "person_id": "p"}


def test_buffer_waits_for_the_slowest_source() -> None:
    buf = ReorderBuffer(idle_seconds=5, clock=FakeClock())
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
    clock = FakeClock()
    buf = ReorderBuffer(idle_seconds=5, clock=clock)
    buf.add(ev(10, "pos"))
    buf.add(ev(100, "web"))
    assert [e["occurred_at"] for e in buf.release()] == [10]
    clock.now = 10  # pos idle
    buf.add(ev(200, "web"))
    assert [e["occurred_at"] for e in buf.release()] == [100, 200]
    assert buf.add(ev(50, "pos")) == [ev(50, "pos")]
    assert buf.late == 1


def test_release_everything_sorts_all() -> None:
    buf = ReorderBuffer(clock=FakeClock())
    for at, source in ((5, "web"), (3, "app"), (4, "pos")):
        buf.add(ev(at, source))
    assert [e["occurred_at"] for e in buf.release(everything=True)] == [3, 4, 5]
    assert len(buf) == 0


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
        state = attributor.add_touch(state, t)
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
        state = attributor.add_touch(state, t)
    out: list[tuple[str, dict[str, Any]]] = []
    attributor.convert(state, conversion("e", 40 * DAY + 1, "new"), out)
    assert [r["session_id"] for t, r in out if t == "attribution"] == ["new"]


def test_no_marketing_consent_credits_only_the_converting_session() -> None:
    attributor = PathAttributor(["linear"], lookback_days=30, half_life_days=7)
    state = new_state()
    for t in (touch("s1", 0), touch("s2", 1000)):
        state = attributor.add_touch(state, t)
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
        state = attributor.add_touch(state, t)
    out: list[tuple[str, dict[str, Any]]] = []
    state = attributor.convert(state, conversion("e1", 2000, "s2", source="pos", order_id="t-1"), out)
    out.clear()
    ret = {"person_id": "p", "event_id": "r1", "occurred_at": 5000, "order_ref": "t-1", "refund": 30.0}
    assert attributor.refund(state, ret, out)
    rows = {
        (r["model"], r["session_id"]): r["revenue_adjustment"]
        for t, r in out
        if t == "attribution_adjustments"
    }
    assert rows == {("linear", "s1"): -15.0, ("linear", "s2"): -15.0, ("last_touch", "s1"): -0.0,
                    ("last_touch", "s2"): -30.0}  # fmt: skip
    assert all(r["conversion_id"] == out[0][1]["conversion_id"] for _t, r in out)
    assert not attributor.refund(state, {**ret, "order_ref": "unknown"}, [])
