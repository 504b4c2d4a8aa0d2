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
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
import phonenumbers

from pipeline.config import Settings
from pipeline.errors import InvalidEvent
from pipeline.ingest.schemas import SchemaRegistry
from pipeline.model.contract import CONSENT_UPDATED, ID_TYPES, PII_ID_TYPES, PURPOSES, SOURCES, Event

if TYPE_CHECKING:
    from pipeline.ingest.url_pii import UrlScrubber  # it uses this module's hashing

BLOCKED_ID_VALUES = frozenset(
    {"", "null", "none", "nil", "0", "-1", "undefined", "anonymous", "unknown", "nan"}
)
_OPTIONAL_OBJECTS = ("consent", "context", "properties")
_PHONE_JUNK = re.compile(r"[\s().\-/]")
_HASHED = re.compile(r"^sha256:[0-9a-f]{64}$")


def hash_pii(value: str, salt: str) -> str:
    """SHA-256 of the salted, already normalised value, as hex."""
    return hashlib.sha256(f"{salt}:{value}".encode()).hexdigest()


def normalise_id(id_type: str, value: str, phone_region: str = "") -> str:
    """The canonical spelling of an identifier before hashing, or as is.

    Emails are trimmed and lower-cased; phones become E.164 (``+4917012345``),
    national numbers read in ``phone_region``; a phone that cannot be read
    comes back empty, which makes it a placeholder that never links.
    """
    if id_type == "email":
        return value.strip().lower()
    if id_type == "phone":
        return to_e164(value, phone_region)
    return value.strip()


def to_e164(value: str, region: str = "") -> str:
    """A phone number in E.164, or "" when it is not a valid number."""
    text = _PHONE_JUNK.sub("", value.strip())
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, region.upper() or None)
    except phonenumbers.NumberParseException:
        return ""
    if not phonenumbers.is_possible_number(number):
        return ""
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


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
    """Remembers event ids received within ``window_ms`` (at most ``capacity``) and reports repeats."""

    def __init__(self, capacity: int = 1_000_000, window_ms: int = 86_400_000) -> None:
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._capacity = capacity
        self._window_ms = window_ms

    def seen(self, event_id: str, now_ms: int = 0) -> bool:
        """True when ``event_id`` was seen within the window; otherwise remember it."""
        seen = self._seen
        horizon = now_ms - self._window_ms
        while seen and next(iter(seen.values())) < horizon:
            seen.popitem(last=False)
        if event_id in seen:
            return True
        if len(seen) >= self._capacity:
            seen.popitem(last=False)
        seen[event_id] = now_ms
        return False


class EventNormalizer:
    """Validates raw events against the contract and normalises them."""

    def __init__(
        self,
        salt: str,
        max_bytes: int,
        max_future_ms: int,
        max_age_ms: int,
        phone_region: str = "",
        registry: SchemaRegistry | None = None,
        blocked_patterns: Sequence[str] = (),
        urls: UrlScrubber | None = None,
        max_record_bytes: int = 0,
    ) -> None:
        self.salt = salt
        self.urls = urls  # hashes personal data in the query strings of URLs
        # identifiers matching any of these (whole value) are placeholders that never link
        joined = "|".join(f"(?:{p})" for p in blocked_patterns)
        self.blocked = re.compile(joined) if blocked_patterns else None
        self.phone_region = phone_region
        self.registry = registry
        self.max_bytes = max_bytes
        self.max_record_bytes = max_record_bytes  # 0: not checked
        self.max_future_ms = max_future_ms
        self.max_age_ms = max_age_ms

    @classmethod
    def from_settings(cls, settings: Settings, registry: SchemaRegistry | None = None) -> EventNormalizer:
        """The normaliser the settings describe (salt, size and time limits, phone region, URL parameters)."""
        from pipeline.ingest.url_pii import UrlScrubber
        from pipeline.model.limits import record_bytes

        return cls(
            salt=settings.salt,
            max_bytes=settings.max_event_bytes,
            max_record_bytes=record_bytes(settings),
            max_future_ms=int(settings.max_future_hours * 3600_000),
            max_age_ms=int(settings.max_age_days * 86400_000),
            phone_region=settings.phone_region,
            registry=registry,
            blocked_patterns=settings.blocked_id_patterns,
            urls=UrlScrubber(settings.salt, settings.phone_region, settings.url_pii_params),
        )

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
        if self.registry is not None:
            self.registry.validate(doc)
        event_id = _required_str(doc, "event_id")
        source = _required_str(doc, "source")
        etype = _required_str(doc, "type")
        types = SOURCES.get(source)
        if types is None:
            raise InvalidEvent("unknown_type", f"$.source: unknown source {source[:64]!r}")
        if etype not in types:
            raise InvalidEvent("unknown_type", f"$.type: {etype[:64]!r} is not a {source} event type")
        occurred_at = parse_time(doc.get("occurred_at"), "occurred_at")
        original = occurred_at
        sent_at = doc.get("sent_at")
        if sent_at is not None:
            # The device clock may be wrong; it is wrong by the same amount at
            # occurred_at and at sent_at, so shift by the send-receive gap
            # (what established trackers do).
            occurred_at += received_at - parse_time(sent_at, "sent_at")
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
            "ids": self.stored_ids(doc.get("ids")),
        }
        if original != occurred_at:
            event["original_occurred_at"] = original
        for name in _OPTIONAL_OBJECTS:
            value = doc.get(name)
            if value is None:
                continue
            if not isinstance(value, dict):
                raise InvalidEvent("schema_violation", f"$.{name}: expected an object")
            if name != "consent":
                try:
                    encoded = orjson.dumps(value)
                except TypeError as exc:  # nested deeper than JSON tooling handles downstream
                    raise InvalidEvent("schema_violation", f"$.{name}: {exc}") from None
                if self.urls is not None and self.urls.needs(encoded):
                    value = self.urls.scrub(value)
                    encoded = orjson.dumps(value)
                if _EMAIL.search(encoded) or _PII_FIELD.search(encoded):
                    value = orjson.loads(redact_pii(encoded, self.salt, self.phone_region))
            event[name] = value  # type: ignore[literal-required]
        consent = event.get("consent")
        if consent:
            for key, flag in consent.items():
                if not isinstance(flag, bool):
                    raise InvalidEvent("schema_violation", f"$.consent.{key}: expected true or false")
        if event["type"] == CONSENT_UPDATED and not any(p in (consent or {}) for p in PURPOSES):
            purposes = ", ".join(PURPOSES)
            raise InvalidEvent("schema_violation", f"$.consent: consent_updated needs one of {purposes}")
        # Every record is measured (pipeline/model/limits.py): hashing makes a short
        # e-mail or URL parameter twelve or more times longer, so a mid-size raw
        # event full of them can normalise past the limit.
        if self.max_record_bytes:
            size = len(orjson.dumps(event))
            if size > self.max_record_bytes:
                raise InvalidEvent(
                    "too_large",
                    f"normalised to {size} bytes, over the {self.max_record_bytes} a record may have",
                )
        return event

    def stored_ids(self, ids: Any) -> dict[str, str]:
        """An event's ``ids`` as stored downstream: normalised, PII hashed, placeholders dropped.

        Raises :class:`InvalidEvent` (``missing_identifier``, ``blocked_identifier``,
        ``schema_violation``) when nothing usable is left.
        """
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
            if id_type in PII_ID_TYPES and _HASHED.match(value):
                # already hashed by this pipeline (a replayed dead letter) or by the producer
                out[id_type] = value[7:]
                continue
            normal = normalise_id(id_type, value, self.phone_region)
            if normal.lower() in BLOCKED_ID_VALUES or (self.blocked and self.blocked.fullmatch(normal)):
                blocked += 1
                continue
            out[id_type] = hash_pii(normal, self.salt) if id_type in PII_ID_TYPES else normal
        if not out:
            if blocked:
                raise InvalidEvent("blocked_identifier", "$.ids: every identifier is a placeholder value")
            raise InvalidEvent("missing_identifier", "$.ids: at least one identifier is required")
        return out


