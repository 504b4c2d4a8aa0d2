"""How far each stage's consumer group is behind its input, in records and in time.

A stuck stage and a quiet one look the same from inside: both handle
nothing. From outside they differ. The stuck stage's committed offsets stay
below the end of its input, and the first record it has not acknowledged
grows older. :func:`measure_lag` reads both for every input partition:

- the log's start and end offsets, in one ListOffsets request each;
- the group's committed offset, through a consumer that never joins it;
- with ``times``, when the first unacknowledged record was written
  (``oldest_unacknowledged_at``). With ``acknowledged``, also when the newest
  acknowledged one was written (``newest_acknowledged_at``). Kafka keeps no commit
  time, so this is the nearest it tells.

A committed offset below the log's start means records were deleted by
retention before the stage read them: :attr:`PartitionLag.lost`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from pipeline.config import Settings
from pipeline.errors import KafkaUnavailable
from pipeline.kafka.admin import admin_client, group_offsets, offsets_consumer, partition_offsets
from pipeline.kafka.clients import client_config
from pipeline.kafka.topics import stage_topics

Partition = tuple[str, int]


@dataclass(frozen=True)
class PartitionLag:
    """One input partition of a stage: the log's offsets, the group's, and record times."""

    topic: str
    partition: int
    start: int
    end: int
    committed: int | None
    oldest_unacknowledged_at: float | None = None
    newest_acknowledged_at: float | None = None

    @property
    def lag(self) -> int:
        """Records the group has still to acknowledge (all the log holds when it never committed)."""
        position = self.start if self.committed is None else max(self.committed, self.start)
        return max(0, self.end - position)

    @property
    def lost(self) -> int:
        """Records retention deleted before the group acknowledged them."""
        return 0 if self.committed is None else max(0, self.start - self.committed)


@dataclass(frozen=True)
class StageLag:
    """Every input partition of one stage's consumer group."""

    stage: str
    group: str
    partitions: tuple[PartitionLag, ...]

    @property
    def lag(self) -> int:
        """Records not acknowledged, over every input partition."""
        return sum(p.lag for p in self.partitions)

    @property
    def lost(self) -> int:
        """Records deleted by retention before this stage acknowledged them."""
        return sum(p.lost for p in self.partitions)

    def oldest_age(self, now: float) -> float | None:
        """Seconds since the oldest unacknowledged record was written (None: nothing waits)."""
        times = [p.oldest_unacknowledged_at for p in self.partitions if p.lag and p.oldest_unacknowledged_at]
        return max(0.0, now - min(times)) if times else None

    @property
    def newest_acknowledged_at(self) -> float | None:
        """When the newest record this stage acknowledged was written (read with ``acknowledged``)."""
        times = [p.newest_acknowledged_at for p in self.partitions if p.newest_acknowledged_at is not None]
        return max(times) if times else None


