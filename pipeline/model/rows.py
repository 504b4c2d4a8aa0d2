"""The rows the stages emit for ClickHouse, one Kafka topic per table.

Each row is a plain dict keyed by column name; times are UTC epoch
milliseconds. Every row carries a deterministic id (the table's sorting key)
and a ``version``; the storage tables keep the highest version of each id, and
the analysts' views read only that. The column lists here and the migrations
under ``deploy/clickhouse`` describe the same tables; a test keeps them equal.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RowTable:
    """One output table: its row topic (without prefix), storage table and columns."""

    name: str
    storage: str
    columns: tuple[str, ...]
    datetime_columns: frozenset[str]
    topic_name: str = ""
    # column -> column whose value a row without it takes (rows written before the column existed)
    fallbacks: tuple[tuple[str, str], ...] = ()
    # column -> value a row without it takes
    defaults: tuple[tuple[str, object], ...] = ()

    @property
    def topic(self) -> str:
        """Topic the rows travel on, without the configured prefix."""
        return self.topic_name or f"rows.{self.name}"


EVENTS = RowTable(
    "events",
    "events_store",
    (
        "event_id", "person_id", "source", "type", "occurred_at", "received_at", "original_occurred_at",
        "session_id",
        "store_id", "conversion_kind", "revenue", "currency", "campaign_source", "campaign_medium",
        "campaign_name", "page_url", "referrer", "consent_analytics", "consent_marketing",
        "properties", "late", "version",
    ),
    frozenset({"occurred_at", "received_at", "original_occurred_at"}),
    fallbacks=(("original_occurred_at", "occurred_at"),),
    defaults=(("late", 0),),
)  # fmt: skip
SESSIONS = RowTable(
    "sessions",
    "sessions_store",
    (
        "session_id", "person_id", "kind", "channel", "started_at", "ended_at", "store_id",
        "event_count", "page_views", "screen_views", "conversions", "revenue", "campaign_source",
        "campaign_medium", "campaign_name", "landing", "referrer", "retracted", "version",
    ),
    frozenset({"started_at", "ended_at"}),
    defaults=(("retracted", 0),),
)  # fmt: skip
CONVERSIONS = RowTable(
    "conversions",
    "conversions_store",
    (
        "conversion_id", "event_id", "person_id", "occurred_at", "kind", "source", "revenue",
        "currency", "order_id", "store_id", "staff_id", "fulfillment", "session_id", "path_length",
        "o2o_label", "first_touch_at", "time_to_convert_seconds", "version",
    ),
    frozenset({"occurred_at", "first_touch_at"}),
    fallbacks=(("first_touch_at", "occurred_at"),),
    defaults=(("staff_id", ""), ("fulfillment", ""), ("time_to_convert_seconds", 0.0)),
)  # fmt: skip
ATTRIBUTION = RowTable(
    "attribution",
    "attribution_store",
    (
        "conversion_id", "model", "session_id", "person_id", "channel", "campaign_name",
        "touch_at", "converted_at", "position", "credit", "revenue_credit", "model_version", "version",
    ),
    frozenset({"touch_at", "converted_at"}),
    defaults=(("model_version", ""),),
)  # fmt: skip
ADJUSTMENTS = RowTable(
    "attribution_adjustments",
    "attribution_adjustments_store",
    (
        "adjustment_id", "conversion_id", "model", "session_id", "person_id", "channel",
        "return_event_id", "returned_at", "revenue_adjustment", "version",
    ),
    frozenset({"returned_at"}),
)  # fmt: skip
ATTRIBUTION_MODELS = RowTable(
    "attribution_models",
    "attribution_models_store",
    (
        "kind", "model_version", "fitted_at", "markov_order", "paths_used", "conversions_used",
        "weights", "version",
    ),
    frozenset({"fitted_at"}),
    topic_name="attribution.models",  # compacted: the newest fit per kind, read by the attribution stage
)  # fmt: skip
IDENTITIES = RowTable(
    "identities",
    "identities_store",
    ("id_type", "id_value", "person_id", "first_seen", "version"),
    frozenset({"first_seen"}),
)
IDENTITY_CONFLICTS = RowTable(
    "identity_conflicts",
    "identity_conflicts_store",
    (
        "conflict_id", "event_id", "occurred_at", "person_id", "other_person", "id_type", "id_value",
        "reason", "version",
    ),
    frozenset({"occurred_at"}),
)  # fmt: skip
PERSON_ALIASES = RowTable(
    "person_aliases",
    "person_aliases_store",
    ("person_id", "canonical_id", "merged_at", "reason", "version"),
    frozenset({"merged_at"}),
)
CONSENT = RowTable(
    "consent",
    "consent_store",
    (
        "consent_id", "person_id", "purpose", "granted", "previous", "occurred_at", "source",
        "event_type", "event_id", "method", "version",
    ),
    frozenset({"occurred_at"}),
)  # fmt: skip
DEAD_LETTERS = RowTable(
    "dead_letters",
    "dead_letters_store",
    (
        "dead_letter_id", "reason", "detail", "payload", "topic", "partition", "offset",
        "received_at", "version",
    ),
    frozenset({"received_at"}),
    topic_name="dlq",  # dead letters keep their original bytes; the sink builds the row
)  # fmt: skip

ACTIVATIONS = RowTable(
    "activations",
    "activations_store",
    (
        "decision_id", "rule", "person_id", "trigger_event_id", "triggered_at", "decided_at",
        "channel", "outcome", "reason", "store_id", "order_id", "coupon", "message", "version",
    ),
    frozenset({"triggered_at", "decided_at"}),
    topic_name="activations",  # the decisions themselves: delivery reads this topic too
)  # fmt: skip
ACTIVATION_DELIVERIES = RowTable(
    "activation_deliveries",
    "activation_deliveries_store",
    (
        "decision_id", "rule", "person_id", "status", "attempts", "http_status", "error", "updated_at",
        "version",
    ),
    frozenset({"updated_at"}),
    topic_name="activation.deliveries",  # compacted: read back whole when delivery starts
)  # fmt: skip

ROW_TABLES: tuple[RowTable, ...] = (
    EVENTS,
    SESSIONS,
    CONVERSIONS,
    ATTRIBUTION,
    ADJUSTMENTS,
    ATTRIBUTION_MODELS,
    IDENTITIES,
    IDENTITY_CONFLICTS,
    PERSON_ALIASES,
    CONSENT,
    DEAD_LETTERS,
    ACTIVATIONS,
    ACTIVATION_DELIVERIES,
)
ROW_TABLES_BY_NAME = {table.name: table for table in ROW_TABLES}
ROW_TOPICS = frozenset(table.topic for table in ROW_TABLES)
"""The sink's input topics (names without prefix)."""

FILLED_BY_CLICKHOUSE: dict[str, tuple[str, ...]] = dict.fromkeys(
    ("events_store", "conversions_store", "attribution_store"), ("inserted_at",)
)
"""Storage columns the sink never sends: ClickHouse fills them (``inserted_at``: when it stored the row)."""
