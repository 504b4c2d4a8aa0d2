"""Ingest validation and normalisation rules."""

from __future__ import annotations

import hashlib
from datetime import datetime

import orjson
import pytest

from pipeline.config import load_settings
from pipeline.errors import InvalidEvent
from pipeline.ingest.normalize import (
    Deduplicator,
    EventNormalizer,
    normalise_id,
    redact_key,
    redact_pii,
    to_e164,
)
from pipeline.ingest.schemas import default_registry
from pipeline.kafka import topics
from pipeline.kafka.clients import producer_config
from pipeline.model.limits import KAFKA_DEFAULT_MESSAGE_BYTES, message_bytes, record_bytes

NOW = 1_790_000_000_000  # 2026-09-21


def normalizer() -> EventNormalizer:
    return EventNormalizer(
        salt="test-salt", max_bytes=10_000, max_future_ms=23 * 3600_000, max_age_ms=10 * 86400_000
    )


def event(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": "e1",
        "source": "web",
        "type": "page_view",
        "occurred_at": "2026-09-21T10:00:00+02:00",
        "ids": {"anonymous_id": "a1", "email": "  Alice@Example.COM "},
    }
    base.update(overrides)
    return base


def reason_of(doc: object | bytes) -> str:
    raw = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    with pytest.raises(InvalidEvent) as info:
        normalizer().normalise(raw, NOW)
    return info.value.reason


def test_valid_event_is_normalised_to_utc_millis_and_hashed_pii() -> None:
    out = normalizer().normalise(orjson.dumps(event()), NOW)
    assert out["occurred_at"] == int(
        __import__("datetime").datetime.fromisoformat("2026-09-21T08:00:00+00:00").timestamp() * 1000
    )
    assert out["ids"]["anonymous_id"] == "a1"
    # salted SHA-256 of the normalised value, computed here without the code under test
    assert out["ids"]["email"] == hashlib.sha256(b"test-salt:alice@example.com").hexdigest()
    assert out["ids"]["email"] == "db3923e83ea9914c36dc30f7b83d23f6b14afab6f49f4dbc6f7fea6c8de4b91d"
    assert "alice" not in orjson.dumps(out).decode().lower()


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (b"{not json", "malformed_json"),
        ([1, 2], "schema_violation"),
        (event(event_id=None), "schema_violation"),
        (event(event_id=12), "schema_violation"),
        (event(source="fax"), "unknown_type"),
        (event(type="purchase"), "unknown_type"),
        (event(occurred_at="yesterday"), "schema_violation"),
        (event(occurred_at="2026-09-21T10:00:00"), "schema_violation"),
        (event(occurred_at="2030-01-01T00:00:00Z"), "timestamp_out_of_range"),
        (event(occurred_at="2001-01-01T00:00:00Z"), "timestamp_out_of_range"),
        (event(ids={}), "missing_identifier"),
        (event(ids="a1"), "missing_identifier"),
        (event(ids={"anonymous_id": "undefined", "device_id": "0"}), "blocked_identifier"),
        (event(ids={"shoe_size": "42"}), "schema_violation"),
        (event(ids={"user_id": 5}), "schema_violation"),
        (event(context=[]), "schema_violation"),
        (event(consent={"analytics": "yes"}), "schema_violation"),
    ],
)
def test_bad_events_get_a_typed_reason(doc: object, reason: str) -> None:
    assert reason_of(doc) == reason


def test_too_large() -> None:
    assert reason_of(orjson.dumps(event(properties={"blob": "x" * 20_000}))) == "too_large"


