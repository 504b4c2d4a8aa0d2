"""What ``o2o bench`` watches while the pipeline runs, and what it counts afterwards.

* :class:`OffsetSampler`: the offsets each stage's consumer group has
  committed, sampled over time (through consumers that never join the groups).
* :class:`ProcessSampler`: CPU seconds and memory of ``run all``'s processes,
  by stage, and of the Kafka broker.
* :func:`topic_census`: every topic under the prefix (changelogs included)
  read from the start: messages, records, payload bytes, bytes on disk, and
  when each event passed some topics (the live bench's hops).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
from confluent_kafka import Consumer, TopicPartition

from pipeline.bench_stats import FORK_SERVER, Partition, TopicCount, cumulative, stage_label
from pipeline.config import Settings
from pipeline.kafka.clients import client_config

log = logging.getLogger(__name__)


def prefixed_topics(settings: Settings) -> list[str]:
    """Every topic under the configured prefix, faust's changelog and internal topics included."""
    from pipeline.kafka.admin import admin_client

    names = admin_client(settings).list_topics(timeout=10).topics
    return sorted(name for name in names if name.startswith(settings.topic_prefix))


def envelope_topics(settings: Settings) -> set[str]:
    """Topics whose messages are batch envelopes (the rest hold one record per message)."""
    from pipeline.kafka import topics

    single = {*topics.RAW_TOPICS.values(), *topics.ONE_RECORD_PER_MESSAGE, topics.DLQ}
    return {settings.topic(spec.name) for spec in topics.TOPICS if spec.name not in single}


@dataclass
class OffsetSampler:
    """Committed offsets of stage groups over time: ``series[stage]`` = [(seconds, {partition: offset})]."""

    settings: Settings
    groups: dict[str, str]
    partitions: list[TopicPartition] = field(default_factory=list)
    series: dict[str, list[tuple[float, dict[Partition, int]]]] = field(default_factory=dict)
    _consumers: dict[str, Consumer] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from pipeline.kafka.admin import admin_client

        metadata = admin_client(self.settings).list_topics(timeout=10).topics
        self.partitions = [
            TopicPartition(name, p)
            for name in sorted(metadata)
            if name.startswith(self.settings.topic_prefix) and not name.endswith("-changelog")
            for p in metadata[name].partitions
        ]
        for stage, group in self.groups.items():
            self._consumers[stage] = Consumer(
                client_config(
                    self.settings, **{"group.id": group, "enable.auto.commit": False, "log_level": 3}
                )
            )
            self.series[stage] = []

    def sample(self, seconds: float) -> None:
        """Record every group's committed offsets at ``seconds`` since launch (errors skip a sample)."""
        for stage, consumer in self._consumers.items():
            try:
                committed = consumer.committed(self.partitions, timeout=5)
            except Exception as exc:  # a busy coordinator: the next sample will do
                log.debug("offsets of %s not read: %s", stage, exc)
                continue
            self.series[stage].append(
                (seconds, {(tp.topic, tp.partition): tp.offset for tp in committed if tp.offset >= 0})
            )

    def last(self, stage: str) -> dict[Partition, int]:
        """The latest committed offsets of ``stage`` ({} before any commit)."""
        samples = self.series.get(stage) or []
        return samples[-1][1] if samples else {}

    def close(self) -> None:
        """Close the consumers (they never joined a group)."""
        for consumer in self._consumers.values():
            consumer.close()
        self._consumers.clear()


def broker_process(settings: Settings) -> psutil.Process | None:
    """The Kafka broker's process: the local stack's, else whoever listens on the bootstrap port."""
    from pipeline.stack.local_kafka import LocalKafka

    status = LocalKafka(settings).status()
    if status.pid is not None:
        return psutil.Process(status.pid)
    port = int(settings.bootstrap_servers.split(",")[0].rpartition(":")[2])
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid)
    return None


def broker_log_dir(process: psutil.Process | None) -> Path | None:
    """The broker's ``log.dirs`` (first one), read from the properties file on its command line."""
    if process is None:
        return None
    try:
        args = process.cmdline()
    except psutil.Error:
        return None
    for arg in reversed(args):
        if arg.endswith(".properties") and Path(arg).is_file():
            for line in Path(arg).read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip() in ("log.dirs", "log.dir") and value.strip():
                    return Path(value.strip().split(",")[0])
    return None


