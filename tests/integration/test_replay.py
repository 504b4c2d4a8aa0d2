"""`o2o replay`: another prefix's raw topics copied into this one, message for message."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter

import pytest

from pipeline.config import Settings
from pipeline.kafka import topics
from pipeline.kafka.admin import partition_counts
from pipeline.kafka.clients import make_producer
from pipeline.kafka.reader import read_topics
from pipeline.producer import send_events
from tests.conftest import at, o2o, start_o2o, story_event

pytestmark = pytest.mark.integration

Copy = tuple[str, bytes | None, bytes | None, int, tuple[tuple[str, bytes], ...]]


def raw_messages(settings: Settings) -> Counter[Copy]:
    """Every raw message of a prefix: source topic, key, value, timestamp and headers."""
    found: Counter[Copy] = Counter()
    for m in read_topics(settings, topics.raw_topics(settings), "test-read"):
        name = (m.topic() or "").removeprefix(settings.topic_prefix)
        found[(name, m.key(), m.value(), m.timestamp()[1], tuple(m.headers() or ()))] += 1
    return found


def events(n: int, first: int = 0) -> list[dict[str, object]]:
    """``n`` contract events spread over every source."""
    sources = ("web", "app", "geofence", "pos")
    return [
        story_event(f"e{i}", sources[i % 4], "page_view" if i % 4 < 2 else "store_enter", at(minutes=i),
                    {"anonymous_id": f"a{i % 7}"}, store_id="s1")
        for i in range(first, first + n)
    ]  # fmt: skip


def new_deployment(settings: Settings, partitions: int) -> Settings:
    """The same broker under a fresh prefix and database, with another partition count."""
    tag = uuid.uuid4().hex[:10]
    return settings.model_copy(
        update={
            "topic_prefix": f"r{tag}.",
            "consumer_group_prefix": f"r{tag}.",
            "clickhouse_database": f"r_{tag}",
            "partitions": partitions,
        }
    )


def test_replay_copies_every_raw_message_into_a_new_prefix(settings: Settings) -> None:
    o2o(settings, "init")
    send_events(settings, [*events(40), b"not json"])
    producer = make_producer(settings)  # as the collector sends: with the receipt time in a header
    producer.produce(settings.topic("raw.app"), b"{}", b"k", headers=[("o2o.received_at", b"1796000000000")])
    assert producer.flush(10) == 0
    fresh = new_deployment(settings, partitions=3)
    o2o(fresh, "init")
    ran = o2o(fresh, "replay", "--from-prefix", settings.topic_prefix)
    said = " ".join(ran.stderr.split())
    assert f"copied 42 messages from {settings.topic_prefix} to {fresh.topic_prefix}" in said, ran.stderr
    assert raw_messages(fresh) == raw_messages(settings)
    assert partition_counts(fresh)[fresh.topic(topics.RAW_TOPICS["web"])] == 3

    refused = o2o(fresh, "replay", "--from-prefix", fresh.topic_prefix, check=False)
    assert refused.returncode == 2 and "the copy would feed itself" in refused.stderr


def test_replay_follow_copies_what_arrives_later_until_stopped(settings: Settings) -> None:
    o2o(settings, "init")
    send_events(settings, events(8))
    fresh = new_deployment(settings, partitions=2)
    o2o(fresh, "init")
    follower = start_o2o(
        fresh, "replay", "--from-prefix", settings.topic_prefix, "--source", "web", "--follow"
    )
    try:
        send_events(settings, events(8, first=100))
        expected = Counter({k: v for k, v in raw_messages(settings).items() if k[0] == "raw.web"})
        deadline = time.monotonic() + 60
        while raw_messages(fresh) != expected and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        os.killpg(follower.pid, signal.SIGTERM)
        _out, err = follower.communicate(timeout=60)
    assert raw_messages(fresh) == expected and sum(expected.values()) == 4
    assert follower.returncode == 0, err[-3000:]
    assert "copied 4 messages" in " ".join(err.split())
