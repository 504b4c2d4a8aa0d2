"""Sending contract events to the raw topics (used by ``o2o produce`` and ``o2o simulate``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson

from pipeline.config import Settings
from pipeline.kafka.clients import DeliveryTracker, flush_within, make_producer, produce
from pipeline.kafka.topics import raw_key, raw_topic_name

__all__ = ["raw_key", "raw_topic_for", "raw_topic_name", "send_events"]


def raw_topic_for(settings: Settings, event: Any) -> str:
    """The raw topic of an event's source; unknown sources go to the web topic, ingest rejects them."""
    return settings.topic(raw_topic_name(event))


def send_events(
    settings: Settings,
    events: Iterable[dict[str, Any] | bytes],
    on_sent: Callable[[int], None] | None = None,
) -> int:
    """Produce events (dicts, or raw JSON lines as bytes) to their raw topics; returns the count.

    Raw lines are sent as they are, so that malformed input reaches ingest
    and ends as a dead letter rather than being dropped here.
    """
    delivery = DeliveryTracker()
    producer = make_producer(settings, on_delivery=delivery)
    count = 0
    for item in events:
        if isinstance(item, bytes):
            try:
                parsed: Any = orjson.loads(item)
            except orjson.JSONDecodeError:
                parsed = None
            value = item
        else:
            parsed, value = item, orjson.dumps(item)
        produce(producer, raw_topic_for(settings, parsed), value, raw_key(parsed))
        count += 1
        if count % 10000 == 0:
            producer.poll(0)
            if on_sent is not None:
                on_sent(10000)
    flush_within(producer, "the events")
    if on_sent is not None:
        on_sent(count % 10000)
    delivery.raise_if_failed()
    return count
