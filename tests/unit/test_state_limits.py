"""A state value too large for a changelog record is trimmed by its table's rule, never a failed send."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.activation.history import new_history, trim_history
from pipeline.attribution.paths import drop_oldest_touches
from pipeline.config import load_settings
from pipeline.errors import StateTooLarge
from pipeline.identity.graph import IdentityGraph
from pipeline.journeys.timeline import JourneyTimeline, release_oldest_session
from pipeline.model.limits import identifiers_per_person, record_bytes
from pipeline.runtime.state import BatchCache
from tests.unit.test_late_events import MIN, RULES, ev, live_sessions


def test_a_value_over_the_limit_is_trimmed_until_it_fits_in_store_and_changelog() -> None:
    calls: list[int] = []

    def halve(_key: str, value: list[int]) -> list[int]:
        calls.append(len(value))
        return value[len(value) // 2 :]

    store: dict[str, Any] = {}
    cache = BatchCache(store, "t.changelog", partitions=2, max_bytes=2000, trim=halve)
    cache["hot"] = list(range(1000))  # about 4.9 kB encoded
    cache["cold"] = [1, 2, 3]
    records = {r.key: r.value for r in cache.write_back()}
    assert calls == [1000, 500]  # twice: 500 numbers still did not fit
    assert store["hot"] == list(range(750, 1000)) and orjson.loads(records[b"hot"]) == store["hot"]
    assert len(records[b"hot"] or b"") <= 2000 and store["cold"] == [1, 2, 3]


@pytest.mark.parametrize("trim", [None, lambda _key, _value: None])
def test_a_value_no_rule_can_trim_stops_the_stage_with_its_name(trim: Any) -> None:
    cache = BatchCache({}, "t.identity_persons-changelog", max_bytes=100, trim=trim)
    cache["p_hot"] = {"ids": [f"cookie:{i}" for i in range(50)]}
    with pytest.raises(
        StateTooLarge, match=r"the state of 'p_hot' in t.identity_persons-changelog is \d+ bytes"
    ):
        cache.write_back()


def test_journeys_release_the_oldest_session_and_go_on_placing_events() -> None:
    timeline, out = JourneyTimeline(RULES), []
    first, second = [ev(0), ev(5 * MIN)], [ev(2 * 60 * MIN), ev(2 * 60 * MIN + MIN)]
    state = timeline.place(None, [*first, *second], 0, out)
    assert len(live_sessions(out)) == 2
    (oldest_session,) = {entry[1] for entry in state["events"] if entry[0]["occurred_at"] < 60 * MIN}
    smaller = release_oldest_session(state)
    assert smaller is not None
    assert [entry[0]["event_id"] for entry in smaller["events"]] == [e["event_id"] for e in second]
    assert oldest_session not in smaller["emitted"]
    more: list[Any] = []
    state = timeline.place(smaller, [ev(2 * 60 * MIN + 2 * MIN)], 2 * 60 * MIN + MIN, more)
    retracted = [r for kind, r in more if kind == "session" and r["retracted"]]
    assert retracted == []  # the released session stays as it was published
    assert len(state["events"]) == 3
    assert release_oldest_session(release_oldest_session(state) or {}) is None  # nothing left after


def test_attribution_drops_its_oldest_touches_first_then_conversions() -> None:
    touches = {f"s{i}": ["email", i * 1000, 1] for i in range(8)}
    state = {"touches": touches, "conversions": [], "floor": None, "removed": {"s0": 0, "s5": 5000}}
    smaller = drop_oldest_touches(state)
    assert smaller is not None and sorted(smaller["touches"]) == [f"s{i}" for i in range(2, 8)]
    assert smaller["horizon"] == 1001 and smaller["removed"] == {"s5": 5000}
    conversions = [{"occurred_at": t} for t in (10, 20, 30)]
    only = drop_oldest_touches({"touches": {}, "conversions": conversions, "floor": None, "removed": {}})
    assert only is not None and only["conversions"] == conversions[1:] and only["floor"] == 10
    assert (
        drop_oldest_touches({"touches": {}, "conversions": conversions[:1], "floor": 5, "removed": {}})
        is None
    )


def test_activation_drops_old_decisions_then_orders_stores_and_pending() -> None:
    history = new_history()
    history["recent"] = {f"d{i}": {"decided_at": i} for i in range(4)}
    history["stores"] = ["s1", "s2", "s3"]
    smaller = trim_history(history)
    assert (
        smaller is not None
        and sorted(smaller["recent"]) == ["d2", "d3"]
        and smaller["stores"] == history["stores"]
    )
    for _ in range(2):  # {d3}, then none
        smaller = trim_history(smaller) or {}
    assert smaller["recent"] == {} and smaller["stores"] == ["s1", "s2", "s3"]
    smaller = trim_history(smaller) or {}  # decisions gone: the oldest stores next
    assert smaller["stores"] == ["s2", "s3"]
    assert trim_history(new_history()) is None


def test_the_journeys_stage_trims_only_its_person_state_and_counts_it() -> None:
    from pipeline.config import load_settings
    from pipeline.journeys.stage import JourneysHandler

    handler = JourneysHandler(load_settings())
    state = JourneyTimeline(RULES).place(None, [ev(0), ev(2 * 60 * MIN)], 0, [])
    smaller = handler.trim_state("journeys_state", "p1", state)
    assert smaller is not None and len(smaller["events"]) == 1
    assert handler.counts["state_trimmed"] == 1  # exported as journeys.state_trimmed
    assert handler.trim_state("journeys_watermarks", "w", {"0": 5}) is None


@pytest.mark.parametrize("max_event_bytes", [1024, 4096, 1_000_000])
def test_a_bots_person_stays_within_a_record_whatever_its_identifiers(max_event_bytes: int) -> None:
    settings = load_settings(max_event_bytes=max_event_bytes)
    cap = identifiers_per_person(settings)
    assert cap == min(settings.identity_max_ids_per_person, (record_bytes(settings) - 64 * 1024) // 600)
    graph = IdentityGraph({}, {}, max_ids_per_person=cap)
    long = "x" * 500  # near the contract's 512 characters
    # one login, a new cookie and device on every request, and another visitor's cookie and device
    # seen with the login each time (each would merge another person in)
    for i in range(cap + 200):
        ids = {"user_id": "bot", "anonymous_id": f"{long}-{i}", "device_id": f"{long}-d{i}"}
        graph.resolve({"event_id": f"e{i}", "occurred_at": i, "ids": ids})
        other = {"anonymous_id": f"{long}-o{i}", "device_id": f"{long}-od{i}"}
        graph.resolve({"event_id": f"o{i}", "occurred_at": i, "ids": other})
        graph.resolve({"event_id": f"m{i}", "occurred_at": i, "ids": {"user_id": "bot", **other}})
    bot = graph.ids["user_id:bot"][0]
    assert len(graph.persons[bot]["ids"]) <= cap
    assert graph.counts["too_many_identifiers"] > 0
    for person, record in graph.persons.items():
        if isinstance(record, dict):
            assert len(orjson.dumps(record)) <= record_bytes(settings), person
    assert all(entry[0] in graph.persons for entry in graph.ids.values())  # no identifier points nowhere
