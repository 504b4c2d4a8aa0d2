"""Size limits that line up: an event near O2O_MAX_EVENT_BYTES is stored, larger ones are dead letters."""

from __future__ import annotations

import orjson
import pytest

from pipeline.config import Settings
from pipeline.kafka import topics
from pipeline.kafka.clients import make_producer
from pipeline.model.limits import record_bytes
from pipeline.producer import send_events
from tests.conftest import at, o2o, query, story_event

pytestmark = pytest.mark.integration


def sized_event(event_id: str, size: int) -> bytes:
    """A valid web page view of exactly ``size`` bytes (a long property fills it)."""
    doc = story_event(event_id, "web", "page_view", at(minutes=1), {"anonymous_id": f"anon-{event_id}"},
                      properties={"blob": ""})  # fmt: skip
    filler = size - len(orjson.dumps(doc))
    doc["properties"] = {"blob": "x" * filler}
    raw = orjson.dumps(doc)
    assert len(raw) == size
    return raw


def test_an_event_near_the_limit_is_stored_and_larger_ones_are_dead_letters(settings: Settings) -> None:
    o2o(settings, "init")
    limit = settings.max_event_bytes
    huge = record_bytes(settings) + 1000  # over what a dead letter may carry, under Kafka's message limit
    send_events(settings, [sized_event("near", limit - 100), sized_event("over", limit + 100)])
    producer = make_producer(settings)
    producer.produce(settings.topic(topics.RAW_TOPICS["web"]), sized_event("huge", huge), b"anon-huge")
    assert producer.flush(30) == 0
    o2o(settings, "run", "all", "--drain", timeout=240)

    (stored,) = query(settings, "SELECT event_id, length(toString(properties)) FROM {db}.events")
    assert stored[0] == "near" and stored[1] > limit - 1000
    letters = query(settings, "SELECT reason, detail, length(payload) FROM {db}.dead_letters ORDER BY detail")
    assert [(reason, length) for reason, _detail, length in letters] == [
        ("too_large", limit + 100),
        ("too_large", record_bytes(settings)),
    ]
    assert letters[0][1] == f"{limit + 100} bytes, limit {limit}"
    assert letters[1][1] == (
        f"{huge} bytes, limit {limit}; stored truncated to its first {record_bytes(settings)} of {huge} bytes"
    )
