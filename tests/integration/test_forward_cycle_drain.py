"""A merge cycle in journeys' input (identity renaming a person back) drains on the real broker.

Before forward cycles were cut, the hand-overs of such a cycle went round on
journeys' own input topic for ever and ``--drain`` never finished.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from pipeline.config import Settings
from pipeline.identity.stage import IdentityHandler
from pipeline.kafka import topics
from pipeline.kafka.envelopes import pack
from tests.conftest import o2o

pytestmark = pytest.mark.integration

T0 = 1_793_527_200_000  # 2026-11-01 10:00 UTC in ms
MIN = 60_000


def web(event_id: str, at: int, **ids: str) -> dict[str, Any]:
    return {"event_id": event_id, "source": "web", "type": "page_view", "occurred_at": T0 + at, "ids": ids}


def test_journeys_drains_a_rename_back_cycle_within_a_minute(settings: Settings) -> None:
    o2o(settings, "init")
    identity = IdentityHandler()
    identity.bind({"identity_ids": {}, "identity_persons": {}, "identity_pending": {}})  # type: ignore[dict-item]
    # the cookie's person merges into the device's (seen earlier), then an earlier
    # sighting of the cookie renames it back: merges A -> B, then B -> A
    story = [
        web("1", 10 * MIN, anonymous_id="a-cyc"),
        web("2", 5 * MIN, device_id="d-cyc"),
        web("3", 20 * MIN, anonymous_id="a-cyc", device_id="d-cyc"),
        web("4", MIN, anonymous_id="a-cyc"),
    ]
    identified: list[tuple[str, str, dict[str, Any]]] = []
    for event in story:
        out = identity.process([event]) + identity.flush()
        identified += [(t, k, v) for t, k, v in out if t == topics.IDENTIFIED]
    assert [v["record"] for _t, _k, v in identified if "record" in v] == ["merge", "merge"]

    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    messages = pack(identified, {topics.IDENTIFIED: settings.partitions})
    for name, partition, value in messages:
        producer.produce(settings.topic(name), value, partition=partition)
    assert producer.flush(30) == 0

    run = o2o(settings, "run", "journeys", "--drain", timeout=60)  # a livelock fails on the timeout
    # journeys' own input holds the story and a few hand-overs, not hand-overs bouncing for ever
    assert input_messages(settings) <= len(messages) + 4
    assert "forward cycle" in run.stderr  # the cut was logged


def input_messages(settings: Settings) -> int:
    """How many messages journeys' input topic holds now."""
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "forward-cycle-check"})
    try:
        topic = settings.topic(topics.IDENTIFIED)
        ends = [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in range(settings.partitions)
        ]
        return sum(high - low for low, high in ends)
    finally:
        consumer.close()
