"""Hand-overs never go round a cycle of the forward table: journeys and attribution drain.

A stage sends a ``handoff`` for a person that merged on since to its own input
topic again. These tests feed each handler its own such output until it
sends nothing to itself any more, and fail when that takes more than a few
rounds (the livelock: the same hand-overs bouncing between two persons).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pipeline.attribution.stage import AttributionHandler
from pipeline.config import Settings
from pipeline.identity.forwarding import CYCLES_CUT, follow, record_merge, route, settle_handoff
from pipeline.journeys.stage import JourneysHandler
from pipeline.kafka import topics

MIN = 60_000
SETTINGS = Settings(models=("linear", "first_touch"))  # type: ignore[call-arg]
Handler = JourneysHandler | AttributionHandler
ROUNDS = 6  # a hand-over is absorbed after at most two passes on; more is a livelock


def journeys(forward: dict[str, Any] | None = None) -> JourneysHandler:
    handler = JourneysHandler(SETTINGS, clock=lambda: 0.0)
    tables = {"journeys_state": {}, "journeys_watermarks": {}, "journeys_forward": forward or {}}
    handler.bind(tables, partitions=4)  # type: ignore[arg-type]
    return handler


def attribution(forward: dict[str, Any] | None = None) -> AttributionHandler:
    handler = AttributionHandler(SETTINGS)
    handler.bind({"attribution_paths": {}, "attribution_forward": forward or {}})  # type: ignore[dict-item]
    return handler


def ev(event_id: str, person: str, at: int) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "person_id": person,
        "source": "web",
        "type": "page_view",
        "occurred_at": at,
    }


def merge(from_person: str, to_person: str, at: int) -> dict[str, Any]:
    """A merge record as identity writes it to events.identified, keyed by the merged person."""
    return {"record": "merge", "person_id": from_person, "from_person": from_person, "to_person": to_person,
            "merged_at": at}  # fmt: skip


def own_topic(handler: Handler) -> str:
    return handler.inputs[0]


def drain(handler: Handler, records: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]]]:
    """Process ``records``, then what the handler sent to its own input, until it sends nothing.

    Returns the number of rounds and every record it sent itself.
    """
    sent: list[dict[str, Any]] = []
    rounds = 0
    while records:
        rounds += 1
        assert rounds <= ROUNDS, f"still sending to its own input after {ROUNDS} rounds: {records}"
        records = [v for t, _k, v in handler.process(records) if t == own_topic(handler)]
        sent += records
    return rounds, sent


def held_events(handler: JourneysHandler) -> dict[str, set[str]]:
    """Person -> the ids of the events journeys holds for it."""
    return {p: {e[0]["event_id"] for e in s["events"]} for p, s in handler.state.items() if s["events"]}


def held_touches(handler: AttributionHandler) -> dict[str, set[str]]:
    """Person -> the sessions attribution holds touches of."""
    return {p: set(s["touches"]) for p, s in handler.state.items() if s and s.get("touches")}


def touch(person: str, session: str, at: int) -> dict[str, Any]:
    return {"record": "touch", "person_id": person, "session_id": session, "channel": "direct",
            "started_at": at}  # fmt: skip


def attribution_merge(merged: str, survivor: str) -> dict[str, Any]:
    return {"record": "merge", "person_id": merged, "to_person": survivor, "held_sessions": []}


# the stages fed their own output again


def test_journeys_fed_its_own_hand_overs_again_and_again_reaches_a_fixed_point() -> None:
    j = journeys()
    j.process([ev("a1", "A", 0), ev("b1", "B", MIN)])
    # A merged into B, then an earlier sighting renames B back to A: A -> B -> A
    rounds, sent = drain(j, [merge("A", "B", 2 * MIN), merge("B", "A", 3 * MIN)])
    assert rounds <= 3 and sent
    for _ in range(3):  # its whole earlier output to itself, fed back again
        rounds, _again = drain(j, list(sent))
        assert rounds <= 2
    assert held_events(j) == {"A": {"a1", "b1"}}  # the newest merge's survivor holds everything
    assert j.forward == {"B": "A"}
    assert j.counts[CYCLES_CUT] == 1


def test_attribution_fed_its_own_hand_overs_again_and_again_reaches_a_fixed_point() -> None:
    a = attribution()
    a.process([touch("A", "sa", 0), touch("B", "sb", MIN)])
    rounds, sent = drain(a, [attribution_merge("A", "B"), attribution_merge("B", "A")])
    assert rounds <= 3 and sent
    for _ in range(3):
        rounds, _again = drain(a, list(sent))
        assert rounds <= 2
    assert held_touches(a) == {"A": {"sa", "sb"}}
    assert a.forward == {"B": "A"}
    assert a.counts[CYCLES_CUT] == 1


def test_identity_renaming_a_person_back_drains_through_journeys_and_attribution() -> None:
    from pipeline.identity.graph import person_id_for
    from pipeline.identity.stage import IdentityHandler

    identity = IdentityHandler()
    identity.bind({"identity_ids": {}, "identity_persons": {}, "identity_pending": {}})  # type: ignore[dict-item]
    j, a = journeys(), attribution()

    def web(event_id: str, at: int, **ids: str) -> dict[str, Any]:
        return {"event_id": event_id, "source": "web", "type": "page_view", "occurred_at": at, "ids": ids}

    # A (cookie) and B (device, seen earlier) merge into B; then a sighting of the cookie
    # before B's device renames B back to A: identity writes A -> B, later B -> A
    story = [
        web("1", 10 * MIN, anonymous_id="a"),
        web("2", 5 * MIN, device_id="d"),
        web("3", 20 * MIN, anonymous_id="a", device_id="d"),
        web("4", MIN, anonymous_id="a"),
    ]
    merges = []
    for event in story:
        out = identity.process([event]) + identity.flush()
        identified = [v for t, _k, v in out if t == topics.IDENTIFIED]
        merges += [(v["person_id"], v["to_person"]) for v in identified if v.get("record") == "merge"]
        to_attribution: list[dict[str, Any]] = []
        records = identified
        for _ in range(ROUNDS):
            emitted = j.process(records)
            to_attribution += [v for t, _k, v in emitted if t == topics.JOURNEYS]
            records = [v for t, _k, v in emitted if t == topics.IDENTIFIED]
            if not records:
                break
        assert not records, "journeys kept sending hand-overs to itself"
        drain(a, to_attribution)
    person_a, person_b = person_id_for("anonymous_id:a"), person_id_for("device_id:d")
    assert merges == [(person_a, person_b), (person_b, person_a)]
    assert held_events(j) == {person_a: {"1", "2", "3", "4"}}
    assert list(held_touches(a)) == [person_a]
    assert j.counts[CYCLES_CUT] == a.counts[CYCLES_CUT] == 1


# a merge cycle, then the hand-overs


def test_journeys_merge_cycle_then_hand_overs_drains_and_counts_the_cut() -> None:
    j = journeys()
    j.process([ev("a1", "A", 0), ev("b1", "B", MIN)])
    first = [v for t, _k, v in j.process([merge("A", "B", 2 * MIN)]) if t == topics.IDENTIFIED]
    second = [v for t, _k, v in j.process([merge("B", "A", 3 * MIN)]) if t == topics.IDENTIFIED]
    assert j.counts[CYCLES_CUT] == 1
    rounds, _sent = drain(j, [*first, *second])  # both hand-overs arrive after both merges
    assert rounds <= 2
    assert held_events(j) == {"A": {"a1", "b1"}}


def test_attribution_merge_cycle_then_hand_overs_drains_and_counts_the_cut() -> None:
    a = attribution()
    a.process([touch("A", "sa", 0), touch("B", "sb", MIN)])
    first = [v for t, _k, v in a.process([attribution_merge("A", "B")]) if t == topics.JOURNEYS]
    second = [v for t, _k, v in a.process([attribution_merge("B", "A")]) if t == topics.JOURNEYS]
    assert a.counts[CYCLES_CUT] == 1
    rounds, _sent = drain(a, [*first, *second])
    assert rounds <= 2
    assert held_touches(a) == {"A": {"sa", "sb"}}


def test_a_forward_table_that_already_holds_a_cycle_drains_at_one_person() -> None:
    # written before cycles were cut: C -> A -> B -> A
    j = journeys({"A": "B", "B": "A", "C": "A"})
    handover = [
        {"record": "handoff", "person_id": p, "from_person": f"x{p}",
         "state": {"events": [[ev(f"e{p}", p, 0), "", 0]]}}
        for p in ("A", "B", "C")
    ]  # fmt: skip
    rounds, _sent = drain(j, handover)
    assert rounds <= 3
    assert held_events(j) == {"A": {"eA", "eB", "eC"}}  # A: the first cycle member a hand-over stood on
    assert follow(j.forward, "B") == follow(j.forward, "C") == "A"
    assert j.counts[CYCLES_CUT] == 1

    a = attribution({"A": "B", "B": "A", "C": "A"})
    states = [{"touches": {f"s{p}": ["direct", 0, "", False, "digital"]}} for p in ("A", "B", "C")]
    rounds, _sent = drain(a, [{"record": "handoff", "person_id": p, "from_person": f"x{p}", "state": s}
                              for p, s in zip(("A", "B", "C"), states, strict=True)])  # fmt: skip
    assert rounds <= 3
    assert held_touches(a) == {"A": {"sA", "sB", "sC"}}
    assert a.counts[CYCLES_CUT] == 1


def test_a_merge_replayed_after_the_survivor_merged_back_drains_and_keeps_everything() -> None:
    j = journeys()
    a = attribution()
    j.process([ev("a1", "A", 0), ev("b1", "B", MIN)])
    a.process([touch("A", "sa", 0), touch("B", "sb", MIN)])
    for merged, survivor in (("A", "B"), ("B", "A"), ("A", "B")):  # the last one replayed
        assert drain(j, [merge(merged, survivor, 2 * MIN)])[0] <= 3
        assert drain(a, [attribution_merge(merged, survivor)])[0] <= 3
    assert list(held_events(j).values()) == [{"a1", "b1"}]  # all in one person
    assert list(held_touches(a).values()) == [{"sa", "sb"}]
    assert j.counts[CYCLES_CUT] == a.counts[CYCLES_CUT] == 2


def test_a_merge_of_a_person_into_itself_moves_nothing() -> None:
    j = journeys()
    j.process([ev("a1", "A", 0)])
    assert j.process([merge("A", "A", MIN)]) == []
    assert held_events(j) == {"A": {"a1"}} and j.forward == {}
    assert j.counts[CYCLES_CUT] == 1

    a = attribution()
    a.process([touch("A", "sa", 0)])
    assert a.process([attribution_merge("A", "A")]) == []
    assert held_touches(a) == {"A": {"sa"}} and a.forward == {}
    assert a.counts[CYCLES_CUT] == 1


# the pure forward-table logic, on any table

persons = st.sampled_from(["p0", "p1", "p2", "p3", "p4", "p5"])


def acyclic(forward: dict[str, Any]) -> bool:
    return not any(route(forward, p).cycle for p in forward)


@given(st.lists(st.tuples(persons, persons), max_size=30))
def test_any_sequence_of_merges_leaves_the_forward_table_without_cycles(
    merges: list[tuple[str, str]],
) -> None:
    forward: dict[str, Any] = {}
    counts: Counter[str] = Counter()
    for merged, survivor in merges:
        if record_merge(forward, merged, survivor, counts, "test"):
            assert forward[merged] == survivor  # the newest merge wins
        assert acyclic(forward)


@given(st.dictionaries(persons, persons), persons)
def test_a_hand_over_on_any_table_is_absorbed_after_at_most_one_pass_on(
    forward: dict[str, Any], person: str
) -> None:
    counts: Counter[str] = Counter()
    target = settle_handoff(forward, person, "x", counts, "test")
    if target != person:
        assert settle_handoff(forward, target, "x", counts, "test") == target
    assert counts[CYCLES_CUT] <= 1
    for p in ("p0", "p1", "p2", "p3", "p4", "p5"):  # a hand-over at every person opens every cycle
        settle_handoff(forward, p, "x", counts, "test")
    assert acyclic(forward)
