"""Late and out-of-order events: sessions re-cut within the lateness, watermarks, idle timers."""

from __future__ import annotations

import itertools
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import Settings
from pipeline.journeys.sessions import Output, SessionRules
from pipeline.journeys.stage import JourneysHandler, watermark_key
from pipeline.journeys.timeline import JourneyTimeline
from pipeline.kafka import topics
from pipeline.model.event_clock import progress_records
from tests.unit.hand_clock import HandClock

MIN = 60_000
HOUR = 60 * MIN
RULES = SessionRules(
    timeout_ms=30 * MIN, max_length_ms=24 * HOUR, visit_timeout_ms=30 * MIN, lateness_ms=HOUR
)
COUNTER = itertools.count()


def ev(
    at: int, source: str = "web", etype: str = "page_view", person: str = "p1", **extra: Any
) -> dict[str, Any]:
    return {
        "event_id": f"e{next(COUNTER):06d}",
        "person_id": person,
        "source": source,
        "type": etype,
        "occurred_at": at,
        **extra,
    }


def store(etype: str, at: int, person: str = "p1", **props: Any) -> dict[str, Any]:
    source = "geofence" if etype in ("enter", "exit", "dwell") else "pos"
    return ev(at, source, etype, person, context={"store_id": "s1"}, properties={"store_id": "s1", **props})


def latest(out: list[Output], kind: str, key: str) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for k, r in out:
        if k == kind and r["version"] >= rows.get(r[key], {"version": -1})["version"]:
            rows[r[key]] = r
    return rows


def live_sessions(out: list[Output]) -> dict[str, dict[str, Any]]:
    return {sid: r for sid, r in latest(out, "session", "session_id").items() if not r["retracted"]}


def feed(
    batches: list[list[dict[str, Any]]], rules: SessionRules = RULES
) -> tuple[JourneyTimeline, list[Output]]:
    """Batches of one person's events, the watermark at the newest event time of earlier batches."""
    t, out, state, watermark = JourneyTimeline(rules), [], None, 0
    for batch in batches:
        state = t.place(state, batch, watermark, out)
        watermark = max([watermark, *(e["occurred_at"] for e in batch)])
        state = t.advance(state, watermark, out)
    if state is not None:
        t.close_all(state, out)
    return t, out


def test_a_late_event_bridging_a_gap_joins_two_sessions() -> None:
    a, b = ev(0), ev(40 * MIN)
    _, out = feed([[a], [b], [ev(20 * MIN)]])
    (session,) = live_sessions(out).values()
    assert (session["started_at"], session["ended_at"], session["event_count"]) == (0, 40 * MIN, 3)
    events = latest(out, "event", "event_id")
    assert events[b["event_id"]]["session_id"] == session["session_id"]
    assert events[b["event_id"]]["version"] == 2  # re-emitted with the joined session
    removed = [r["session_id"] for k, r in out if k == "touch_removed"]
    assert len(removed) == 1 and removed[0] != session["session_id"]
    retracted = latest(out, "session", "session_id")[removed[0]]
    assert retracted["retracted"] == 1 and retracted["version"] == 2


def test_a_late_first_event_renames_the_session_and_updates_its_touch() -> None:
    plain = ev(10 * MIN)
    ad = ev(2 * MIN, context={"campaign": {"medium": "cpc", "name": "spring"}})
    _, out = feed([[plain], [ad]])
    (session,) = live_sessions(out).values()
    assert (session["channel"], session["campaign_name"], session["started_at"]) == (
        "paid_search",
        "spring",
        2 * MIN,
    )
    touches = [r for k, r in out if k == "touch"]
    assert [t["channel"] for t in touches] == ["direct", "paid_search"]
    assert [r["session_id"] for k, r in out if k == "touch_removed"] == [touches[0]["session_id"]]


def test_a_conversion_whose_session_a_late_event_renames_is_sent_again_with_it() -> None:
    order = ev(10 * MIN, etype="order_completed", properties={"order_id": "o1", "revenue": 30})
    _, out = feed([[order], [ev(2 * MIN)]])
    (session,) = live_sessions(out).values()
    sent = [r["session_id"] for k, r in out if k == "conversion"]
    assert len(sent) == 2 and sent[-1] == session["session_id"] != sent[0]


def test_a_late_exit_splits_a_store_visit() -> None:
    enter, buy = store("enter", 0), store("purchase", 10 * MIN, revenue=20, transaction_id="t1")
    exit_ = store("exit", 5 * MIN)
    _, out = feed([[enter], [buy], [exit_]])
    visits = sorted(live_sessions(out).values(), key=lambda s: s["started_at"])
    assert [(v["started_at"], v["ended_at"], v["conversions"]) for v in visits] == [
        (0, 5 * MIN, 0),
        (10 * MIN, 10 * MIN, 1),
    ]
    assert latest(out, "event", "event_id")[buy["event_id"]]["session_id"] == visits[1]["session_id"]


