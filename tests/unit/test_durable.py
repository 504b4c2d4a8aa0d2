"""The commit protocol's order, without a broker: outputs flushed, then state, and a failure stops it.

The producer here records calls; the protocol against the real broker is
proven by tests/integration/test_commit_protocol.py and test_chaos.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.config import load_settings
from pipeline.errors import DeliveryFailed
from pipeline.runtime.durable import DurableWriter
from pipeline.runtime.faults import FaultPlan
from pipeline.runtime.state import BatchCache, ChangelogRecord


class RecordingProducer:
    """Records produce and flush calls; can fail deliveries or leave messages unflushed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail_on_flush: int | None = None
        self.leave = 0
        self.on_delivery: Any = None

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None, **kw: Any) -> None:
        self.calls.append(("produce", topic))

    def flush(self, timeout: float) -> int:
        flushes = sum(1 for kind, _ in self.calls if kind == "flush")
        self.calls.append(("flush", None))
        if self.fail_on_flush == flushes:
            self.on_delivery("broker said no", None)
        return self.leave


def _writer(producer: RecordingProducer) -> DurableWriter:
    settings = load_settings(topic_prefix="t.")
    writer = DurableWriter(
        settings, "journeys", {"events": 2, "sessions": 2}, FaultPlan("journeys"), producer
    )  # type: ignore[arg-type]
    producer.on_delivery = writer.tracker
    return writer


def _state(n: int) -> list[ChangelogRecord]:
    return [
        ChangelogRecord("t.journeys-journeys_state-changelog", 0, f"p{i}".encode(), b"{}") for i in range(n)
    ]


def test_outputs_are_flushed_before_any_state_record_is_produced() -> None:
    producer = RecordingProducer()
    emissions = [("events", f"e{i}", {"event_id": f"e{i}"}) for i in range(5)]
    _writer(producer).commit_step(emissions, _state(3), [])
    kinds = [kind if kind == "flush" else topic for kind, topic in producer.calls]
    first_flush = kinds.index("flush")
    assert all(k == "t.events" for k in kinds[:first_flush])
    assert kinds[first_flush + 1 :] == ["t.journeys-journeys_state-changelog"] * 3 + ["flush"]


def test_a_refused_output_stops_the_step_before_the_state() -> None:
    producer = RecordingProducer()
    producer.fail_on_flush = 0
    with pytest.raises(DeliveryFailed):
        _writer(producer).commit_step([("events", "e1", {"event_id": "e1"})], _state(2), [])
    assert not any(topic and "changelog" in topic for _kind, topic in producer.calls)


def test_unflushed_records_count_as_not_durable() -> None:
    producer = RecordingProducer()
    producer.leave = 1
    with pytest.raises(DeliveryFailed, match="not acknowledged"):
        _writer(producer).commit_step([("events", "e1", {"event_id": "e1"})], _state(1), [])


def test_a_step_left_unsettled_flushes_its_state_with_the_next_outputs_or_at_settle() -> None:
    producer = RecordingProducer()
    writer = _writer(producer)
    writer.commit_step([("events", "e1", {"event_id": "e1"})], _state(2), [], settle=False)
    assert [kind for kind, _ in producer.calls].count("flush") == 1  # the outputs only
    writer.commit_step([("events", "e2", {"event_id": "e2"})], _state(1), [], settle=False)
    # the second step's one flush is the first step's state's too: produced before it
    kinds = [kind if kind == "flush" else topic for kind, topic in producer.calls]
    assert kinds[-3:] == ["t.events", "flush", "t.journeys-journeys_state-changelog"]
    writer.settle()  # before the batch is acknowledged
    assert producer.calls[-1] == ("flush", None)
    writer.settle()  # nothing left unsettled: no flush
    assert [kind for kind, _ in producer.calls].count("flush") == 3


def test_batch_cache_writes_each_changed_key_once_with_its_partition_and_tombstones() -> None:
    store: dict[str, Any] = {"gone": {"x": 1}, "kept": {"y": 2}}
    cache = BatchCache(store, "t.changelog", partitions=4)
    cache["a"] = {"v": 1}
    cache["a"] = {"v": 2}
    del cache["gone"]
    records = cache.write_back()
    assert store == {"kept": {"y": 2}, "a": {"v": 2}}
    assert [(r.key, r.value) for r in records] == [(b"a", b'{"v":2}'), (b"gone", None)]
    from pipeline.kafka.envelopes import partition_for

    assert [r.partition for r in records] == [partition_for(b"a", 4), partition_for(b"gone", 4)]
    assert cache.write_back() == []


def test_a_key_written_and_deleted_within_one_batch_costs_no_changelog_record() -> None:
    store: dict[str, Any] = {"held": [1]}
    cache = BatchCache(store, "t.changelog", partitions=4)
    cache["brief"] = [2]  # an event held and released in the same batch
    del cache["brief"]
    del cache["held"]  # held by an earlier batch: its record must be deleted
    assert [(r.key, r.value) for r in cache.write_back()] == [(b"held", None)]
    assert store == {}