class LagReaders:
    """The consumers a repeated lag measurement keeps open, instead of making new ones each time.

    A stage's lag watch measures every ``O2O_LAG_CHECK_SECONDS``; with fresh
    consumers each check opened and closed connections to the brokers.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._committed: dict[str, Consumer] = {}
        self._times: Consumer | None = None

    def committed(self, group: str) -> Consumer:
        """The consumer that asks what ``group`` committed."""
        if group not in self._committed:
            self._committed[group] = offsets_consumer(self.settings, group)
        return self._committed[group]

    def times(self) -> Consumer:
        """The consumer that reads single records for their write time."""
        if self._times is None:
            self._times = times_consumer(self.settings)
        return self._times

    def close(self) -> None:
        """Close every consumer."""
        for consumer in [*self._committed.values(), *([self._times] if self._times else [])]:
            consumer.close()
        self._committed, self._times = {}, None


def measure_lag(
    settings: Settings,
    stages: Sequence[str],
    times: bool = True,
    acknowledged: bool = False,
    admin: AdminClient | None = None,
    timeout: float = 10.0,
    readers: LagReaders | None = None,
) -> dict[str, StageLag]:
    """The lag of each of ``stages``; raises KafkaUnavailable when the broker does not answer.

    ``readers`` keeps the consumers open between calls (see :class:`LagReaders`).
    """
    admin = admin or admin_client(settings)
    try:
        metadata = admin.list_topics(timeout=timeout).topics
        inputs = {
            stage: [
                (t, p) for t in stage_topics(settings, stage) if t in metadata for p in metadata[t].partitions
            ]
            for stage in stages
        }
        every = sorted({tp for parts in inputs.values() for tp in parts})
        ends = partition_offsets(admin, every, timeout=timeout)
        starts = partition_offsets(admin, every, earliest=True, timeout=timeout)
        result: dict[str, StageLag] = {}
        for stage, parts in inputs.items():
            group = settings.group(stage)
            asking = readers.committed(group) if readers is not None else None
            committed = group_offsets(settings, group, parts, timeout, consumer=asking)
            rows = [PartitionLag(t, p, starts[(t, p)], ends[(t, p)], committed.get((t, p))) for t, p in parts]
            timed = _timed(settings, rows, times, acknowledged, readers)
            result[stage] = StageLag(stage, group, tuple(timed))
        return result
    except KafkaException as exc:
        raise KafkaUnavailable(
            f"cannot read offsets from Kafka at {settings.bootstrap_servers}: {exc}"
        ) from exc


def _timed(
    settings: Settings, rows: list[PartitionLag], times: bool, acknowledged: bool, readers: LagReaders | None
) -> list[PartitionLag]:
    if not (times or acknowledged):
        return rows
    first = {(r.topic, r.partition): max(r.committed or 0, r.start) for r in rows if times and r.lag}
    last = {
        (r.topic, r.partition): r.committed - 1
        for r in rows
        if acknowledged and r.committed is not None and r.committed > r.start
    }
    reader = readers.times() if readers is not None else None
    first_at, last_at = (
        record_times(settings, first, consumer=reader),
        record_times(settings, last, consumer=reader),
    )
    return [
        PartitionLag(r.topic, r.partition, r.start, r.end, r.committed,
                     first_at.get((r.topic, r.partition)), last_at.get((r.topic, r.partition)))
        for r in rows
    ]  # fmt: skip


def times_consumer(settings: Settings) -> Consumer:
    """A consumer for :func:`record_times`: it joins no group and commits nothing."""
    return Consumer(
        client_config(
            settings,
            **{
                "group.id": settings.group("lag-reader"),
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 50,
                "log_level": 3,
            },
        )
    )


def record_times(
    settings: Settings,
    positions: Mapping[Partition, int],
    timeout: float = 5.0,
    consumer: Consumer | None = None,
) -> dict[Partition, float]:
    """When the record at each position (or the next one the log holds) was written, in epoch seconds.

    One consumer reads one record of every partition; a partition with
    nothing at or after its position is left out. ``consumer`` (from
    :func:`times_consumer`) is used and left open, its assignment cleared.
    """
    if not positions:
        return {}
    owned = consumer is None
    consumer = consumer or times_consumer(settings)
    found: dict[Partition, float] = {}
    try:
        consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in positions.items()])
        pending = set(positions)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(len(pending), timeout=0.2):
                key = (message.topic() or "", message.partition() or 0)
                if key not in pending:
                    continue
                error = message.error()
                if error is None:
                    found[key] = message.timestamp()[1] / 1000
                elif error.code() != KafkaError._PARTITION_EOF:
                    continue  # a transient fetch error: the next poll tries again
                pending.discard(key)
                consumer.pause([TopicPartition(*key)])
    finally:
        if owned:
            consumer.close()
        else:
            consumer.unassign()
    return found


def topic_retention(admin: AdminClient, names: Iterable[str], timeout: float = 10.0) -> dict[str, int]:
    """Each topic's ``retention.ms`` as the broker has it (-1: kept for ever)."""
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    if not resources:
        return {}
    retention: dict[str, int] = {}
    for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
        entry = future.result().get("retention.ms")
        retention[resource.name] = int(entry.value) if entry is not None and entry.value is not None else -1
    return retention


def near_retention(
    lag: StageLag, retention: Mapping[str, int], share: float, now: float
) -> list[tuple[PartitionLag, float, float]]:
    """Partitions whose oldest unacknowledged record is older than ``share`` of its topic's retention.

    Each as (partition, age in seconds, retention in seconds). Past the
    retention the broker deletes those records before the stage reads them.
    """
    close = []
    for p in lag.partitions:
        keep_ms = retention.get(p.topic, -1)
        if p.lag and p.oldest_unacknowledged_at is not None and keep_ms > 0:
            age = max(0.0, now - p.oldest_unacknowledged_at)
            if age > share * keep_ms / 1000:
                close.append((p, age, keep_ms / 1000))
    return close