def test_a_very_late_event_is_stored_flagged_and_rewrites_nothing() -> None:
    early, now = ev(0), ev(3 * HOUR)
    t, out = feed([[early], [now], [ev(90 * MIN)]])
    sessions = live_sessions(out)
    assert sorted(s["event_count"] for s in sessions.values()) == [1, 1]
    flagged = [r for k, r in out if k == "event" and r["late"]]
    assert len(flagged) == 1 and flagged[0]["session_id"] == "" and flagged[0]["version"] == 0
    assert t.counts["very_late_events"] == 1


def test_a_very_late_conversion_is_still_credited_somewhere() -> None:
    _, out = feed(
        [[ev(3 * HOUR)], [ev(HOUR, etype="order_completed", properties={"order_id": "o", "revenue": 5})]]
    )
    (conversion,) = [r for k, r in out if k == "conversion"]
    assert conversion["revenue"] == 5 and conversion["session_id"] == ""


def test_an_event_placed_twice_counts_once() -> None:
    first = ev(0)
    _, out = feed([[first], [dict(first)], [ev(MIN)]])
    (session,) = live_sessions(out).values()
    assert session["event_count"] == 2


def test_sessions_already_final_are_not_reopened() -> None:
    t, out, state = JourneyTimeline(RULES), [], None
    state = t.place(state, [ev(0)], 0, out)
    state = t.advance(state, 2 * HOUR, out)
    assert state["events"] == []  # final: 0 + 30 min + 1 h <= 2 h
    state = t.place(state, [ev(61 * MIN)], 2 * HOUR, out)  # within lateness, but after the gap
    assert len(live_sessions(out)) == 2


def test_zero_lateness_flags_every_out_of_order_event() -> None:
    rules = SessionRules(lateness_ms=0)
    t, out = feed([[ev(10 * MIN)], [ev(5 * MIN)]], rules)
    assert t.counts["very_late_events"] == 1
    assert len(live_sessions(out)) == 1


# ---- the stage: per-partition watermarks and the idle timer, on a fake clock ----


def handler(clock: HandClock, partitions: int = 4) -> tuple[JourneysHandler, dict[str, dict[str, Any]]]:
    settings = Settings(idle_partition_seconds=60)  # type: ignore[call-arg]
    h = JourneysHandler(settings, clock=clock)
    tables: dict[str, dict[str, Any]] = {"journeys_state": {}, "journeys_watermarks": {}}
    h.bind(tables, partitions=partitions)  # type: ignore[arg-type]
    return h, tables


def persons_on_two_partitions(h: JourneysHandler) -> tuple[str, str]:
    names = (f"p{i}" for i in itertools.count())
    a = next(names)
    b = next(n for n in names if h.partition_of(n) != h.partition_of(a))
    return a, b


