"""What ``o2o status`` shows: the broker, every stage's processes and lag, and ClickHouse.

:func:`gather` reads everything once into plain values; the command renders
them as tables or JSON. A part that does not answer (the broker down,
ClickHouse away) is reported with its error, the rest is still shown.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from pipeline.config import Settings
from pipeline.errors import KafkaUnavailable, PipelineError
from pipeline.kafka import topics
from pipeline.kafka.admin import admin_client
from pipeline.kafka.lag import PartitionLag, StageLag, measure_lag, near_retention, topic_retention

log = logging.getLogger(__name__)

RECENT_SECONDS = 300
"""The window of the rates ``o2o status`` shows (dead letters, very late events, freshness)."""


@dataclass(frozen=True)
class Member:
    """One process of a stage: a member of the stage's consumer group."""

    client_id: str
    host: str
    partitions: tuple[str, ...]


@dataclass(frozen=True)
class StageStatus:
    """A stage's consumer group: its state, its processes, its lag and how old its backlog is."""

    stage: str
    group: str
    state: str
    members: tuple[Member, ...]
    lag: StageLag
    oldest_age_seconds: float | None
    near_retention: tuple[str, ...]


@dataclass(frozen=True)
class ClickHouseStatus:
    """The analyst side: parts and merges, and what was stored recently."""

    error: str | None = None
    read: bool = True
    parts: tuple[tuple[str, int, int], ...] = ()
    merges: int = 0
    events_stored: int = 0
    very_late_events: int = 0
    freshness_p50: float | None = None
    freshness_p99: float | None = None


@dataclass(frozen=True)
class Status:
    """One reading of the whole pipeline."""

    at: float
    bootstrap_servers: str
    broker_error: str | None = None
    cluster_id: str | None = None
    controller: int | None = None
    brokers: tuple[str, ...] = ()
    stages: tuple[StageStatus, ...] = ()
    dead_letters_recent: int | None = None
    clickhouse: ClickHouseStatus = field(default_factory=ClickHouseStatus)

    @property
    def alerts(self) -> list[str]:
        """What needs a person: an unreachable part, lost records, a backlog near the retention."""
        found = [f"Kafka: {self.broker_error}"] if self.broker_error else []
        for stage in self.stages:
            if stage.lag.lost:
                found.append(
                    f"{stage.stage}: {stage.lag.lost} records deleted by retention before it read them"
                )
            found += [f"{stage.stage}: {what}" for what in stage.near_retention]
        if self.clickhouse.error:
            found.append(f"ClickHouse: {self.clickhouse.error}")
        return found


def gather(settings: Settings, stages: Sequence[str] | None = None, clickhouse: bool = True) -> Status:
    """Read the broker, the stages' groups and ClickHouse once."""
    now = time.time()
    stages = settings.stages if stages is None else stages
    analyst_side = _clickhouse(settings) if clickhouse else ClickHouseStatus(read=False)
    admin = admin_client(settings)
    try:
        metadata = admin.list_topics(timeout=5)
    except KafkaException as exc:
        error = f"unreachable ({exc.args[0].str()})"
        return Status(now, settings.bootstrap_servers, broker_error=error, clickhouse=analyst_side)
    brokers = tuple(
        f"{b.id} {b.host}:{b.port}" for b in sorted(metadata.brokers.values(), key=lambda b: b.id)
    )
    try:
        lags = measure_lag(settings, stages, acknowledged=True, admin=admin)
        inputs = sorted({p.topic for lag in lags.values() for p in lag.partitions})
        retention = topic_retention(admin, inputs)
        dead_letters = _recent_count(admin, settings.topic(topics.DLQ), metadata.topics, now)
    except (KafkaException, KafkaUnavailable) as exc:
        # the broker answered but a later request failed (a partition leader away, a
        # timeout): report it, as an alert, and let --watch go on to the next reading
        reason = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
        return Status(
            now, settings.bootstrap_servers, broker_error=f"answered, but reading offsets failed ({reason})",
            cluster_id=metadata.cluster_id, controller=metadata.controller_id, brokers=brokers,
            clickhouse=analyst_side,
        )  # fmt: skip
    groups = _groups(admin, [settings.group(stage) for stage in stages])
    stage_rows = []
    for stage in stages:
        lag = lags[stage]
        state, members = groups.get(settings.group(stage), ("unknown", ()))
        close = near_retention(lag, retention, settings.lag_alert_share, now)
        warnings = tuple(
            f"{p.topic}[{p.partition}]: oldest unacknowledged record is {age / 3600:.1f} h old, "
            f"retention {keep / 3600:.1f} h"
            for p, age, keep in close
        )
        stage_rows.append(
            StageStatus(stage, settings.group(stage), state, members, lag, lag.oldest_age(now), warnings)
        )
    return Status(
        now,
        settings.bootstrap_servers,
        cluster_id=metadata.cluster_id,
        controller=metadata.controller_id,
        brokers=brokers,
        stages=tuple(stage_rows),
        dead_letters_recent=dead_letters,
        clickhouse=analyst_side,
    )


