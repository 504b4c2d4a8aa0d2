"""Reading a compacted topic whole, then following it: the newest value per key.

Used for small shared tables that every process of a stage needs in full (the
fitted attribution models, the erasure suppression list): read from the start
up to the end at start-up, then poll for what was published since.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from pipeline.config import Settings

log = logging.getLogger(__name__)


class CompactedReader:
    """The newest JSON value per key of one compacted topic (no consumer group commits)."""

    def __init__(self, settings: Settings, topic: str, group: str) -> None:
        self.settings = settings
        self.topic = settings.topic(topic)
        self.group = settings.group(group)
        self.values: dict[str, Any] = {}
        self._consumer: Any = None
        self._ends: dict[int, int] = {}

    def _open(self, timeout: float = 10.0) -> Any:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        from pipeline.kafka.admin import end_offsets
        from pipeline.kafka.clients import make_consumer

        ends = end_offsets(self.settings, [self.topic], timeout=timeout)
        consumer = make_consumer(self.settings, self.group, **{"enable.auto.commit": False})
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for (_t, p) in ends])
        self._consumer = consumer
        self._ends = {p: end for (_t, p), end in ends.items() if end > 0}
        return consumer

    def load(self, timeout: float = 10.0, whole: bool = False) -> list[tuple[str, Any]]:
        """Read up to the topic's current end; returns the (key, value) pairs read.

        With ``whole``, a topic not read to its end within ``timeout`` raises
        KafkaUnavailable instead of returning what was read by then.
        """
        deadline = time.monotonic() + timeout
        consumer = self._consumer or self._open(timeout)
        left = dict(self._ends)
        taken: list[tuple[str, Any]] = []
        while left and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.5):
                taken += self._take(message)
                partition = message.partition()
                if partition in left and (message.offset() or 0) + 1 >= left[partition]:
                    del left[partition]
        if whole and left:
            from pipeline.errors import KafkaUnavailable

            ends = ", ".join(f"partition {p} up to offset {end}" for p, end in sorted(left.items()))
            raise KafkaUnavailable(f"could not read {self.topic} to its end within {timeout:g} s ({ends})")
        return taken

    def poll(self) -> list[tuple[str, Any]]:
        """What was published since the last call (without waiting)."""
        consumer = self._consumer or self._open()
        taken: list[tuple[str, Any]] = []
        for message in consumer.consume(500, timeout=0):
            taken += self._take(message)
        return taken

    def acknowledge(self) -> None:
        """Commit how far the topic has been read, under this reader's group (no member ever joins it).

        Nothing restarts from it; it tells others how far this reader has
        come (``o2o forget`` waits for the stages to read its suppression).
        """
        from confluent_kafka import KafkaException

        consumer = self._consumer
        if consumer is None:
            return
        positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
        if positions:
            try:
                consumer.commit(offsets=positions, asynchronous=True)
            except KafkaException as exc:  # only a report to others: never stop a stage for it
                log.warning("could not commit the position of %s: %s", self.topic, exc)

    def _take(self, message: Any) -> list[tuple[str, Any]]:
        if message.error() is not None:
            return []
        key = (message.key() or b"").decode()
        raw = message.value()
        if not raw:  # a tombstone: the key is gone
            self.values.pop(key, None)
            return [(key, None)]
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return []
        self.values[key] = value
        return [(key, value)]

    def close(self) -> None:
        """Close the consumer."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