def sessions_emitted(emissions: list[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [v for t, _k, v in emissions if t == "rows.sessions"]


def test_each_partition_keeps_its_own_watermark() -> None:
    clock = HandClock(1000.0)
    h, tables = handler(clock)
    a, b = persons_on_two_partitions(h)
    h.process([store("enter", 0, person=a)])
    out = h.process([ev(5 * HOUR, person=b)])
    assert not [s for s in sessions_emitted(out) if s["person_id"] == a]  # b's time does not close a's visit
    assert h.watermarks[h.partition_of(a)] == 0 and h.watermarks[h.partition_of(b)] == 5 * HOUR
    assert tables["journeys_watermarks"][watermark_key(h.partition_of(b), 4)] == 5 * HOUR


def vouched(h: JourneysHandler) -> None:
    """Identity's progress records on every partition: it has passed on everything, now."""
    h.process([record for _key, record in progress_records(h.partitions)])


def test_the_idle_timer_closes_a_quiet_store_visit() -> None:
    clock = HandClock(1000.0)
    h, _ = handler(clock)
    h.process([store("enter", 0)])
    h.process([store("dwell", 5 * MIN)])
    clock.now += 59
    vouched(h)
    assert not sessions_emitted(h.tick())  # not idle long enough yet
    clock.now += 30 * 60
    vouched(h)
    (closed,) = sessions_emitted(h.tick())
    assert (closed["version"], closed["event_count"], closed["ended_at"]) == (2, 2, 5 * MIN)


def test_a_quiet_partition_moves_on_only_over_time_identity_vouched_for() -> None:
    """Identity down: no progress records, so the quiet partition's event time stands still."""
    clock = HandClock(1000.0)
    h, _ = handler(clock)
    h.process([store("enter", 0)])
    h.process([store("dwell", 5 * MIN)])  # changes the visit: published again when it closes
    partition = h.partition_of("p1")
    clock.now += 10 * 60
    vouched(h)  # identity caught up 10 min after the last event, then went down
    clock.now += 2 * 3600
    assert not sessions_emitted(h.tick())
    assert h.watermarks[partition] == 15 * MIN  # up to the last progress record, not the clock
    clock.now += 60
    vouched(h)  # back, and through what came in meanwhile
    (closed,) = sessions_emitted(h.tick())
    assert h.watermarks[partition] == 15 * MIN + 2 * HOUR + MIN and closed["event_count"] == 2


def test_a_restart_keeps_watermarks_and_held_events() -> None:
    clock = HandClock(1000.0)
    h, tables = handler(clock)
    h.process([ev(0)])
    h.process([ev(10 * MIN)])
    again = JourneysHandler(Settings(idle_partition_seconds=60), clock=clock)  # type: ignore[call-arg]
    again.bind(tables, partitions=4)  # type: ignore[arg-type]
    out = again.process([ev(HOUR)])  # closes the first session from the restored state
    (closed,) = [s for s in sessions_emitted(out) if s["version"] == 2]
    assert closed["event_count"] == 2
    assert again.watermarks[again.partition_of("p1")] == HOUR


def test_touch_removals_go_to_attribution_keyed_by_person() -> None:
    clock = HandClock(1000.0)
    h, _ = handler(clock)
    h.process([ev(10 * MIN)])
    out = h.process([ev(0)])
    removals = [(t, k) for t, k, v in out if v.get("record") == "touch_removed"]
    assert removals == [(topics.JOURNEYS, "p1")]


# ---- arrival order within the lateness does not change the result ----

event_times = st.lists(st.integers(min_value=0, max_value=8 * HOUR), min_size=1, max_size=40)


def story(times: list[int], seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for n, at in enumerate(sorted(times)):
        kind = rng.choice(["web", "app", "enter", "dwell", "exit", "purchase"])
        if kind in ("web", "app"):
            medium = rng.choice(["", "cpc", "email"])
            event = ev(
                at,
                kind,
                "page_view",
                person=rng.choice(["p1", "p2"]),
                context={"campaign": {"medium": medium}},
            )
        else:
            event = store(kind, at, person=rng.choice(["p1", "p2"]), revenue=3, transaction_id=f"t{at}")
        out.append({**event, "event_id": f"x{n:03d}"})
    return out


def result(events: list[dict[str, Any]], batch_sizes: list[int]) -> tuple[dict[str, Any], dict[str, str]]:
    clock = HandClock(1000.0)
    h, _ = handler(clock, partitions=2)
    emissions: list[tuple[str, str, dict[str, Any]]] = []
    i = 0
    for size in itertools.cycle(batch_sizes):
        if i >= len(events):
            break
        emissions += h.process(events[i : i + size])
        i += size
    emissions += h.flush()
    sessions: dict[str, dict[str, Any]] = {}
    assigned: dict[str, dict[str, Any]] = {}
    for topic, _key, row in emissions:
        table = sessions if topic == "rows.sessions" else assigned if topic == "rows.events" else None
        key = "session_id" if topic == "rows.sessions" else "event_id"
        if table is not None and row["version"] >= table.get(row[key], {"version": -1})["version"]:
            table[row[key]] = row
    live = {
        sid: {k: v for k, v in r.items() if k != "version"}
        for sid, r in sessions.items()
        if not r["retracted"]
    }
    return live, {eid: r["session_id"] for eid, r in assigned.items()}


@settings(max_examples=150, deadline=None)
@given(
    times=event_times,
    seed=st.integers(0, 10_000),
    jitter=st.lists(st.integers(0, HOUR - 1), min_size=40, max_size=40),
    batch_sizes=st.lists(st.integers(1, 7), min_size=1, max_size=5),
)
def test_any_arrival_order_within_the_lateness_gives_the_same_sessions(
    times: list[int], seed: int, jitter: list[int], batch_sizes: list[int]
) -> None:
    events = story(times, seed)
    # arrival order: each event may come after any event less than the lateness newer than it
    arrival = {
        e["event_id"]: e["occurred_at"] + j for e, j in zip(events, jitter[: len(events)], strict=True)
    }
    shuffled = sorted(events, key=lambda e: arrival[e["event_id"]])
    assert result(shuffled, batch_sizes) == result(events, [len(events)])