@dataclass
class ProcessSampler:
    """CPU seconds and memory of a process tree (by stage label) and of the broker."""

    root: psutil.Process
    broker: psutil.Process | None = None
    cpu: dict[int, tuple[str, float]] = field(default_factory=dict)
    peak_rss: int = 0
    # summed proportional set size: a page shared by several stage processes (the
    # interpreter, shared libraries) counts once in all, not once per process
    peak_pss: int = 0
    peak_rss_of: dict[int, int] = field(default_factory=dict)
    broker_peak_rss: int = 0
    broker_cpu_start: float | None = None
    broker_cpu: float = 0.0
    _procs: dict[int, psutil.Process] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.broker is not None:
            try:
                times = self.broker.cpu_times()
                self.broker_cpu_start = times.user + times.system
            except psutil.Error:
                self.broker = None

    def sample(self) -> None:
        """Read CPU times and RSS of the tree now (processes that are gone keep their last value)."""
        try:
            found = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            found = []
        rss = pss = 0
        for proc in found:
            proc = self._procs.setdefault(proc.pid, proc)
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    memory = proc.memory_full_info()
                    rss += memory.rss
                    pss += memory.pss
                    self.peak_rss_of[proc.pid] = max(self.peak_rss_of.get(proc.pid, 0), memory.rss)
                    label = self.cpu[proc.pid][0] if proc.pid in self.cpu else "?"
                    # a process just started may not show its command line yet, or (forked,
                    # not yet exec'ed, or forked by run all's fork server and not titled yet)
                    # still shows its parent's: look again until it differs
                    if label in ("?", FORK_SERVER) or (
                        proc.pid != self.root.pid and label == self._root_label()
                    ):
                        label = stage_label(proc.cmdline())
            except psutil.Error:
                continue
            self.cpu[proc.pid] = (label, times.user + times.system)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)
        if self.broker is not None and self.broker_cpu_start is not None:
            try:
                times = self.broker.cpu_times()
                self.broker_cpu = times.user + times.system - self.broker_cpu_start
                self.broker_peak_rss = max(self.broker_peak_rss, self.broker.memory_info().rss)
            except psutil.Error:
                pass

    def _root_label(self) -> str:
        return self.cpu[self.root.pid][0] if self.root.pid in self.cpu else "?"

    def by_label(self) -> dict[str, tuple[int, float, int]]:
        """(processes, CPU seconds, summed peak RSS of its processes) per label."""
        out: dict[str, tuple[int, float, int]] = {}
        for pid, (label, seconds) in self.cpu.items():
            count, total, peak = out.get(label, (0, 0.0, 0))
            out[label] = (count + 1, total + seconds, peak + self.peak_rss_of.get(pid, 0))
        return out


@dataclass(frozen=True)
class Census:
    """Every topic's :class:`TopicCount`, and running record totals of some topics' partitions."""

    counts: list[TopicCount]
    running: dict[Partition, tuple[int, list[int]]]
    complete: bool
    disk_known: bool
    # per topic asked for: event_id -> Kafka timestamp (ms) of the first message carrying it
    stamps: dict[str, dict[str, int]] = field(default_factory=dict)