def test_an_event_whose_normalised_record_is_over_the_record_limit_is_too_large() -> None:
    raw = orjson.dumps(event(ids={"anonymous_id": "a1", "email": "a@x.io", "phone": "+33612345678"}))
    size = len(orjson.dumps(normalizer().normalise(raw, NOW)))
    assert size > len(raw)  # hashed identifiers, receipt time, device time: a record grows

    def limited(limit: int) -> EventNormalizer:
        return EventNormalizer(salt="test-salt", max_bytes=10_000, max_future_ms=23 * 3600_000,
                               max_age_ms=10 * 86400_000, max_record_bytes=limit)  # fmt: skip

    assert len(orjson.dumps(limited(size).normalise(raw, NOW))) == size
    with pytest.raises(InvalidEvent) as info:
        limited(size - 1).normalise(raw, NOW)
    assert info.value.reason == "too_large"
    assert info.value.detail == f"normalised to {size} bytes, over the {size - 1} a record may have"
    # short e-mail addresses in properties grow twelvefold once hashed: a quarter of the limit is enough
    mails = orjson.dumps(event(properties={"to": " ".join(f"u{i}@b.io" for i in range(200))}))
    with pytest.raises(InvalidEvent) as info:
        limited(len(mails) * 5).normalise(mails, NOW)
    assert info.value.reason == "too_large"


def test_an_event_near_the_default_limit_is_normalised_and_redacted_whole() -> None:
    """A 1 MB property without an "@": the e-mail pattern was tried from each of its characters."""
    blob = "x" * 999_000
    raw = orjson.dumps(event(properties={"blob": blob, "contact": "bob@example.com"}))
    wide = EventNormalizer(salt="test-salt", max_bytes=1_000_000, max_future_ms=23 * 3600_000,
                           max_age_ms=10 * 86400_000)  # fmt: skip
    properties = wide.normalise(raw, NOW)["properties"]
    assert properties["blob"] == blob and properties["contact"].startswith("sha256:")
    assert b"bob@example.com" not in redact_pii(raw, "test-salt")


def test_the_size_limits_line_up() -> None:
    settings = load_settings(max_event_bytes=1_000_000)
    assert record_bytes(settings) >= 2 * settings.max_event_bytes
    assert message_bytes(settings) > record_bytes(settings)
    small = load_settings(max_event_bytes=2048)
    assert message_bytes(small) == KAFKA_DEFAULT_MESSAGE_BYTES  # never below Kafka's default
    specs = topics.topic_specs(settings)
    assert {config["max.message.bytes"] for _name, _p, config in specs} == {str(message_bytes(settings))}
    assert producer_config(settings)["message.max.bytes"] == message_bytes(settings)


def test_blocked_values_are_dropped_but_real_ones_kept() -> None:
    out = normalizer().normalise(orjson.dumps(event(ids={"anonymous_id": "null", "user_id": "u7"})), NOW)
    assert out["ids"] == {"user_id": "u7"}


def test_phone_normalisation() -> None:
    assert normalise_id("phone", "0049 (170) 123-4567") == "+491701234567"
    assert normalise_id("email", " A@B.C ") == "a@b.c"


def test_deduplicator_remembers_a_bounded_window() -> None:
    dedup = Deduplicator(capacity=2, window_ms=1000)
    assert [dedup.seen(x, 0) for x in ("a", "b", "a", "c", "a")] == [False, False, True, False, False]
    assert dedup.seen("b", 0) is False  # pushed out by the capacity


def test_deduplicator_forgets_after_the_time_window() -> None:
    dedup = Deduplicator(capacity=100, window_ms=1000)
    assert dedup.seen("a", 0) is False
    assert dedup.seen("a", 999) is True
    assert dedup.seen("a", 2000) is False


def test_clock_skew_is_corrected_and_the_device_time_kept() -> None:
    doc = event(occurred_at="2026-09-21T10:00:00+02:00", sent_at="2026-09-21T10:05:00+02:00")
    received = int(datetime.fromisoformat("2026-09-21T08:02:00+00:00").timestamp() * 1000)
    out = normalizer().normalise(orjson.dumps(doc), received)
    device = int(datetime.fromisoformat("2026-09-21T08:00:00+00:00").timestamp() * 1000)
    assert out["original_occurred_at"] == device
    assert out["occurred_at"] == device - 3 * 60_000  # the device clock ran 3 minutes fast


