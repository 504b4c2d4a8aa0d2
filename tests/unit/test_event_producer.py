"""EventProducer without a broker: keying, topics, validation, back-off and delivery reports."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from pipeline.clickhouse.format import sql_string
from pipeline.config import Settings, load_settings
from pipeline.errors import DeliveryFailed, InvalidEvent, KafkaUnavailable
from pipeline.event_producer import DeliveryReport, EventProducer
from pipeline.ingest.dead_letters import DeadLetter, DeadLetterFilter, parse_since, replay


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


class FakeProducer:
    """Records produced messages; delivers them on poll/flush; can refuse with BufferError."""

    def __init__(self, full_for: int = 0, fail: bool = False) -> None:
        self.produced: list[tuple[str, bytes | None, bytes | None]] = []
        self.pending: list[tuple[Any, FakeMessage]] = []
        self.full_for = full_for  # BufferErrors to raise before accepting
        self.fail = fail
        self.polls: list[float] = []

    def produce(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, *, on_delivery: Any = None
    ) -> None:
        if self.full_for > 0:
            self.full_for -= 1
            raise BufferError("Local: Queue full")
        self.produced.append((topic, value, key))
        self.pending.append((on_delivery, FakeMessage(topic, 0, len(self.produced) - 1)))

    def poll(self, timeout: float = -1) -> int:
        self.polls.append(timeout)
        served = len(self.pending)
        for callback, message in self.pending:
            callback("Broker: boom" if self.fail else None, message)
        self.pending.clear()
        return served

    def flush(self, timeout: float = -1) -> int:
        self.poll(0)
        return 0


@pytest.fixture
def settings() -> Settings:
    return load_settings(topic_prefix="u.", bootstrap_servers="127.0.0.1:1")


def event(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": "e1",
        "source": "web",
        "type": "page_view",
        "occurred_at": datetime.now(UTC).isoformat(),
        "ids": {"anonymous_id": "c1"},
    }
    doc.update(over)
    return doc


def test_keyed_by_strongest_id_and_sent_to_the_source_topic(settings: Settings) -> None:
    fake = FakeProducer()
    producer = EventProducer(settings, producer=fake)
    producer.send(event(ids={"anonymous_id": "c1", "user_id": "u1", "email": "a@b.c"}))
    producer.send(event(event_id="e2", source="pos", type="purchase", ids={"loyalty_id": "L1"}))
    producer.send(event(event_id="e3", source="geofence", type="enter", ids={"device_id": "d1"}))
    producer.send(event(event_id="e4", source="mars", ids={}))  # unknown source: web topic, no key
    topics = [t for t, _v, _k in fake.produced]
    keys = [k for _t, _v, k in fake.produced]
    assert topics == ["u.raw.web", "u.raw.pos", "u.raw.geofence", "u.raw.web"]
    assert keys == [b"user_id:u1", b"loyalty_id:L1", b"device_id:d1", None]
    assert orjson.loads(fake.produced[1][1] or b"")["event_id"] == "e2"
    assert producer.sent == 4


def test_topic_prefix_override(settings: Settings) -> None:
    fake = FakeProducer()
    producer = EventProducer(settings, topic_prefix="shop.", producer=fake)
    producer.send(event(source="app", type="app_open"))
    assert fake.produced[0][0] == "shop.raw.app"


def test_validation_raises_before_sending(settings: Settings) -> None:
    fake = FakeProducer()
    producer = EventProducer(settings, validate=True, producer=fake)
    with pytest.raises(InvalidEvent) as bad_type:
        producer.send(event(type="teleport"))
    assert bad_type.value.reason == "unknown_type"
    with pytest.raises(InvalidEvent) as no_ids:
        producer.send(event(ids={}))
    assert no_ids.value.reason == "missing_identifier"
    with pytest.raises(InvalidEvent):
        producer.send(event(occurred_at="yesterday"))
    assert fake.produced == [] and producer.sent == 0
    producer.send(event())
    assert len(fake.produced) == 1


def test_without_validation_bad_events_travel_to_ingest(settings: Settings) -> None:
    fake = FakeProducer()
    EventProducer(settings, producer=fake).send(event(type="teleport"))
    assert len(fake.produced) == 1


def test_unserialisable_event_is_invalid(settings: Settings) -> None:
    with pytest.raises(InvalidEvent):
        EventProducer(settings, producer=FakeProducer()).send(event(properties={"x": object()}))


def test_buffer_full_backs_off_by_polling(settings: Settings) -> None:
    fake = FakeProducer(full_for=3)
    producer = EventProducer(settings, producer=fake, max_block_seconds=5)
    producer.send(event())
    assert len(fake.produced) == 1
    assert len([t for t in fake.polls if t > 0]) == 3  # one back-off poll per refusal
    assert producer.sent == 1


def test_buffer_full_for_too_long_raises_kafka_unavailable(settings: Settings) -> None:
    fake = FakeProducer(full_for=10**9)
    producer = EventProducer(settings, producer=fake, max_block_seconds=0.2)
    with pytest.raises(KafkaUnavailable):
        producer.send(event())
    assert producer.sent == 0


def test_delivery_reports_and_counters(settings: Settings) -> None:
    reports: list[DeliveryReport] = []
    fake = FakeProducer()
    with EventProducer(settings, producer=fake, on_delivery=reports.append) as producer:
        producer.send(event())
        producer.send(event(event_id="e2"))
    assert producer.delivered == 2 and producer.failed == 0
    assert [(r.event_id, r.topic, r.ok) for r in reports] == [
        ("e1", "u.raw.web", True),
        ("e2", "u.raw.web", True),
    ]
    with pytest.raises(RuntimeError):
        producer.send(event())


def test_failed_delivery_raises_on_exit(settings: Settings) -> None:
    fake = FakeProducer(fail=True)
    with pytest.raises(DeliveryFailed, match="e1"), EventProducer(settings, producer=fake) as producer:
        producer.send(event())
    assert producer.failed == 1 and producer.first_error is not None
    assert producer.first_error.error == "Broker: boom"


def test_kafka_config_keyword_arguments_become_dotted(settings: Settings, monkeypatch: Any) -> None:
    seen: dict[str, Any] = {}

    class Recording(FakeProducer):
        def __init__(self, conf: dict[str, Any]) -> None:
            super().__init__()
            seen.update(conf)

    monkeypatch.setattr("confluent_kafka.Producer", Recording)
    EventProducer(settings, linger_ms=5, **{"client.id": "pos"})
    assert seen["linger.ms"] == 5 and seen["client.id"] == "pos"
    assert seen["enable.idempotence"] is True and seen["acks"] == "all"
    assert seen["compression.type"] == "lz4"


# -- dead-letter replay logic (no broker) ------------------------------------------------


def letter(value: bytes, reason: str, topic: str, offset: int, received_at: int = 1000) -> DeadLetter:
    headers = [
        ("o2o.reason", reason.encode()),
        ("o2o.detail", b"x"),
        ("o2o.topic", topic.encode()),
        ("o2o.partition", b"0"),
        ("o2o.offset", str(offset).encode()),
        ("o2o.received_at", str(received_at).encode()),
    ]
    return DeadLetter.from_parts(value, b"k", headers, 0, offset)


class RecordingSender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.finished = False

    def send(self, topic: str, value: bytes, key: bytes | None, headers: Any) -> None:
        self.sent.append((topic, value, key))

    def finish(self) -> None:
        self.finished = True


def test_replay_filters_and_sends_identical_payloads_once(settings: Settings) -> None:
    letters = [
        letter(b"{bad", "malformed_json", "u.raw.web", 1, received_at=1000),
        letter(b"{bad", "malformed_json", "u.raw.web", 7, received_at=5000),  # rejected again after a replay
        letter(b'{"a":1}', "unknown_type", "u.raw.pos", 2, received_at=2000),
        letter(b"{x", "malformed_json", "other.raw.web", 3),  # not this deployment's raw topic
    ]
    sender = RecordingSender()
    result = replay(settings, DeadLetterFilter(), letters=letters, sender=sender)
    assert sender.sent == [("u.raw.web", b"{bad", b"k"), ("u.raw.pos", b'{"a":1}', b"k")]
    assert sender.finished
    assert dict(result.resent) == {"malformed_json": 1, "unknown_type": 1}
    assert (result.duplicates, result.not_replayable, result.matched) == (1, 1, 4)

    pos_only = replay(settings, DeadLetterFilter(source="pos"), dry_run=True, letters=letters)
    assert dict(pos_only.resent) == {"unknown_type": 1}
    recent = replay(settings, DeadLetterFilter(since_ms=1500), dry_run=True, letters=letters)
    assert recent.total == 2
    assert replay(settings, DeadLetterFilter(reason="nope"), dry_run=True, letters=letters).total == 0


def test_since_and_sql_quoting() -> None:
    assert parse_since("1970-01-01T00:00:01Z") == 1000
    assert parse_since("1970-01-01T00:00:01") == 1000  # naive means UTC
    assert parse_since("1970-01-02") == 86_400_000
    with pytest.raises(ValueError):
        parse_since("last tuesday")
    assert sql_string("it's \\ ok") == "'it\\'s \\\\ ok'"


def test_json_schemas_are_used_when_installed(settings: Settings, monkeypatch: Any) -> None:
    import sys
    import types

    checked: list[dict[str, Any]] = []

    class Registry:
        @classmethod
        def load(cls) -> Registry:
            return cls()

        def validate(self, doc: dict[str, Any]) -> None:
            checked.append(doc)
            if doc.get("properties") == {"bad": True}:
                raise InvalidEvent("schema_violation", "$.properties.bad: not allowed")

    fake = types.ModuleType("pipeline.ingest.schemas")
    fake.SchemaRegistry = Registry  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pipeline.ingest.schemas", fake)
    producer = EventProducer(settings, validate=True, producer=FakeProducer())
    with pytest.raises(InvalidEvent, match="not allowed"):
        producer.send(event(properties={"bad": True}))
    producer.send(event())
    assert len(checked) == 2 and producer.sent == 1

    monkeypatch.setitem(sys.modules, "pipeline.ingest.schemas", None)  # not installed: normaliser only
    producer = EventProducer(settings, validate=True, producer=FakeProducer())
    producer.send(event(properties={"bad": True}))
    assert producer.sent == 1


def test_list_groups_by_reason_and_source(settings: Settings) -> None:
    from pipeline.ingest.dead_letters import list_dead_letters

    seen: list[str] = []

    def fake_query(_settings: Settings, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        seen.append(sql)
        if "GROUP BY" in sql:
            return [], [
                ("malformed_json", "u.raw.web", 2, "t1", "t2"),
                ("unknown_type", "u.raw.pos", 1, "t1", "t1"),
            ]
        return [], [("malformed_json", "bad", "u.raw.web", 1, 7, "t2", "x" * 300)]

    summary = list_dead_letters(settings, DeadLetterFilter(reason="it's", source="web"), 5, query=fake_query)
    assert "reason = 'it\\'s'" in seen[0] and "topic = 'u.raw.web'" in seen[0] and "LIMIT 5" in seen[1]
    doc = summary.as_json()
    assert doc["total"] == 3 and doc["by_reason"] == {"malformed_json": 2, "unknown_type": 1}
    assert [(g["reason"], g["source"]) for g in doc["groups"]] == [
        ("malformed_json", "web"),
        ("unknown_type", "pos"),
    ]
    assert doc["samples"][0]["origin"] == "u.raw.web:1:7" and len(doc["samples"][0]["payload"]) == 120
