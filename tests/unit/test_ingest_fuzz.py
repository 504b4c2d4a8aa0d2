"""Whatever bytes arrive, ingest either normalises them or names a reason; it never crashes."""

from __future__ import annotations

import string
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import InvalidEvent
from pipeline.ingest.normalize import EventNormalizer, redact_pii

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
ids = st.dictionaries(
    st.sampled_from(["anonymous_id", "device_id", "user_id", "email", "phone", "loyalty_id", "odd"]),
    st.one_of(
        st.text(alphabet=string.printable, max_size=20),
        st.sampled_from(["null", "0", "", "undefined"]),
        int64,
        st.none(),
    ),
    max_size=4,
)  # fmt: skip
events = st.fixed_dictionaries(
    {
        "event_id": st.one_of(st.text(max_size=20), int64, st.none()),
        "source": st.sampled_from(["web", "app", "geofence", "pos", "fax", ""]),
        "type": st.sampled_from(["page_view", "purchase", "enter", "login", "order_completed", "x"]),
        "occurred_at": timestamps,
        "ids": ids,
    },
    optional={"consent": json_value, "context": json_value, "properties": json_value, "sent_at": timestamps},
)


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


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes(raw: bytes) -> None:
    outcome(raw)
    redact_pii(raw, "s")


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(events)
def test_random_events(doc: dict[str, Any]) -> None:
    raw = orjson.dumps(doc)
    outcome(raw)
    outcome(raw[: len(raw) // 2])  # truncated JSON
    redact_pii(raw, "s")


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