def test_pii_in_properties_is_hashed_and_dead_letters_are_redacted() -> None:
    out = normalizer().normalise(orjson.dumps(event(properties={"contact": "bob@shop.example"})), NOW)
    assert "bob@" not in orjson.dumps(out).decode()
    redacted = redact_pii(b'{"ids": {"email": "bob@shop.example", "phone": "+49 170 1234567"', "s")
    assert b"bob@" not in redacted and b"1234567" not in redacted
    assert redact_pii(b"nothing personal", "s") == b"nothing personal"


def test_feedback_free_text_is_redacted_and_consent_updated_needs_a_purpose() -> None:
    review = event(type="review", properties={"rating": 2, "text": "call me: bob@shop.example", "sku": "K1"})
    out = normalizer().normalise(orjson.dumps(review), NOW)
    text = out["properties"]["text"]
    assert "bob@" not in text and "sha256:" in text and out["properties"]["rating"] == 2
    checked = EventNormalizer(salt="s", max_bytes=10_000, max_future_ms=0, max_age_ms=10**12,
                              registry=default_registry())  # fmt: skip
    with pytest.raises(InvalidEvent, match=r"rating.*5"):
        checked.normalise(orjson.dumps(event(type="review", properties={"rating": 6})), NOW)
    assert reason_of(event(type="consent_updated")) == "schema_violation"
    assert reason_of(event(type="consent_updated", consent={"other": True})) == "schema_violation"
    stated = normalizer().normalise(
        orjson.dumps(event(type="consent_updated", consent={"marketing": False})), NOW
    )
    assert stated["consent"] == {"marketing": False}


def test_e164() -> None:
    assert to_e164("+49 (170) 123-4567") == "+491701234567"
    assert to_e164("0170 1234567", "DE") == "+491701234567"
    assert to_e164("not a phone") == ""


def test_dead_letter_keys_and_placeholders_are_redacted() -> None:
    key = redact_key(b"phone:+49 170 1234567", "s")
    assert key.startswith(b"phone:sha256:") and b"1234567" not in key
    assert redact_key(b"loyalty_id:L1", "s") == b"loyalty_id:L1"
    redacted = orjson.loads(redact_pii(orjson.dumps({"ids": {"email": "unknown", "phone": "n/a"}}), "s"))
    assert redacted["ids"] == {"email": "", "phone": ""}  # placeholders never link after a replay


def test_already_hashed_ids_are_kept() -> None:
    digest = "d82e064926ffccc141e22462caa3992b5fb4c011016a1720b0c1e13d5e2014fa"  # sha256("test-salt:a@b.c")
    out = normalizer().normalise(orjson.dumps(event(ids={"email": f"sha256:{digest}"})), NOW)
    assert out["ids"]["email"] == digest


def test_configured_patterns_make_identifier_values_placeholders() -> None:
    from pipeline.config import Settings

    settings = Settings(blocked_id_patterns="guest-[0-9]+, test@.*")  # type: ignore[call-arg]
    n = EventNormalizer.from_settings(settings)
    ids = n.normalise(orjson.dumps(event(ids={"anonymous_id": "guest-17", "device_id": "d1"})), NOW)["ids"]
    assert ids == {"device_id": "d1"}
    assert n.normalise(orjson.dumps(event(ids={"anonymous_id": "guest-17x"})), NOW)["ids"] == {
        "anonymous_id": "guest-17x"
    }
    with pytest.raises(InvalidEvent) as err:
        n.normalise(orjson.dumps(event(ids={"anonymous_id": "guest-1"})), NOW)
    assert err.value.reason == "blocked_identifier"
    with pytest.raises(ValueError, match="not a regular expression"):
        Settings(blocked_id_patterns="([")  # type: ignore[call-arg]