def _groups(admin: AdminClient, group_ids: list[str]) -> dict[str, tuple[str, tuple[Member, ...]]]:
    described: dict[str, tuple[str, tuple[Member, ...]]] = {}
    for group_id, future in admin.describe_consumer_groups(group_ids, request_timeout=10).items():
        try:
            group = future.result()
        except KafkaException as exc:
            described[group_id] = (f"unknown ({exc.args[0].str()})", ())
            continue
        members = tuple(
            Member(
                m.client_id, m.host, _partition_list(m.assignment.topic_partitions if m.assignment else [])
            )
            for m in group.members
        )
        state = getattr(group.state, "name", str(group.state)).lower()
        state = "absent" if state == "dead" else state  # Kafka's word for a group it does not know
        described[group_id] = (state, members)
    return described


def _partition_list(assigned: Sequence[TopicPartition]) -> tuple[str, ...]:
    """``topic[0,2]`` per topic, in name order."""
    by_topic: dict[str, list[int]] = {}
    for tp in assigned:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return tuple(f"{t}[{','.join(map(str, sorted(ps)))}]" for t, ps in sorted(by_topic.items()))


def _recent_count(admin: AdminClient, topic: str, known: dict[str, Any], now: float) -> int | None:
    """Messages written to ``topic`` in the last :data:`RECENT_SECONDS`."""
    if topic not in known:
        return None
    partitions = [TopicPartition(topic, p) for p in known[topic].partitions]
    since = int((now - RECENT_SECONDS) * 1000)
    at = admin.list_offsets({tp: OffsetSpec.for_timestamp(since) for tp in partitions}, request_timeout=10)
    ends = admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions}, request_timeout=10)  # type: ignore[no-untyped-call]
    total = 0
    for tp, future in at.items():
        first = future.result().offset  # -1: nothing written since
        end = ends[tp].result().offset
        total += end - first if first >= 0 else 0
    return total


def _clickhouse(settings: Settings) -> ClickHouseStatus:
    from pipeline.clickhouse.query_server import query_any
    from pipeline.sink.metrics import merges_query, parts_query

    db = settings.clickhouse_database
    try:
        _cols, parts = query_any(settings, parts_query(db))
        _cols, merges = query_any(settings, merges_query(db))
        _cols, recent = query_any(
            settings,
            f"SELECT count(), countIf(late = 1), "
            f"quantile(0.5)(dateDiff('millisecond', received_at, inserted_at)) / 1000, "
            f"quantile(0.99)(dateDiff('millisecond', received_at, inserted_at)) / 1000 "
            f"FROM {db}.events_store WHERE inserted_at > now64(3) - INTERVAL {RECENT_SECONDS} SECOND",
        )
    except PipelineError as exc:
        return ClickHouseStatus(error=str(exc))
    stored, late, p50, p99 = recent[0]
    return ClickHouseStatus(
        parts=tuple((str(t), int(n), int(r)) for t, n, r in parts),
        merges=int(merges[0][0]),
        events_stored=int(stored),
        very_late_events=int(late),
        freshness_p50=float(p50) if stored else None,
        freshness_p99=float(p99) if stored else None,
    )


def _partition_json(p: PartitionLag) -> dict[str, Any]:
    return {**asdict(p), "lag": p.lag, "lost": p.lost}


def as_json(status: Status) -> dict[str, Any]:
    """The status as JSON-ready values (``o2o status --json``)."""
    return {
        "at": status.at,
        "kafka": {
            "bootstrap_servers": status.bootstrap_servers,
            "error": status.broker_error,
            "cluster_id": status.cluster_id,
            "controller": status.controller,
            "brokers": list(status.brokers),
            "dead_letters_last_5_min": status.dead_letters_recent,
        },
        "stages": [
            {
                "stage": s.stage,
                "group": s.group,
                "state": s.state,
                "processes": [
                    {"client_id": m.client_id, "host": m.host, "partitions": list(m.partitions)}
                    for m in s.members
                ],
                "lag": s.lag.lag,
                "lost_to_retention": s.lag.lost,
                "oldest_unacknowledged_seconds": s.oldest_age_seconds,
                "newest_acknowledged_at": s.lag.newest_acknowledged_at,
                "near_retention": list(s.near_retention),
                "partitions": [_partition_json(p) for p in s.lag.partitions],
            }
            for s in status.stages
        ],
        "clickhouse": {
            "error": status.clickhouse.error,
            "read": status.clickhouse.read,
            "parts": [{"table": t, "parts": n, "rows": r} for t, n, r in status.clickhouse.parts],
            "merges": status.clickhouse.merges,
            "events_stored_last_5_min": status.clickhouse.events_stored,
            "very_late_events_last_5_min": status.clickhouse.very_late_events,
            "received_to_stored_p50_seconds": status.clickhouse.freshness_p50,
            "received_to_stored_p99_seconds": status.clickhouse.freshness_p99,
        },
        "alerts": status.alerts,
    }
