"""Identity's words met out of order: numbered merges, session versions, identification times.

Identity writes a merge record on the merged person's partition, journeys a
touch or its removal on the person's partition, and either may reach a stage
after a newer word about the same person or session. Each rule here keeps the
newer word whatever arrives first (the whole pipeline under random schedules:
tests/unit/test_interleavings.py).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pipeline.attribution.paths import PathAttributor
from pipeline.identity.forwarding import CYCLES_CUT, STALE, follow, record_merge, route
from pipeline.journeys.sessions import Output, SessionRules
from pipeline.journeys.timeline import JourneyTimeline

MIN = 60_000
RULES = SessionRules(
    timeout_ms=30 * MIN, max_length_ms=24 * 60 * MIN, visit_timeout_ms=30 * MIN, lateness_ms=24 * 60 * MIN
)


def test_a_merge_met_after_the_rename_that_undid_it_is_ignored() -> None:
    """Identity: #1 A -> B, then #2 B -> A (A renamed back). Read #2 first: #1 is stale."""
    forward: dict[str, Any] = {}
    counts: Counter[str] = Counter()
    assert record_merge(forward, "B", "A", counts, "test", seq=2)
    assert not record_merge(forward, "A", "B", counts, "test", seq=1)  # A keeps its state
    assert forward == {"B": ["A", 2]} and counts[CYCLES_CUT] == 1


def test_the_same_merges_read_in_identity_order_end_in_the_same_table() -> None:
    forward: dict[str, Any] = {}
    counts: Counter[str] = Counter()
    assert record_merge(forward, "A", "B", counts, "test", seq=1)
    assert record_merge(forward, "B", "A", counts, "test", seq=2)  # drops A's older link
    assert forward == {"B": ["A", 2]}


def test_a_merge_older_than_the_persons_own_link_is_stale() -> None:
    forward: dict[str, Any] = {"A": ["C", 5]}
    counts: Counter[str] = Counter()
    assert not record_merge(forward, "A", "B", counts, "test", seq=3)
    assert forward == {"A": ["C", 5]} and counts[STALE] == 1


def test_the_oldest_link_of_a_would_be_cycle_is_the_one_dropped() -> None:
    """B -> C (#9) and C -> A (#4) are on the way back from B; A -> B (#7) drops C -> A, the oldest."""
    forward: dict[str, Any] = {"B": ["C", 9], "C": ["A", 4]}
    assert record_merge(forward, "A", "B", Counter(), "test", seq=7)
    assert forward == {"B": ["C", 9], "A": ["B", 7]}
    assert follow(forward, "A") == "C"


def test_a_merge_without_a_number_drops_the_survivors_link_as_before() -> None:
    forward: dict[str, Any] = {"B": "A"}
    assert record_merge(forward, "A", "B", Counter(), "test")
    assert forward == {"A": "B"}


persons = st.sampled_from(["p0", "p1", "p2", "p3", "p4"])


@given(st.lists(st.tuples(persons, persons), max_size=25), st.randoms(use_true_random=False))
def test_numbered_merges_read_in_any_order_never_leave_a_cycle(
    merges: list[tuple[str, str]], rng: random.Random
) -> None:
    numbered = [(merged, survivor, seq) for seq, (merged, survivor) in enumerate(merges, start=1)]
    rng.shuffle(numbered)
    forward: dict[str, Any] = {}
    for merged, survivor, seq in numbered:
        record_merge(forward, merged, survivor, Counter(), "test", seq=seq)
        assert not any(route(forward, p).cycle for p in forward)


def touch(session_id: str, version: int | None, at: int = 0) -> dict[str, Any]:
    record = {
        "person_id": "p",
        "session_id": session_id,
        "started_at": at,
        "channel": "email",
        "kind": "digital",
    }
    return record if version is None else {**record, "version": version}


def removal(session_id: str, version: int, at: int = 0) -> dict[str, Any]:
    return {"person_id": "p", "session_id": session_id, "version": version, "started_at": at}


