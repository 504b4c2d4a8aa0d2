"""What ingest itself writes, read from its output topics, and how stages stop on a refused delivery.

Journeys and the analyst views drop repeated events too, so ingest's
duplicate window is checked on ``events.valid``, which only ingest writes.
A refused delivery is caused for real: the broker rejects messages larger
than a topic's ``max.message.bytes``.
"""

from __future__ import annotations

import re
import subprocess
import time
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from pipeline.config import Settings
from pipeline.kafka import topics
from pipeline.kafka.admin import admin_client, committed_offsets, end_offsets, ensure_topics, partition_counts
from pipeline.kafka.envelopes import unpack
from pipeline.model.rows import EVENTS
from tests.conftest import o2o, start_o2o

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


def page_view(event_id: str, occurred_ms: int, **extra: Any) -> bytes:
    """A valid web page view at ``occurred_ms``."""
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(occurred_ms / 1000)) + "Z"
    doc = {"event_id": event_id, "source": "web", "type": "page_view", "occurred_at": when,
           "ids": {"anonymous_id": f"anon-{event_id}"}, **extra}  # fmt: skip
    return orjson.dumps(doc)


def produce_raw(settings: Settings, messages: list[tuple[bytes, int]]) -> None:
    """Put (value, Kafka timestamp) pairs on partition 0 of the raw web topic."""
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for value, timestamp in messages:
        producer.produce(settings.topic(topics.RAW_TOPICS["web"]), value, partition=0, timestamp=timestamp)
    assert producer.flush(10) == 0


def records(
    settings: Settings, name: str, since: dict[tuple[str, int], int] | None = None
) -> list[dict[str, Any]]:
    """Every record on topic ``name`` (after the offsets ``since``), progress marks left out."""
    out = [
        record
        for _key, value in messages(settings, settings.topic(name), since)
        for record in unpack(value or b"[]")
    ]
    return [r for r in out if "event_id" in r]


def messages(
    settings: Settings, topic: str, since: dict[tuple[str, int], int] | None = None
) -> list[tuple[bytes | None, bytes | None]]:
    """(key, value) of every message on ``topic`` after the offsets ``since``, read to its end."""
    ends = end_offsets(settings, [topic])
    starts = since or {}
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "reader",
                         "enable.auto.commit": False})  # fmt: skip
    wanted = {tp: end for tp, end in ends.items() if end > starts.get(tp, 0)}
    consumer.assign([TopicPartition(t, p, starts.get((t, p), 0)) for t, p in wanted])
    out: list[tuple[bytes | None, bytes | None]] = []
    deadline = time.monotonic() + 15
    try:
        while wanted and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            out.append((message.key(), message.value()))
            if (message.offset() or 0) + 1 >= wanted[(message.topic() or "", message.partition() or 0)]:
                del wanted[(message.topic() or "", message.partition() or 0)]
    finally:
        consumer.close()
    assert not wanted, f"could not read {topic} to its end"
    return out


def counts_logged(stderr: str) -> dict[str, int]:
    """The counters ingest logs when it stops."""
    found = re.search(r"ingest counts: (\{.*\})", stderr)
    assert found, stderr[-2000:]
    return {k: int(v) for k, v in re.findall(r"'([^']+)': (\d+)", found.group(1))}


def test_ingest_drops_repeats_keeps_the_kafka_time_and_applies_consent(settings: Settings) -> None:
    ensure_topics(settings)
    now = int(time.time() * 1000)
    kafka_time = now - 2 * HOUR_MS  # a backfill: received two hours ago, processed now
    no_consent = {"consent": {"analytics": False}}
    produce_raw(settings, [
        (page_view("e1", kafka_time - HOUR_MS), kafka_time),
        (page_view("e1", kafka_time - HOUR_MS), kafka_time + 1),  # the same event sent again
        (page_view("e2", kafka_time - HOUR_MS, **no_consent), kafka_time + 2),
    ])  # fmt: skip

    refused = settings.model_copy(update={"keep_without_analytics_consent": False})
    ran = o2o(refused, "run", "ingest", "--drain", timeout=60)
    valid = records(settings, topics.VALID)
    assert [r["event_id"] for r in valid] == ["e1"]  # once, though sent twice
    assert valid[0]["received_at"] == kafka_time  # the Kafka timestamp, not the processing time
    assert records(settings, EVENTS.topic) == []  # without consent and not kept: nowhere
    assert counts_logged(ran.stderr) == {"duplicate": 1, "no_analytics_consent": 1, "valid": 1}

    # the same input read again by another ingest group that keeps events without consent
    before = end_offsets(settings, [settings.topic(topics.VALID), settings.topic(EVENTS.topic)])
    kept = settings.model_copy(
        update={
            "keep_without_analytics_consent": True,
            "consumer_group_prefix": f"{settings.topic_prefix}kept.",
        }
    )
    ran = o2o(kept, "run", "ingest", "--drain", timeout=60)
    assert [r["event_id"] for r in records(settings, topics.VALID, before)] == ["e1"]
    stored = records(settings, EVENTS.topic, before)
    assert [(r["event_id"], r["person_id"], r["session_id"]) for r in stored] == [("e2", "", "")]
    assert stored[0]["received_at"] == kafka_time + 2
    assert counts_logged(ran.stderr) == {"duplicate": 1, "no_analytics_consent": 1, "valid": 1}


