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
from collections.abc import Container, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.attribution.datadriven import FittedModel, ModelKind, PathCount, fit_model, paths_from_sessions
from pipeline.config import Settings
from pipeline.kafka import topics

log = logging.getLogger(__name__)

SESSIONS_SQL = """
SELECT person_id, toUnixTimestamp64Milli(started_at) AS started_ms, channel, conversions > 0 AS converted
FROM {db}.sessions
WHERE started_at >= fromUnixTimestamp64Milli(toInt64({since}))
ORDER BY person_id, started_at, session_id
"""


def load_corpus(settings: Settings, since_ms: int = 0) -> list[PathCount]:
    """The path corpus of every person's sessions that started at or after ``since_ms``.

    Persons under ``o2o restrict`` are left out.
    """
    from pipeline.clickhouse.query_server import query_any
    from pipeline.identity.erasure import Suppressions

    privacy = Suppressions(settings, "fit-restrictions").load()
    privacy.close()
    sql = SESSIONS_SQL.format(db=settings.clickhouse_database, since=int(since_ms))
    _columns, rows = query_any(settings, sql)
    return corpus_of(rows, privacy.restricted)


def corpus_of(rows: Iterable[Sequence[Any]], restricted: Container[str]) -> list[PathCount]:
    """The path corpus of session rows (person, start ms, channel, converted), restricted persons left out."""
    sessions = ((str(r[0]), int(r[1]), str(r[2]), bool(r[3])) for r in rows)
    return paths_from_sessions(s for s in sessions if s[0] not in restricted)


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
    from pipeline.kafka.clients import send_and_wait

    topic = settings.topic(topics.MODELS)
    send_and_wait(settings, [(topic, orjson.dumps(model_row(fit)), fit.kind.encode(), None) for fit in fits],
                  "the fits", timeout)  # fmt: skip


class FittedModelFeed:
    """The newest fit of each kind, read from the compacted models topic (from its start)."""

    def __init__(self, settings: Settings) -> None:
        from pipeline.kafka.compacted import CompactedReader

        self.reader = CompactedReader(settings, topics.MODELS, "attribution-models")
        self.latest: dict[str, FittedModel] = {}

    def load(self, timeout: float = 10.0) -> dict[str, FittedModel]:
        """Read the topic up to its current end (at start-up); returns the newest fits."""
        self._take(self.reader.load(timeout))
        return dict(self.latest)

    def poll(self) -> bool:
        """Take fits published since; True when the newest fit of some kind changed."""
        return self._take(self.reader.poll())

    def _take(self, pairs: list[tuple[str, Any]]) -> bool:
        changed = False
        for _key, row in pairs:
            if row is None:
                continue
            try:
                fit = fit_from_row(row)
            except (ValueError, TypeError, KeyError) as exc:
                log.error("attribution: ignoring an invalid fitted model: %s", exc)
                continue
            current = self.latest.get(fit.kind)
            if current is not None and current.fitted_at > fit.fitted_at:
                continue
            self.latest[fit.kind] = fit
            log.info("attribution: crediting %s with fit %s", fit.kind, fit.version)
            changed = changed or current is None or current.version != fit.version
        return changed

    def close(self) -> None:
        """Close the consumer."""
        self.reader.close()