def topic_census(
    settings: Settings, running_for: Sequence[str], idle_s: float = 10.0, stamps_for: Sequence[str] = ()
) -> Census:
    """Read every topic under the prefix from its start to its current end (a bench step).

    The bench's own passthrough topic is left out.

    Records are counted by unpacking batch envelopes on the pipeline's own
    topics; other topics (raw, compacted, changelogs, faust's internals) hold
    one record per message. ``running_for`` topics also get running record
    totals by offset. ``stamps_for`` topics also get, for every record with
    an ``event_id``, the timestamp of the first message that carried it (for
    an activation decision that was not delayed: its ``trigger_event_id``). A
    partition that yields nothing for ``idle_s`` seconds ends the read early
    (``complete`` False).
    """
    from confluent_kafka import OFFSET_BEGINNING

    from pipeline.kafka.envelopes import unpack

    names = [name for name in prefixed_topics(settings) if name != settings.topic("passthrough")]
    starts, ends = _offsets(settings, names)
    envelopes = envelope_topics(settings)
    wanted = set(running_for)
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": settings.group("bench-census"),
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "fetch.max.bytes": 64 << 20,
                "log_level": 3,
            },
        )
    )
    left = {tp for tp, end in ends.items() if end > starts.get(tp, 0)}
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in sorted(left)])
    read = dict.fromkeys(ends, 0)
    records = dict.fromkeys(ends, 0)
    payload = dict.fromkeys(ends, 0)
    per_message: dict[Partition, list[int]] = {tp: [] for tp in ends if tp[0] in wanted}
    stamps: dict[str, dict[str, int]] = {name: {} for name in stamps_for}
    last_progress = time.monotonic()
    while left and time.monotonic() - last_progress < idle_s:
        for message in consumer.consume(10_000, timeout=0.5):
            if message.error() is not None:
                continue
            tp = (message.topic() or "", int(message.partition() or 0))
            value = message.value() or b""
            unpacked = unpack(value) if tp[0] in envelopes and value else None
            n = len(unpacked) if unpacked is not None else 1
            if tp[0] in stamps and value:
                _stamp(stamps[tp[0]], message.timestamp()[1], unpacked, value)
            read[tp] += 1
            records[tp] += n
            payload[tp] += len(value) + len(message.key() or b"")
            if tp in per_message:
                per_message[tp].append(n)
            if int(message.offset() or 0) + 1 >= ends[tp]:
                left.discard(tp)
            last_progress = time.monotonic()
    consumer.close()
    log_dir = broker_log_dir(broker_process(settings))
    counts = []
    for name in names:
        tps = [tp for tp in ends if tp[0] == name]
        disk = _disk_bytes(log_dir, tps) if log_dir is not None else None
        counts.append(
            TopicCount(
                topic=name,
                messages=sum(ends[tp] - starts.get(tp, 0) for tp in tps),
                read=sum(read[tp] for tp in tps),
                records=sum(records[tp] for tp in tps),
                payload_bytes=sum(payload[tp] for tp in tps),
                disk_bytes=disk,
            )
        )
    running = {tp: (starts.get(tp, 0), cumulative(counts_)) for tp, counts_ in per_message.items()}
    return Census(counts, running, complete=not left, disk_known=log_dir is not None, stamps=stamps)


def _stamp(into: dict[str, int], at_ms: int, records: list[dict[str, Any]] | None, value: bytes) -> None:
    """Note ``at_ms`` for the event ids of a message (its unpacked ``records``, or one JSON record)."""
    if records is None:
        try:
            records = [orjson.loads(value)]
        except orjson.JSONDecodeError:
            return
    for record in records:
        if not isinstance(record, dict):
            continue
        event_id = record.get("event_id")
        if "trigger_event_id" in record and record.get("decided_at") == record.get("triggered_at"):
            event_id = record["trigger_event_id"]  # an activation decision made at its trigger
        if isinstance(event_id, str):
            into.setdefault(event_id, at_ms)


def _offsets(settings: Settings, names: Iterable[str]) -> tuple[dict[Partition, int], dict[Partition, int]]:
    """(start offsets, end offsets) of every partition of ``names``."""
    from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]

    from pipeline.kafka.admin import admin_client, end_offsets

    names = list(names)
    ends = end_offsets(settings, names)
    admin = admin_client(settings)
    request = {TopicPartition(t, p): OffsetSpec.earliest() for t, p in ends}  # type: ignore[no-untyped-call]
    starts: dict[Partition, int] = {}
    if request:
        for tp, future in admin.list_offsets(request, request_timeout=10).items():
            starts[(tp.topic, tp.partition)] = max(0, future.result().offset)
    return starts, ends


def _disk_bytes(log_dir: Path, partitions: Iterable[Partition]) -> int:
    """Size of the log segments (``*.log``) of ``partitions`` under the broker's log dir."""
    total = 0
    for topic, partition in partitions:
        folder = log_dir / f"{topic}-{partition}"
        if folder.is_dir():
            total += sum(f.stat().st_size for f in folder.glob("*.log"))
    return total
