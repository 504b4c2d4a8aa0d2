"""Every topic of the pipeline, declared in one place.

Names are given without the configured prefix; :func:`topic_specs` resolves
them for a :class:`~pipeline.config.Settings`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.config import Settings
from pipeline.model.contract import ID_PRIORITY, SOURCES
from pipeline.model.limits import message_bytes
from pipeline.model.rows import ROW_TABLES

DAY_MS = 24 * 3600 * 1000

BOUNDED_KEEPING = {"segment.ms": str(DAY_MS)}
"""Every topic closes a segment at least daily: the broker deletes (or compacts) only closed segments,
so with its default of 7 days a record could outlive ``retention.ms`` by a week."""
COMPACT_WITHIN = {**BOUNDED_KEEPING, "max.compaction.lag.ms": str(DAY_MS), "delete.retention.ms": str(DAY_MS)}
"""Compacted topics: a value a newer one (or a tombstone: ``o2o forget``) replaced is compacted away
within about a day, and the tombstone itself a day after that (docs/identity.md#what-kafka-keeps)."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic: name (without prefix), partitions, retention and cleanup policy."""

    name: str
    purpose: str
    retention_ms: int | None = None  # None: O2O_RETENTION_DAYS (O2O_RAW_RETENTION_DAYS for raw topics)
    cleanup_policy: str = "delete"
    partitions: int | None = None  # None: the configured default
    extra: dict[str, str] = field(default_factory=dict)

    def config(self, settings: Settings) -> dict[str, str]:
        """Topic-level configs sent to the broker."""
        retention = self.retention_ms
        if retention is None:
            days = (
                settings.raw_retention_days if self.name in RAW_TOPICS.values() else settings.retention_days
            )
            retention = int(days * DAY_MS)
        conf = {"cleanup.policy": self.cleanup_policy, "retention.ms": str(retention)}
        conf.update(COMPACT_WITHIN if self.cleanup_policy == "compact" else BOUNDED_KEEPING)
        conf.update(self.extra)
        return conf


RAW_TOPICS = {source: f"raw.{source}" for source in SOURCES}
VALID = "events.valid"
IDENTIFIED = "events.identified"
JOURNEYS = "journeys"
MERGES = "identity.merges"
DLQ = "dlq"
MODELS = "attribution.models"
SUPPRESSIONS = "identity.suppressions"
SEQUENCE = "identity.sequence"
ACTIVATION_HANDOFFS = "activation.handoffs"
ACTIVATIONS = "activations"
ACTIVATION_DELIVERIES = "activation.deliveries"

TOPICS: tuple[TopicSpec, ...] = (
    *(TopicSpec(name, f"raw {source} events from producers") for source, name in RAW_TOPICS.items()),
    TopicSpec(VALID, "validated, normalised events keyed by their strongest identifier"),
    TopicSpec(IDENTIFIED, "events re-keyed by canonical person_id"),
    TopicSpec(JOURNEYS, "touchpoints and conversions per person, for attribution"),
    TopicSpec(
        MERGES,
        "person merges (from -> to), compacted",
        retention_ms=-1,
        cleanup_policy="compact",
    ),
    TopicSpec(DLQ, "dead letters: reason, detail and the original payload", retention_ms=30 * DAY_MS),
    TopicSpec(
        SEQUENCE,
        "validated events in the one order the identity graph applies them (several identity processes)",
        partitions=1,
    ),
    TopicSpec(
        SUPPRESSIONS,
        "erased persons and their hashed identifiers (o2o forget), compacted",
        retention_ms=-1,
        cleanup_policy="compact",
    ),
    TopicSpec(ACTIVATIONS, "activation decisions, one keyed message each (schemas/outputs/activation.json)"),
    TopicSpec(
        ACTIVATION_DELIVERIES,
        "delivery status per activation decision (o2o activations deliver), compacted",
        retention_ms=-1,
        cleanup_policy="compact",
    ),
    TopicSpec(ACTIVATION_HANDOFFS, "a merged person's activation history on its way to the survivor"),
    TopicSpec(
        MODELS,
        "fitted data-driven attribution models, newest per kind (compacted)",
        retention_ms=-1,
        cleanup_policy="compact",
    ),
    *(
        TopicSpec(table.topic, f"rows for ClickHouse table {table.name}")
        for table in ROW_TABLES
        if table.topic not in (DLQ, MODELS, ACTIVATIONS, ACTIVATION_DELIVERIES)
    ),
)


COMPACTED = frozenset(spec.name for spec in TOPICS if spec.cleanup_policy == "compact")
ONE_RECORD_PER_MESSAGE = COMPACTED | {ACTIVATIONS} | frozenset(RAW_TOPICS.values())
"""Topics whose records travel one per Kafka message, keyed, instead of in envelopes.

Compaction needs a keyed message per record; the activation decisions are
read one by one by other systems (``o2o activations tail``, webhooks); the
raw topics carry one contract event per message (activation's ``coupon_issued``).
"""


# The state tables of the faust stages. `o2o init` creates their changelog topics
# up front: a changelog topic faust creates itself at start-up can be missing from
# the first group assignment ("Ignoring missing topic"), and the table then
# waits for the next metadata refresh, minutes later.
STATE_TABLES: dict[str, tuple[str, ...]] = {
    "identity": ("identity_ids", "identity_persons", "identity_pending"),
    "journeys": ("journeys_state", "journeys_watermarks", "journeys_forward"),
    "attribution": ("attribution_paths", "attribution_forward"),
    "activation": ("activation_persons", "activation_partitions", "activation_forward"),
}


def epoch_table(stage: str) -> str:
    """The runtime's own state table of a stateful stage: the epoch each partition runs under."""
    return f"{stage}_epochs"


def stage_input(settings: Settings, stage: str) -> str:
    """The topic (without prefix) whose partitions a faust stage's tables follow."""
    if stage == "identity":
        return SEQUENCE if settings.identity_workers > 1 else VALID
    return {"journeys": IDENTIFIED, "attribution": JOURNEYS, "activation": IDENTIFIED}[stage]


def changelog_specs(settings: Settings) -> list[tuple[str, int, dict[str, str]]]:
    """(full name, partitions, config) of the faust changelog topic of every state table."""
    specs = []
    size = {"max.message.bytes": str(message_bytes(settings))}
    for stage, tables in STATE_TABLES.items():
        partitions = 1 if stage_input(settings, stage) == SEQUENCE else settings.partitions
        for table in (*tables, epoch_table(stage)):
            config = {"cleanup.policy": "compact", **COMPACT_WITHIN, **size}
            specs.append((f"{settings.group(stage)}-{table}-changelog", partitions, config))
    return specs


def topic_specs(settings: Settings) -> list[tuple[str, int, dict[str, str]]]:
    """(full name, partitions, config) of every topic for these settings, changelogs included."""
    size = {"max.message.bytes": str(message_bytes(settings))}
    return [
        (settings.topic(spec.name), spec.partitions or settings.partitions, {**spec.config(settings), **size})
        for spec in TOPICS
    ] + changelog_specs(settings)


def raw_topics(settings: Settings) -> list[str]:
    """Full names of the per-source raw topics."""
    return [settings.topic(name) for name in RAW_TOPICS.values()]


def row_topics(settings: Settings) -> list[str]:
    """Full names of the topics the sink reads."""
    return [settings.topic(table.topic) for table in ROW_TABLES]


def stage_topics(settings: Settings, stage: str) -> list[str]:
    """Full names of every topic ``stage`` consumes (its consumer group commits offsets on these)."""
    if stage == "ingest":
        return raw_topics(settings)
    if stage == "sink":
        return row_topics(settings)
    names = [stage_input(settings, stage)]
    if stage == "identity" and settings.identity_workers > 1:
        names.append(VALID)  # forwarded to the sequence topic by every identity process
    if stage == "activation":
        names.append(ACTIVATION_HANDOFFS)
    return [settings.topic(name) for name in names]


UNKNOWN_SOURCE_TOPIC = RAW_TOPICS["web"]


def raw_key(event: Any) -> bytes | None:
    """Partition key of a raw event: its strongest identifier, so a person's events stay in order."""
    if isinstance(event, dict):
        ids = event.get("ids")
        if isinstance(ids, dict):
            for id_type in ID_PRIORITY:
                value = ids.get(id_type)
                if isinstance(value, str) and value:
                    return f"{id_type}:{value}".encode()
    return None


def raw_topic_name(event: Any) -> str:
    """The raw topic of an event's source, without the prefix; unknown sources go to the web topic."""
    source = event.get("source") if isinstance(event, dict) else None
    return RAW_TOPICS.get(source, UNKNOWN_SOURCE_TOPIC) if isinstance(source, str) else UNKNOWN_SOURCE_TOPIC
