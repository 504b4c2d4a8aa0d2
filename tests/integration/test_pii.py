"""Raw email, phone and payment token never get past ingest: every topic and table is searched."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from pipeline.config import Settings
from pipeline.kafka.admin import admin_client
from tests.conftest import o2o, query, query_each

pytestmark = pytest.mark.integration

RAW = {"email": "Carla.Secret@Example.org", "phone": "+49 170 5550199", "payment_token": "tok_RAWCARD4242"}
NEEDLES = [b"Carla.Secret", b"carla.secret", b"5550199", b"RAWCARD4242"]


def events() -> list[bytes]:
    good = {
        "event_id": "pii-1", "source": "pos", "type": "purchase", "occurred_at": "2026-11-01T10:00:00Z",
        "ids": {"loyalty_id": "L9", **RAW},
        "properties": {"transaction_id": "t9", "store_id": "s1", "revenue": 10, "currency": "EUR",
                       "note": "receipt to carla.secret@example.org"},
    }  # fmt: skip
    login = {
        "event_id": "pii-2", "source": "web", "type": "login", "occurred_at": "2026-11-01T09:00:00Z",
        "ids": {"anonymous_id": "c-pii", "email": RAW["email"]},
    }  # fmt: skip
    bad_type = {**good, "event_id": "pii-3", "type": "teleport"}
    no_consent = {**login, "event_id": "pii-4", "consent": {"analytics": False}}
    truncated = orjson.dumps(good)[:-40]
    return [
        orjson.dumps(good),
        orjson.dumps(login),
        orjson.dumps(bad_type),
        orjson.dumps(no_consent),
        truncated,
    ]


def all_messages(settings: Settings) -> list[tuple[str, bytes]]:
    """Every message (key, value, headers) of every topic under the prefix except the raw ones."""
    admin = admin_client(settings)
    topics = admin.list_topics(timeout=10).topics
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "pii-scan"})
    left: dict[tuple[str, int], int] = {}  # partition -> its end offset, until read up to it
    assignment = []
    for name, meta in topics.items():
        if not name.startswith(settings.topic_prefix) or ".raw." in f".{name}":
            continue
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
            if high > low:
                left[(name, p)] = high
                assignment.append(TopicPartition(name, p, low))
    consumer.assign(assignment)  # all at once: one fetch serves every partition
    found: list[tuple[str, bytes]] = []
    idle = 0
    # offsets can have gaps (compaction): read up to each end offset, not a count of messages
    while left and idle < 5:
        batch = consumer.consume(1000, timeout=1)
        idle = 0 if batch else idle + 1
        for m in batch:
            if m.error() is not None:
                continue
            name, partition = m.topic() or "", m.partition() or 0
            if (m.offset() or 0) + 1 >= left.get((name, partition), 0):
                left.pop((name, partition), None)
            found.append((name, (m.key() or b"") + b"|" + (m.value() or b"")))
            for _k, v in m.headers() or []:
                found.append((name, v or b""))
    consumer.close()
    assert not left, f"partitions not read to their end: {sorted(left)}"
    return found


def test_no_raw_pii_after_ingest(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "pii.jsonl"
    path.write_bytes(b"\n".join(events()) + b"\n")
    o2o(settings, "init")
    o2o(settings, "produce", "--file", str(path))
    o2o(settings, "run", "all", "--drain")

    messages = all_messages(settings)
    assert any(name.endswith("dlq") for name, _ in messages), "the bad events must be dead letters"
    assert any(name.endswith("events.valid") for name, _ in messages)
    for name, blob in messages:
        for needle in NEEDLES:
            assert needle not in blob, f"raw PII {needle!r} in topic {name}"

    tables = [r[0] for r in query(settings, "SELECT name FROM system.tables WHERE database = '{db}'")]
    assert {"events_store", "dead_letters_store", "identities_store"} <= set(tables)
    contents = query_each(settings, [f"SELECT * FROM {{db}}.{table}" for table in tables])
    for table, rows in zip(tables, contents, strict=True):
        text = orjson.dumps(rows, default=str)
        for needle in NEEDLES:
            assert needle not in text, f"raw PII {needle!r} in table {table}"

    reasons = sorted(r[0] for r in query(settings, "SELECT reason FROM {db}.dead_letters"))
    assert reasons == ["malformed_json", "unknown_type"]
    kept = query(settings, "SELECT event_id, person_id, session_id FROM {db}.events WHERE event_id = 'pii-4'")
    assert kept == [("pii-4", "", "")]  # stored without analytics consent, never linked
    ids = query(
        settings, "SELECT id_type FROM {db}.identities WHERE id_type IN ('email','phone','payment_token')"
    )
    assert sorted(r[0] for r in ids) == ["email", "payment_token", "phone"]
