"""Fitting the data-driven models (Markov, Shapley) on stored paths, and publishing fits.

``o2o attribution fit`` reads every person's sessions from ClickHouse, cuts them
into paths (a converting session ends a path; what follows a person's last
conversion is a path without conversion), fits the models
(:mod:`pipeline.attribution.datadriven`) and publishes each fit to the
compacted topic ``attribution.models``: the sink stores every fit in
ClickHouse (``attribution_models``), and the attribution stage credits new
conversions with the newest fit of each kind (:class:`FittedModelFeed`).
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.attribution.datadriven import FittedModel, ModelKind, PathCount, fit_model, paths_from_sessions
from pipeline.config import Settings
from pipeline.errors import KafkaUnavailable
from pipeline.kafka import topics

log = logging.getLogger(__name__)

SESSIONS_SQL = """
SELECT person_id, toUnixTimestamp64Milli(started_at) AS started_at, channel, conversions > 0 AS converted
FROM {db}.sessions
WHERE started_at >= fromUnixTimestamp64Milli(toInt64({since}))
ORDER BY person_id, started_at, session_id
"""


def load_corpus(settings: Settings, since_ms: int = 0) -> list[PathCount]:
    """The path corpus of every person's sessions that started at or after ``since_ms``."""
    from pipeline.clickhouse.query_server import query_any

    sql = SESSIONS_SQL.format(db=settings.clickhouse_database, since=int(since_ms))
    _columns, rows = query_any(settings, sql)
    return paths_from_sessions((str(r[0]), int(r[1]), str(r[2]), bool(r[3])) for r in rows)


def fit_version(kind: str, order: int, fitted_at: int, weights: dict[str, float]) -> str:
    """A readable, unique version: kind, order, time of the fit and a digest of its weights."""
    stamp = datetime.fromtimestamp(fitted_at / 1000, UTC).strftime("%Y%m%dT%H%M%SZ")
    digest = zlib.crc32(orjson.dumps(weights, option=orjson.OPT_SORT_KEYS))
    suffix = f"-o{order}" if kind == "markov" else ""
    return f"{kind}{suffix}-{stamp}-{digest:08x}"


def fit_models(
    corpus: Sequence[PathCount], kinds: Sequence[ModelKind], order: int = 1, now_ms: int | None = None
) -> list[FittedModel]:
    """Fit each kind on ``corpus``; ``ValueError`` when the corpus has no conversion."""
    fitted_at = int(time.time() * 1000) if now_ms is None else now_ms
    fits = []
    for kind in kinds:
        draft = fit_model(kind, corpus, "draft", fitted_at, order if kind == "markov" else 1)
        version = fit_version(kind, draft.order, fitted_at, dict(draft.weights))
        fits.append(fit_model(kind, corpus, version, fitted_at, draft.order))
    return fits


def model_row(fit: FittedModel) -> dict[str, Any]:
    """The ``attribution_models`` row of a fit (what travels on the models topic)."""
    return {
        "kind": fit.kind,
        "model_version": fit.version,
        "fitted_at": fit.fitted_at,
        "markov_order": fit.order,
        "paths_used": fit.paths_used,
        "conversions_used": fit.conversions_used,
        "weights": orjson.dumps(dict(fit.weights), option=orjson.OPT_SORT_KEYS).decode(),
        "version": 1,
    }


def fit_from_row(row: dict[str, Any]) -> FittedModel:
    """The fit an ``attribution_models`` row describes."""
    return FittedModel(
        kind=row["kind"],
        version=row["model_version"],
        weights=orjson.loads(row["weights"]),
        fitted_at=int(row["fitted_at"]),
        paths_used=float(row["paths_used"]),
        conversions_used=float(row["conversions_used"]),
        order=int(row["markov_order"]),
    )


def publish(settings: Settings, fits: Sequence[FittedModel], timeout: float = 30.0) -> None:
    """Send the fits to the models topic (one keyed message per kind) and wait for Kafka."""
    from pipeline.kafka.clients import DeliveryTracker, make_producer, produce

    delivery = DeliveryTracker()
    producer = make_producer(settings, on_delivery=delivery)
    for fit in fits:
        produce(producer, settings.topic(topics.MODELS), orjson.dumps(model_row(fit)), fit.kind.encode())
    if producer.flush(timeout) > 0:
        raise KafkaUnavailable(f"Kafka did not acknowledge the fits within {timeout:.0f} s")
    delivery.raise_if_failed()


class FittedModelFeed:
    """The newest fit of each kind, read from the compacted models topic (from its start)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.latest: dict[str, FittedModel] = {}
        self._consumer: Any = None

    def _open(self) -> Any:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        from pipeline.kafka.admin import end_offsets
        from pipeline.kafka.clients import make_consumer

        topic = self.settings.topic(topics.MODELS)
        ends = end_offsets(self.settings, [topic])
        consumer = make_consumer(
            self.settings, self.settings.group("attribution-models"), **{"enable.auto.commit": False}
        )
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for (_t, p) in ends])
        self._consumer = consumer
        self._ends = {p: end for (_t, p), end in ends.items() if end > 0}
        return consumer

    def load(self, timeout: float = 10.0) -> dict[str, FittedModel]:
        """Read the topic up to its current end (at start-up); returns the newest fits."""
        consumer = self._consumer or self._open()
        deadline = time.monotonic() + timeout
        left = dict(self._ends)
        while left and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.5):
                self._take(message)
                partition = message.partition()
                if partition in left and (message.offset() or 0) + 1 >= left[partition]:
                    del left[partition]
        return dict(self.latest)

    def poll(self) -> bool:
        """Take fits published since; True when the newest fit of some kind changed."""
        consumer = self._consumer or self._open()
        changed = False
        for message in consumer.consume(500, timeout=0):
            changed = self._take(message) or changed
        return changed

    def _take(self, message: Any) -> bool:
        if message.error() is not None or not message.value():
            return False
        try:
            fit = fit_from_row(orjson.loads(message.value()))
        except (ValueError, TypeError, KeyError) as exc:
            log.error("attribution: ignoring an invalid fitted model at offset %s: %s", message.offset(), exc)
            return False
        current = self.latest.get(fit.kind)
        if current is not None and current.fitted_at > fit.fitted_at:
            return False
        self.latest[fit.kind] = fit
        log.info("attribution: crediting %s with fit %s", fit.kind, fit.version)
        return current is None or current.version != fit.version

    def close(self) -> None:
        """Close the consumer."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
