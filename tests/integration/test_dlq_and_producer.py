"""EventProducer and the dead-letter tools against the real broker and chDB.

Valid events go in through the Python producer library, bad lines through
``o2o produce``; after a drain, ``o2o dlq list`` shows the reasons, ``o2o dlq
replay`` puts the original bytes back on their raw topics, and a second drain
double-counts nothing.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config import Settings
from pipeline.errors import InvalidEvent
from pipeline.event_producer import DeliveryReport, EventProducer
from pipeline.kafka.admin import end_offsets
from pipeline.kafka.topics import raw_topics
from tests.conftest import REPO, o2o, query, settings_env

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
BAD_LINES = {
    "malformed_json": b'{"event_id": "bad-1", "source": "web", ',
    "unknown_type": orjson.dumps(
        {"event_id": "bad-2", "source": "pos", "type": "teleport", "occurred_at": NOW.isoformat(),
         "ids": {"loyalty_id": "L9"}}
    ),
    "missing_identifier": orjson.dumps(
        {"event_id": "bad-3", "source": "web", "type": "page_view", "occurred_at": NOW.isoformat(), "ids": {}}
    ),
}  # fmt: skip


def good(n: int) -> dict[str, Any]:
    return {
        "event_id": f"good-{n}",
        "source": "web",
        "type": "page_view",
        "occurred_at": (NOW + timedelta(minutes=n)).isoformat(),
        "ids": {"anonymous_id": "c1", "user_id": "u1"},
        "context": {"page": {"url": "https://shop.example/"}},
    }


def o2o_dlq(settings: Settings, *args: str) -> dict[str, Any]:
    """``o2o dlq ... --format json``; the parsed output."""
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "dlq", *args, "--format", "json"],
        env=settings_env(settings), cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, f"o2o dlq {' '.join(args)}: {proc.stdout}\n{proc.stderr[-4000:]}"
    answer: dict[str, Any] = orjson.loads(proc.stdout)
    return answer


def raw_messages_after(
    settings: Settings, start: dict[tuple[str, int], int]
) -> list[tuple[str, bytes, bytes | None, dict[str, bytes]]]:
    """(topic, value, key, headers) of raw-topic messages between ``start`` and the current end."""
    from confluent_kafka import TopicPartition

    from pipeline.kafka.clients import make_consumer

    ends = end_offsets(settings, raw_topics(settings))
    todo = {tp: end for tp, end in ends.items() if end > start.get(tp, 0)}
    out: list[tuple[str, bytes, bytes | None, dict[str, bytes]]] = []
    if not todo:
        return out
    consumer = make_consumer(settings, f"test-{uuid.uuid4().hex}")
    consumer.assign([TopicPartition(t, p, start.get((t, p), 0)) for t, p in todo])
    try:
        for _ in range(120):
            for message in consumer.consume(100, 0.5):
                assert message.error() is None, message.error()
                tp = (message.topic(), message.partition())
                if tp in todo and message.offset() < todo[tp]:
                    headers = {k: v or b"" for k, v in message.headers() or []}
                    out.append((tp[0], message.value(), message.key(), headers))
                    if message.offset() + 1 >= todo[tp]:
                        del todo[tp]
            if not todo:
                break
    finally:
        consumer.close()
    assert not todo, f"could not read to the end of {todo}"
    return out


def produce_and_drain(settings: Settings, tmp_path: Path) -> None:
    """Three valid events through EventProducer, the bad lines through `o2o produce`, then a drain."""
    o2o(settings, "init")
    reports: list[DeliveryReport] = []
    with EventProducer(settings, validate=True, on_delivery=reports.append) as producer:
        for n in range(3):
            producer.send(good(n))
        with pytest.raises(InvalidEvent):
            producer.send(orjson.loads(BAD_LINES["unknown_type"]))
    assert (producer.sent, producer.delivered, producer.failed) == (3, 3, 0)
    assert sorted(r.event_id for r in reports) == ["good-0", "good-1", "good-2"]
    assert {r.topic for r in reports} == {settings.topic("raw.web")} and all(r.offset >= 0 for r in reports)

    bad_file = tmp_path / "bad.jsonl"
    bad_file.write_bytes(b"\n".join(BAD_LINES.values()) + b"\n")
    o2o(settings, "produce", "--file", str(bad_file))
    o2o(settings, "run", "all", "--drain")
    assert query(settings, "SELECT count() FROM {db}.events") == [(3,)]


def test_dead_letters_listed_and_replayed_byte_for_byte(settings: Settings, tmp_path: Path) -> None:
    produce_and_drain(settings, tmp_path)

    listed = o2o_dlq(settings, "list")
    assert listed["total"] == 3
    assert listed["by_reason"] == dict.fromkeys(BAD_LINES, 1)
    assert {(g["reason"], g["source"]) for g in listed["groups"]} == {
        ("malformed_json", "web"), ("unknown_type", "pos"), ("missing_identifier", "web"),
    }  # fmt: skip
    assert len(listed["samples"]) == 3
    prefix = settings.topic("raw.")
    assert all(len(s["payload"]) <= 120 and s["origin"].startswith(prefix) for s in listed["samples"])
    only_pos = o2o_dlq(settings, "list", "--source", "pos", "--limit", "0")
    assert (only_pos["total"], only_pos["samples"]) == (1, [])

    # a dry run sends nothing
    before = end_offsets(settings, raw_topics(settings))
    dry = o2o_dlq(settings, "replay", "--reason", "malformed_json", "--dry-run")
    assert (dry["dry_run"], dry["resent"], dry["by_reason"]) == (True, 1, {"malformed_json": 1})
    assert end_offsets(settings, raw_topics(settings)) == before

    # the replay puts the original bytes back on their raw topics, with their keys
    replayed = o2o_dlq(settings, "replay")
    assert (replayed["resent"], replayed["by_reason"]) == (3, dict.fromkeys(BAD_LINES, 1))
    back = raw_messages_after(settings, before)
    assert sorted(value for _t, value, _k, _h in back) == sorted(BAD_LINES.values())
    by_value = {value: (topic, key, headers) for topic, value, key, headers in back}
    assert by_value[BAD_LINES["unknown_type"]][:2] == (settings.topic("raw.pos"), b"loyalty_id:L9")
    assert by_value[BAD_LINES["malformed_json"]][:2] == (settings.topic("raw.web"), None)
    dlq_topic = settings.topic("dlq").encode()
    assert all(headers["o2o.replay_of"].startswith(dlq_topic) for _t, _k, headers in by_value.values())


def test_replayed_dead_letters_count_once_after_another_drain(settings: Settings, tmp_path: Path) -> None:
    produce_and_drain(settings, tmp_path)
    assert o2o_dlq(settings, "replay")["resent"] == 3

    # still bad: each becomes a dead letter again, at its new raw position; nothing else changes
    o2o(settings, "run", "all", "--drain", timeout=180)
    assert query(settings, "SELECT count() FROM {db}.events") == [(3,)]
    assert query(settings, "SELECT count(), uniqExact(payload) FROM {db}.dead_letters") == [(6, 3)]
    assert o2o_dlq(settings, "list")["by_reason"] == dict.fromkeys(BAD_LINES, 2)

    # replaying again sends each payload once, however often it was rejected
    again = o2o_dlq(settings, "replay", "--dry-run")
    assert (again["resent"], again["duplicates_skipped"], again["scanned"]) == (3, 3, 6)
