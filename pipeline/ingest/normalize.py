"""Validation and normalisation of raw contract events (pure, no Kafka).

:class:`EventNormalizer` turns the raw bytes of one event into a normalised
:class:`~pipeline.model.contract.Event` or raises
:class:`~pipeline.errors.InvalidEvent` with a typed reason:

``too_large``, ``malformed_json``, ``schema_violation``, ``unknown_type``,
``missing_identifier``, ``blocked_identifier``, ``timestamp_out_of_range``.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from datetime import datetime
from typing import Any

import orjson

from pipeline.errors import InvalidEvent
from pipeline.model.contract import ID_TYPES, PII_ID_TYPES, SOURCES, Event

BLOCKED_ID_VALUES = frozenset(
    {"", "null", "none", "nil", "0", "-1", "undefined", "anonymous", "unknown", "nan"}
)
_OPTIONAL_OBJECTS = ("consent", "context", "properties")
_PHONE_JUNK = re.compile(r"[\s().\-/]")


def hash_pii(value: str, salt: str) -> str:
    """SHA-256 of the salted, already normalised value, as hex."""
    return hashlib.sha256(f"{salt}:{value}".encode()).hexdigest()


def normalise_id(id_type: str, value: str) -> str:
    """The canonical spelling of an identifier before hashing (email, phone) or as is."""
    if id_type == "email":
        return value.strip().lower()
    if id_type == "phone":
        digits = _PHONE_JUNK.sub("", value.strip())
        if digits.startswith("00"):
            digits = "+" + digits[2:]
        return digits
    return value.strip()


def parse_time(value: Any, field: str) -> int:
    """An RFC 3339 timestamp with an offset, as UTC epoch milliseconds."""
    if not isinstance(value, str):
        raise InvalidEvent("schema_violation", f"$.{field}: expected an RFC 3339 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent("schema_violation", f"$.{field}: {value[:64]!r} is not RFC 3339") from None
    if parsed.tzinfo is None:
        raise InvalidEvent("schema_violation", f"$.{field}: timestamp needs an offset (Z or +hh:mm)")
    return int(parsed.timestamp() * 1000)


class Deduplicator:
    """Remembers the last ``capacity`` event ids and reports repeats."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def seen(self, event_id: str) -> bool:
        """True when ``event_id`` was already seen; otherwise remember it."""
        if event_id in self._seen:
            return True
        self._seen[event_id] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return False


class EventNormalizer:
    """Validates raw events against the contract and normalises them."""

    def __init__(self, salt: str, max_bytes: int, max_future_ms: int, max_age_ms: int) -> None:
        self.salt = salt
        self.max_bytes = max_bytes
        self.max_future_ms = max_future_ms
        self.max_age_ms = max_age_ms

    def normalise(self, raw: bytes, received_at: int) -> Event:
        """Parse, validate and normalise one raw event received at ``received_at`` (epoch ms)."""
        if len(raw) > self.max_bytes:
            raise InvalidEvent("too_large", f"{len(raw)} bytes, limit {self.max_bytes}")
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent("malformed_json", str(exc)) from None
        if not isinstance(doc, dict):
            raise InvalidEvent("schema_violation", "$: an event is a JSON object")
        event_id = _required_str(doc, "event_id")
        source = _required_str(doc, "source")
        etype = _required_str(doc, "type")
        types = SOURCES.get(source)
        if types is None:
            raise InvalidEvent("unknown_type", f"$.source: unknown source {source[:64]!r}")
        if etype not in types:
            raise InvalidEvent("unknown_type", f"$.type: {etype[:64]!r} is not a {source} event type")
        occurred_at = parse_time(doc.get("occurred_at"), "occurred_at")
        if occurred_at > received_at + self.max_future_ms:
            raise InvalidEvent("timestamp_out_of_range", "$.occurred_at: too far in the future")
        if occurred_at < received_at - self.max_age_ms:
            raise InvalidEvent("timestamp_out_of_range", "$.occurred_at: older than the maximum age")
        event: Event = {
            "event_id": event_id,
            "source": source,
            "type": etype,
            "occurred_at": occurred_at,
            "received_at": received_at,
            "ids": self._ids(doc.get("ids")),
        }
        for name in _OPTIONAL_OBJECTS:
            value = doc.get(name)
            if value is None:
                continue
            if not isinstance(value, dict):
                raise InvalidEvent("schema_violation", f"$.{name}: expected an object")
            event[name] = value  # type: ignore[literal-required]
        consent = event.get("consent")
        if consent:
            for key, flag in consent.items():
                if not isinstance(flag, bool):
                    raise InvalidEvent("schema_violation", f"$.consent.{key}: expected true or false")
        return event

    def _ids(self, ids: Any) -> dict[str, str]:
        if not isinstance(ids, dict):
            raise InvalidEvent("missing_identifier", "$.ids: expected an object with at least one identifier")
        out: dict[str, str] = {}
        blocked = 0
        for id_type, value in ids.items():
            if id_type not in ID_TYPES:
                raise InvalidEvent("schema_violation", f"$.ids.{id_type[:32]}: unknown identifier type")
            if value is None:
                blocked += 1
                continue
            if not isinstance(value, str):
                raise InvalidEvent("schema_violation", f"$.ids.{id_type}: expected a string")
            normal = normalise_id(id_type, value)
            if normal.lower() in BLOCKED_ID_VALUES:
                blocked += 1
                continue
            out[id_type] = hash_pii(normal, self.salt) if id_type in PII_ID_TYPES else normal
        if not out:
            if blocked:
                raise InvalidEvent("blocked_identifier", "$.ids: every identifier is a placeholder value")
            raise InvalidEvent("missing_identifier", "$.ids: at least one identifier is required")
        return out


def _required_str(doc: dict[str, Any], field: str) -> str:
    value = doc.get(field)
    if value is None:
        raise InvalidEvent("schema_violation", f"$.{field}: required")
    if not isinstance(value, str) or not value:
        raise InvalidEvent("schema_violation", f"$.{field}: expected a non-empty string")
    return value
