"""Whatever bytes arrive, ingest either normalises them or names a reason; it never crashes.

The event fuzzers start from valid events of the simulator and mutate them
(drop or replace a field, another source's type, an odd time or identifier,
extra keys, truncation), so both the accept and the reject paths are run;
each fuzz test checks that both occurred.
"""

from __future__ import annotations

import copy
import string
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import InvalidEvent
from pipeline.ingest.normalize import EventNormalizer, redact_pii
from pipeline.simulate import simulate

REASONS = {
    "malformed_json", "schema_violation", "unknown_type", "missing_identifier", "blocked_identifier",
    "too_large", "timestamp_out_of_range",
}  # fmt: skip
NOW = 1_795_000_000_000
NORMALIZER = EventNormalizer("fuzz-salt", 50_000, 23 * 3600_000, 3650 * 86400_000)

int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
json_leaf = st.none() | st.booleans() | int64 | st.floats(allow_nan=False) | st.text(max_size=40)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=30,
)
timestamps = st.one_of(
    st.text(max_size=30),
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(
        ["2026-11-01T10:00:00Z", "2026-11-01T10:00:00+05:30", "2026-11-01", "9999-12-31T23:59:59Z"]
    ),
)
VALID_EVENTS = list(simulate(customers=40, days=3, seed=14))  # every source and type, all valid
FIELDS = ("event_id", "source", "type", "occurred_at", "ids", "consent", "context", "properties")
TYPES = sorted({e["type"] for e in VALID_EVENTS})


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting ``doc[path[0]][path[1]]...`` (replacing whatever is not an object on the way)."""

    def apply(doc: dict[str, Any]) -> None:
        target = doc
        for key in path[:-1]:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        target[path[-1]] = value

    return apply


def _drop(field: str) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.pop(field, None)


ID_KEYS = ["anonymous_id", "device_id", "user_id", "email", "phone", "loyalty_id", "payment_token", "odd"]
id_values = st.one_of(
    st.text(alphabet=string.printable, max_size=20),
    st.sampled_from(["null", "0", "", "undefined"]),
    int64,
    st.none(),
)
mutations = st.one_of(
    st.sampled_from(FIELDS).map(_drop),
    st.tuples(st.sampled_from(FIELDS), json_value).map(lambda fv: _set((fv[0],), fv[1])),
    st.sampled_from(TYPES).map(lambda t: _set(("type",), t)),
    st.sampled_from(["web", "app", "geofence", "pos", "fax", ""]).map(lambda s: _set(("source",), s)),
    timestamps.map(lambda t: _set(("occurred_at",), t)),
    st.tuples(st.sampled_from(ID_KEYS), id_values).map(lambda kv: _set(("ids", kv[0]), kv[1])),
    st.just(_set(("ids",), {})),
    st.tuples(st.text(max_size=10), json_value).map(lambda kv: _set(("properties", kv[0] or "k"), kv[1])),
    st.tuples(st.text(max_size=10), json_value).map(lambda kv: _set((kv[0] or "extra",), kv[1])),
)  # fmt: skip


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid simulator event, mutated zero or more times."""
    doc = copy.deepcopy(draw(st.sampled_from(VALID_EVENTS)))
    for mutate in draw(st.lists(mutations, max_size=3)):
        mutate(doc)
    return doc


def assert_both_paths(seen: Counter[str], at_least: int = 40) -> None:
    """At least ``at_least`` events were valid and at least as many rejected, whatever the reasons."""
    rejected = sum(n for reason, n in seen.items() if reason != "valid")
    assert seen["valid"] >= at_least and rejected >= at_least, seen


def outcome(raw: bytes) -> str:
    try:
        event = NORMALIZER.normalise(raw, NOW)
    except InvalidEvent as exc:
        assert exc.reason in REASONS, exc.reason
        assert exc.detail
        return exc.reason
    assert event["ids"] and isinstance(event["occurred_at"], int)
    orjson.dumps(event)  # serialisable as it travels
    return "valid"


VALID_RAW = [orjson.dumps(e) for e in VALID_EVENTS]


@st.composite
def spliced_bytes(draw: st.DrawFn) -> bytes:
    """A valid event's bytes, some with random bytes written over a random stretch of them."""
    raw = draw(st.sampled_from(VALID_RAW))
    if draw(st.booleans()):
        return raw
    start = draw(st.integers(0, len(raw)))
    end = draw(st.integers(start, min(len(raw), start + 12)))
    return raw[:start] + draw(st.binary(max_size=12)) + raw[end:]


def test_random_bytes() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=300) | spliced_bytes())
    def check(raw: bytes) -> None:
        seen[outcome(raw)] += 1
        redact_pii(raw, "s")

    check()
    assert_both_paths(seen)


def test_mutated_simulator_events_are_accepted_or_rejected_with_a_reason() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
    @given(events())
    def check(doc: dict[str, Any]) -> None:
        raw = orjson.dumps(doc)
        seen[outcome(raw)] += 1
        outcome(raw[: len(raw) // 2])  # truncated JSON
        redact_pii(raw, "s")

    check()
    assert_both_paths(seen)
    assert len(seen) >= 4, f"too few distinct reasons: {seen}"


def test_every_simulator_event_is_valid() -> None:
    assert {outcome(orjson.dumps(e)) for e in VALID_EVENTS} == {"valid"}
    assert {(e["source"], e["type"]) for e in VALID_EVENTS} >= {
        ("web", "order_completed"),
        ("pos", "purchase"),
    }


def test_deep_nesting_huge_strings_and_odd_unicode() -> None:
    deep = b"[" * 300 + b"]" * 300
    head = b'{"event_id": "e", "source": "web", "type": "page_view", "occurred_at": "2026-11-01T10:00:00Z"'
    cases = [
        b"[" * 5000,
        head + b', "ids": {"user_id": "u"}, "properties": {"x": ' + deep + b"}}",
        orjson.dumps({"event_id": "e" * 100_000}),
        '{"event_id": "\u202e\ud7ff", "source": "web"}'.encode(),
        b'{"event_id": "e", "source": "web", "type": "page_view", "occurred_at": "2026-11-01T10:00:00Z", '
        b'"ids": {"anonymous_id": "\xf0\x9f\x92\xa9"}}',
        b"\xff\xfe\x00",
    ]
    assert [outcome(c) for c in cases] == [
        "malformed_json", "schema_violation", "too_large", "schema_violation", "valid", "malformed_json",
    ]  # fmt: skip
