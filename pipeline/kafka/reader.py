"""Reading whole topics without disturbing anyone: from the first offset to the end, or on and on.

Used by the commands that copy what a topic holds (``o2o dlq replay``,
``o2o replay``). The consumer assigns the partitions itself under a fresh
group id and never commits, so no running stage's group notices it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from pipeline.config import Settings
from pipeline.errors import KafkaUnavailable
from pipeline.kafka.clients import make_consumer


def read_topics(
    settings: Settings,
    names: Sequence[str],
    purpose: str,
    timeout: float = 30.0,
    follow: Callable[[], bool] | None = None,
) -> Iterator[Message]:
    """Every message of ``names`` from each partition's first offset to its end offset at the start.

    With ``follow``, messages written later are read too, for as long as
    ``follow()`` is True. Raises :class:`~pipeline.errors.KafkaUnavailable`
    when a topic is missing or, without ``follow``, no progress is made for
    ``timeout`` seconds.
    """
    group = f"{settings.consumer_group_prefix}{purpose}-{uuid.uuid4().hex[:12]}"
    consumer = make_consumer(settings, group, **{"enable.partition.eof": False})
    try:
        ends, starts = _bounds(consumer, names, timeout)
        if not ends and follow is None:
            return
        consumer.assign(starts)
        last_progress = time.monotonic()
        while follow() if follow is not None else ends:
            messages = consumer.consume(500, 0.5)
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaUnavailable(f"reading {message.topic()}: {error}")
                key = (message.topic() or "", message.partition() or 0)
                offset = message.offset() or 0
                end = ends.get(key)
                if follow is None and (end is None or offset >= end):
                    continue
                yield message
                if end is not None and offset + 1 >= end:
                    del ends[key]
            if messages:
                last_progress = time.monotonic()
                continue
            # gaps (deleted or control records) can hide the last offsets: ask for positions
            for tp in consumer.position([TopicPartition(t, p) for t, p in list(ends)]):
                if tp.offset >= ends.get((tp.topic, tp.partition), 0):
                    ends.pop((tp.topic, tp.partition), None)
            if ends and follow is None and time.monotonic() - last_progress > timeout:
                left = ", ".join(f"{t}[{p}]" for t, p in sorted(ends))
                raise KafkaUnavailable(f"no progress reading for {timeout:g} s; partitions left: {left}")
    finally:
        consumer.close()


def _bounds(
    consumer: Consumer, names: Sequence[str], timeout: float
) -> tuple[dict[tuple[str, int], int], list[TopicPartition]]:
    """(end offset of every non-empty partition, the partitions to assign at their first offset)."""
    try:
        metadata = consumer.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailable(f"cannot reach Kafka: {exc}") from exc
    ends: dict[tuple[str, int], int] = {}
    starts: list[TopicPartition] = []
    for topic in names:
        if topic not in metadata.topics:
            raise KafkaUnavailable(
                f"the topic {topic} does not exist (is the prefix right? `o2o init` creates it)"
            )
        for partition in sorted(metadata.topics[topic].partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            starts.append(TopicPartition(topic, partition, low))
            if high > low:
                ends[(topic, partition)] = high
    return ends, starts