def test_a_drained_ingest_leaves_every_origin_marked_as_read_to_its_end(settings: Settings) -> None:
    # identity holds events until every stream is marked or goes idle, and a silent ingest's
    # quiet is a stall (pipeline/identity/reorder.py): a drain that ended before its last
    # marks went out would leave identity holding what it was given, for good
    ensure_topics(settings)
    now = int(time.time() * 1000)
    produce_raw(settings, [(page_view("m1", now - HOUR_MS), now)])
    o2o(settings, "run", "ingest", "--drain", timeout=60)
    last: dict[int, dict[str, bool]] = {}
    for _key, value in messages(settings, settings.topic(topics.VALID)):
        for record in unpack(value or b"[]"):
            if record.get("record") == "progress":
                last[record["partition"]] = record["marks"]
    counts = partition_counts(settings)
    origins = {
        f"{source}/{p}": True
        for source, name in topics.RAW_TOPICS.items()
        for p in range(counts[settings.topic(name)])
    }
    assert last == dict.fromkeys(range(counts[settings.topic(topics.VALID)]), origins)


def set_max_message_bytes(settings: Settings, names: list[str], value: str | None) -> None:
    """Make the broker refuse messages above ``value`` bytes on these topics (None: the default again)."""
    op = AlterConfigOpType.SET if value is not None else AlterConfigOpType.DELETE
    entry = ConfigEntry("max.message.bytes", value or "", incremental_operation=op)
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n, incremental_configs=[entry]) for n in names]
    admin = admin_client(settings)  # held: the futures fail once the client is gone
    for future in admin.incremental_alter_configs(resources).values():
        future.result(timeout=10)


def test_refused_delivery_stops_ingest_with_2_and_identity_with_70_committing_nothing(
    settings: Settings,
) -> None:
    ensure_topics(settings)
    now = int(time.time() * 1000)
    produce_raw(settings, [(page_view("r1", now - HOUR_MS), now)])
    raw = topics.raw_topics(settings)
    valid = settings.topic(topics.VALID)

    set_max_message_bytes(settings, [valid], "64")
    refused = o2o(settings, "run", "ingest", "--drain", timeout=60, check=False)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "not delivered" in refused.stderr
    assert committed_offsets(settings, settings.group("ingest"), raw) == {}

    set_max_message_bytes(settings, [valid], None)
    o2o(settings, "run", "ingest", "--drain", timeout=60)  # the restart processes the same input
    web = settings.topic(topics.RAW_TOPICS["web"])
    assert committed_offsets(settings, settings.group("ingest"), raw) == {(web, 0): 1}
    assert [r["event_id"] for r in records(settings, topics.VALID)] == ["r1"]

    # identity may write its state; every output topic refuses
    outputs = [
        name for name in partition_counts(settings)
        if name not in (*raw, valid) and not name.endswith("-changelog")
    ]  # fmt: skip
    set_max_message_bytes(settings, outputs, "64")
    identity = start_o2o(settings, "run", "identity")
    try:
        _out, stderr = identity.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        identity.kill()
        _out, stderr = identity.communicate()
        raise AssertionError(f"identity did not stop on a refused delivery\n{stderr[-3000:]}") from None
    assert identity.returncode == 70, stderr[-3000:]
    assert "exiting without acknowledging" in stderr
    # a batch of progress marks only (ingest repeats them every second) may be done and
    # committed; the event whose outputs were refused only if an earlier batch held it
    # for reordering, and then it is kept in identity's state, to be released again
    done = committed_offsets(settings, settings.group("identity"), [valid])
    left = [r["event_id"] for r in records(settings, topics.VALID, since=done)]
    assert left == ["r1"] or (left == [] and "r1" in held_events(settings)), left


def held_events(settings: Settings) -> set[str]:
    """Event ids identity's reorder buffer holds, as its state changelog says (the last value per key)."""
    last = {
        key: orjson.loads(value) if value else None
        for key, value in messages(settings, settings.topic("identity-identity_pending-changelog"))
    }
    return {event["event_id"] for event in last.values() if event}
