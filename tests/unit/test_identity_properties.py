"""Properties of the identity graph over random event streams (hypothesis)."""

from __future__ import annotations

import random
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.identity.graph import IdentityGraph, person_id_for, root_of

WEAK = ("anonymous_id", "device_id", "email", "phone", "payment_token")

ids_strategy = st.dictionaries(
    st.sampled_from(WEAK), st.sampled_from([f"v{i}" for i in range(8)]), min_size=1, max_size=3
)
events_strategy = st.lists(st.tuples(st.integers(0, 50), ids_strategy), min_size=1, max_size=30)


def events_of(raw: list[tuple[int, dict[str, str]]]) -> list[dict[str, Any]]:
    return [
        {"event_id": f"e{i}", "source": "web", "type": "page_view", "occurred_at": at, "ids": ids}
        for i, (at, ids) in enumerate(raw)
    ]


def expected_persons(events: list[dict[str, Any]]) -> dict[str, str]:
    """Identifier -> person by hand: connected components, named by their oldest identifier."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent[x] != x:
            x = parent[x]
        return x

    first_seen: dict[str, int] = {}
    for e in events:
        keys = [f"{t}:{v}" for t, v in e["ids"].items()]
        for k in keys:
            parent.setdefault(k, k)
            first_seen[k] = min(first_seen.get(k, e["occurred_at"]), e["occurred_at"])
        for k in keys[1:]:
            parent[find(k)] = find(keys[0])
    components: dict[str, list[str]] = {}
    for k in parent:
        components.setdefault(find(k), []).append(k)
    result = {}
    for members in components.values():
        root = min(root_of(k, first_seen[k]) for k in members)
        for k in members:
            result[k] = person_id_for(root[2])
    return result


def run(events: list[dict[str, Any]], restart_at: int | None = None) -> tuple[dict[str, str], IdentityGraph]:
    ids: dict[str, Any] = {}
    persons: dict[str, Any] = {}
    graph = IdentityGraph(ids, persons, max_persons_per_id=10_000)
    for i, event in enumerate(events):
        if i == restart_at:  # state survives through its changelog: a JSON round trip
            ids, persons = orjson.loads(orjson.dumps(ids)), orjson.loads(orjson.dumps(persons))
            graph = IdentityGraph(ids, persons, max_persons_per_id=10_000)
        graph.resolve(event)  # type: ignore[arg-type]
    return {k: v[0] for k, v in graph.ids.items()}, graph


@settings(max_examples=300, deadline=None)
@given(raw=events_strategy, seed=st.integers(0, 10_000))
def test_without_conflicts_any_order_gives_the_connected_components_named_by_their_oldest_id(
    raw: list[tuple[int, dict[str, str]]], seed: int
) -> None:
    events = events_of(raw)
    expected = expected_persons(events)
    in_order = sorted(events, key=lambda e: (e["occurred_at"], e["event_id"]))
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)
    assert run(in_order)[0] == expected
    assert run(shuffled)[0] == expected  # any partitioning interleaves the stream in some order
    assert run(shuffled, restart_at=len(shuffled) // 2)[0] == expected


def test_every_alias_points_at_a_live_person() -> None:
    events = events_of(
        [
            (5, {"device_id": "d"}),
            (3, {"anonymous_id": "a", "device_id": "d"}),
            (1, {"email": "m", "anonymous_id": "a"}),
        ]
    )
    mapping, graph = run(events)
    (person,) = set(mapping.values())
    assert person == person_id_for("email:m") and set(graph.persons) == {person}
    # d was seen at 3 by the second event, so it stayed the root until m (seen at 1) took over
    assert set(graph.persons[person]["aliases"]) == {person_id_for("device_id:d")}


unique_ids = st.dictionaries(
    st.sampled_from(["user_id", "loyalty_id", "anonymous_id", "device_id"]),
    st.sampled_from(["a", "b", "c"]),
    min_size=1,
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(
    raw=st.lists(st.tuples(st.integers(0, 50), unique_ids), min_size=1, max_size=30),
    seed=st.integers(0, 10_000),
)
def test_with_conflicts_two_different_unique_ids_never_share_a_person(
    raw: list[tuple[int, dict[str, str]]], seed: int
) -> None:
    events = events_of(raw)
    random.Random(seed).shuffle(events)
    mapping, graph = run(events)
    for unique in ("user_id", "loyalty_id"):
        holders: dict[str, set[str]] = {}
        for key, person in mapping.items():
            if key.startswith(unique + ":"):
                holders.setdefault(person, set()).add(key)
        assert all(len(values) == 1 for values in holders.values()), holders
    assert set(mapping.values()) <= set(graph.persons)  # every identifier on a live person