# A match starts only where a run of local-part characters starts: without the
# lookbehind, a long run with no "@" in it (a 1 MB property) was tried from each
# of its characters, quadratic in its length.
_EMAIL = re.compile(rb"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
_PII_FIELD = re.compile(rb'"(phone|payment_token|email)"\s*:\s*"((?:[^"\\]|\\.)*)"')


def redact_pii(raw: bytes, salt: str, phone_region: str = "") -> bytes:
    """The payload of a dead letter with raw email, phone and payment token replaced by their hashes.

    A parsable event keeps its structure (ids hashed exactly as ingest would);
    anything else is scrubbed by pattern. Bytes without PII come back unchanged.
    """
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("ids"), dict):
        ids = doc["ids"]
        changed = False
        for id_type in PII_ID_TYPES:
            value = ids.get(id_type)
            if isinstance(value, str) and value and not _HASHED.match(value):
                normal = normalise_id(id_type, value, phone_region)
                # a placeholder or unreadable value stays one ("" never links)
                blocked = not normal or normal.lower() in BLOCKED_ID_VALUES
                ids[id_type] = "" if blocked else "sha256:" + hash_pii(normal, salt)
                changed = True
        if changed:
            raw = orjson.dumps(doc)

    def field(match: re.Match[bytes]) -> bytes:
        value = match.group(2)
        if (
            value.startswith(b"sha256:")
            or value.strip().lower().decode("utf-8", "replace") in BLOCKED_ID_VALUES
        ):
            return match.group(0)  # already a hash, or a placeholder (not personal data)
        digest = hash_pii(value.decode("utf-8", "replace").strip().lower(), salt)
        return b'"' + match.group(1) + b'": "sha256:' + digest.encode() + b'"'

    raw = _PII_FIELD.sub(field, raw)
    return _EMAIL.sub(lambda m: b"sha256:" + hash_pii(m.group(0).decode().lower(), salt).encode(), raw)


def redact_key(key: bytes, salt: str, phone_region: str = "") -> bytes:
    """A raw message key (``type:value``, as producers key by identifier) with PII values hashed."""
    id_type, sep, value = key.partition(b":")
    if sep and id_type.decode("ascii", "replace") in PII_ID_TYPES:
        text = value.decode("utf-8", "replace")
        if not _HASHED.match(text):
            normal = normalise_id(id_type.decode(), text, phone_region)
            return id_type + b":sha256:" + hash_pii(normal, salt).encode()
        return key
    return redact_pii(key, salt, phone_region)


def _required_str(doc: dict[str, Any], field: str) -> str:
    value = doc.get(field)
    if value is None:
        raise InvalidEvent("schema_violation", f"$.{field}: required")
    if not isinstance(value, str) or not value:
        raise InvalidEvent("schema_violation", f"$.{field}: expected a non-empty string")
    return value