def test_a_removal_before_its_touch_keeps_the_touch_out_and_survives_pruning() -> None:
    attributor = PathAttributor(["linear"], lookback_days=30, half_life_days=7)
    day = 24 * 60 * MIN
    state = attributor.add_touch(None, touch("old", 1, at=0), [])
    state = attributor.add_touch(state, touch("newer", 1, at=40 * day), [])  # horizon: day 10
    state = attributor.remove_touch(state, removal("s", 2, at=35 * day), [])
    state = attributor.add_touch(state, touch("later", 1, at=41 * day), [])  # prunes again
    # "old" fell behind the horizon; the removal is kept as long as its touch would be
    assert state["horizon"] == 10 * day and "old" not in state["touches"] and "s" in state["removed"]
    state = attributor.absorb(state, {"touches": {"s": ["email", 35 * day, "", False, "digital"]},
                                      "versions": {"s": 1}}, "p", [])  # fmt: skip
    assert set(state["touches"]) == {"newer", "later"}


def test_a_session_that_came_back_after_its_removal_keeps_its_touch_in_either_order() -> None:
    attributor = PathAttributor(["linear"], lookback_days=30, half_life_days=7)
    first = attributor.add_touch(attributor.remove_touch(None, removal("s", 2), []), touch("s", 3), [])
    second = attributor.remove_touch(attributor.add_touch(None, touch("s", 3), []), removal("s", 2), [])
    assert set(first["touches"]) == set(second["touches"]) == {"s"}
    stale = attributor.add_touch(attributor.remove_touch(None, removal("s", 2), []), touch("s", 1), [])
    assert stale["touches"] == {}


def test_a_hand_over_keeps_per_session_the_newer_of_touch_and_removal() -> None:
    attributor = PathAttributor(["linear"], lookback_days=30, half_life_days=7)
    here = attributor.add_touch(attributor.remove_touch(None, removal("a", 4), []), touch("b", 5), [])
    there = attributor.add_touch(attributor.remove_touch(None, removal("b", 4), []), touch("a", 6), [])
    merged = attributor.absorb(here, there, "p", [])
    assert set(merged["touches"]) == {"a", "b"} and merged["removed"] == {}


def web(event_id: str, at: int, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "person_id": "p",
        "source": "web",
        "type": "page_view",
        "occurred_at": at,
        **extra,
    }


def touches(out: list[Output]) -> list[dict[str, Any]]:
    return [record for kind, record in out if kind == "touch"]


def test_a_state_that_comes_back_to_its_person_sends_its_touches_again() -> None:
    """Attribution dropped the touches of the sessions a merge handed over; the round trip re-sends them."""
    timeline = JourneyTimeline(RULES)
    state = timeline.place(None, [web("e1", 0), web("e2", 60 * MIN)], 0, [])
    out: list[Output] = []
    back = timeline.absorb(None, state, "p", 0, out)
    assert sorted(t["session_id"] for t in touches(out)) == sorted(state["emitted"])
    assert all(t["version"] == 1 for t in touches(out))
    assert back["emitted"] == state["emitted"]


def test_a_withdrawn_session_is_removed_with_its_start_and_version() -> None:
    """Attribution keeps the removal as long as the touch would be kept, and knows which word is newer."""
    timeline = JourneyTimeline(RULES)
    out: list[Output] = []
    state = timeline.place(None, [web("e2", 20 * MIN)], 20 * MIN, out)
    (first,) = touches(out)
    out.clear()
    timeline.place(state, [web("e1", 0)], 20 * MIN, out)  # a late event: the session now starts at e1
    (gone,) = [record for kind, record in out if kind == "touch_removed"]
    assert gone == {"person_id": "p", "session_id": first["session_id"], "version": 2, "started_at": 20 * MIN}


def test_a_late_strong_identifier_makes_the_sessions_after_it_identified() -> None:
    timeline = JourneyTimeline(RULES)
    out: list[Output] = []
    state = timeline.place(None, [web("e2", 60 * MIN, identified=False, identified_since=None)], 0, out)
    assert [t["identified"] for t in touches(out)] == [False]
    out.clear()
    # identity learns of an earlier email sighting: the person was identified from minute 5
    timeline.place(state, [web("e1", 0, identified=False, identified_since=5 * MIN)], 60 * MIN, out)
    assert {t["started_at"]: t["identified"] for t in touches(out)} == {0: False, 60 * MIN: True}
