"""Identity, journeys and attribution in one process, records routed like Kafka would route them.

Each stage's handler runs over plain dict tables; records go to the
partition of their key on every stage topic, and a scheduler picks which
partition a stage reads next and how many records it takes. With a seeded
random scheduler this gives the interleavings a real run may produce
(batches cut anywhere, one partition far ahead of another, a hand-over
arriving before or after the survivor's next events), without a broker.
:func:`views` turns the row records into what the analyst views show.
"""

from __future__ import annotations

import random
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from pipeline.attribution.stage import AttributionHandler
from pipeline.config import Settings
from pipeline.identity.stage import IdentityHandler, source_key
from pipeline.ingest.normalize import EventNormalizer
from pipeline.journeys.stage import JourneysHandler
from pipeline.kafka import topics
from pipeline.kafka.envelopes import partition_for
from pipeline.model.handler import Emission
from pipeline.producer import raw_key
from pipeline.simulate import simulate

PARTITIONS = 2
SOURCES = ("web", "app", "geofence", "pos")
RECEIVED_AT = 1_800_000_000_000  # after every simulated event, within the accepted age

Row = tuple[str, dict[str, Any]]

# the key of each row table, as its ClickHouse table collapses rows
ROW_KEYS = {
    "events": ("event_id",),
    "sessions": ("session_id",),
    "conversions": ("conversion_id",),
    "attribution": ("conversion_id", "model", "session_id"),
    "attribution_adjustments": ("adjustment_id",),
    "identities": ("id_type", "id_value"),
    "identity_conflicts": ("conflict_id",),
    "person_aliases": ("person_id",),
}


def valid_events(settings: Settings, customers: int, days: int, seed: int) -> list[dict[str, Any]]:
    """Simulated events as ingest passes them on (normalised, with the raw partition they came on)."""
    return normalised(settings, simulate(customers=customers, days=days, seed=seed))


def normalised(
    settings: Settings, raws: Iterable[dict[str, Any]], partitions: int = PARTITIONS
) -> list[dict[str, Any]]:
    """Contract events as ingest passes them on (normalised, with the raw partition they came on)."""
    normaliser = EventNormalizer.from_settings(settings)
    events = []
    for raw in raws:
        event = dict(normaliser.normalise(orjson.dumps(raw), RECEIVED_AT))
        event["origin"] = f"{event['source']}/{partition_for(raw_key(raw), partitions)}"
        events.append(event)
    return events


class InProcessPipeline:
    """The three stateful stages over dict tables, fed through per-partition queues."""

    def __init__(self, settings: Settings, partitions: int = PARTITIONS) -> None:
        self.clock = 0.0  # never advances: no stream or partition goes idle
        self.partitions = partitions
        self.identity = IdentityHandler(origins=[f"{s}/{p}" for s in SOURCES for p in range(partitions)])
        self.identity.reorder.buffer.clock = lambda: self.clock
        self.identity.bind(
            {"identity_ids": {}, "identity_persons": {}, "identity_pending": {}},  # type: ignore[dict-item]
            partitions=partitions,
        )
        self.journeys = JourneysHandler(settings, clock=lambda: self.clock)
        self.journeys.bind(
            {"journeys_state": {}, "journeys_watermarks": {}, "journeys_forward": {}},  # type: ignore[dict-item]
            partitions=partitions,
        )
        self.attribution = AttributionHandler(settings)
        self.attribution.bind({"attribution_paths": {}, "attribution_forward": {}})  # type: ignore[dict-item]
        self.handlers = {topics.VALID: self.identity, topics.IDENTIFIED: self.journeys,
                         topics.JOURNEYS: self.attribution}  # fmt: skip
        self.queues: dict[str, list[deque[dict[str, Any]]]] = {
            topic: [deque() for _ in range(partitions)] for topic in self.handlers
        }
        self.rows: list[Row] = []

    def run(
        self, events: Sequence[dict[str, Any]], rng: random.Random | None, eager: bool = False
    ) -> list[Row]:
        """Feed ``events`` (in this arrival order) through the stages, then drain and flush.

        ``rng`` None reads every partition to its end in turn; otherwise the
        next partition and the batch size are drawn. ``eager``: identity
        resolves each batch at once instead of holding it for reordering, so
        it sees the events in their arrival order.
        """
        for event in events:
            partition = partition_for(source_key(event).encode(), self.partitions)
            self.queues[topics.VALID][partition].append(dict(event))
        self._drain(rng, eager)
        self._route(self.identity.flush())
        self._drain(rng, eager)
        self._route(self.journeys.flush())
        self._drain(rng, eager)
        return self.rows

    def _drain(self, rng: random.Random | None, eager: bool) -> None:
        while True:
            ready = [(t, p) for t, parts in self.queues.items() for p, q in enumerate(parts) if q]
            if not ready:
                return
            topic, partition = ready[0] if rng is None else rng.choice(ready)
            queue = self.queues[topic][partition]
            size = len(queue) if rng is None else rng.randint(1, 40)
            batch = [queue.popleft() for _ in range(min(size, len(queue)))]
            self._route(self.handlers[topic].process(batch))
            if eager and topic == topics.VALID:
                self._route(self.identity.flush())

    def _route(self, emissions: Sequence[Emission]) -> None:
        for topic, key, value in emissions:
            if topic in self.queues:
                self.queues[topic][partition_for(key.encode(), self.partitions)].append(value)
            else:
                self.rows.append((topic, value))


def views(rows: Sequence[Row]) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    """What the analyst views show: the newest version per key, persons mapped to their canonical id.

    Like the ClickHouse views: retracted sessions are left out, attribution
    keeps the newest version per conversion and model, ``version`` is left out.
    """
    latest: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = defaultdict(dict)
    for topic, row in rows:
        table = topic.rpartition(".")[2]
        if table not in ROW_KEYS:
            continue
        key = tuple(row[field] for field in ROW_KEYS[table])
        kept = latest[table].get(key)
        if kept is None or row["version"] >= kept["version"]:
            latest[table][key] = row
    canonical = {key[0]: row["canonical_id"] for key, row in latest["person_aliases"].items()}
    newest: dict[tuple[str, str], int] = defaultdict(int)
    for key, row in latest["attribution"].items():
        newest[key[:2]] = max(newest[key[:2]], row["version"])
    out: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
    for table, by_key in latest.items():
        shown = {}
        for key, row in by_key.items():
            if table == "sessions" and row.get("retracted"):
                continue
            if table == "attribution" and row["version"] != newest[key[:2]]:
                continue
            row = {field: value for field, value in row.items() if field != "version"}
            if "person_id" in row and table != "person_aliases":
                row["person_id"] = canonical.get(row["person_id"], row["person_id"])
            shown[key] = row
        out[table] = shown
    return out


def differences(
    expected: dict[str, dict[tuple[Any, ...], dict[str, Any]]],
    actual: dict[str, dict[tuple[Any, ...], dict[str, Any]]],
) -> list[str]:
    """One line per row that differs (the first 10), empty when the views are equal."""
    lines = []
    for table in sorted(set(expected) | set(actual)):
        want, got = expected.get(table, {}), actual.get(table, {})
        for key in sorted(set(want) | set(got), key=repr):
            if want.get(key) != got.get(key):
                lines.append(f"{table} {key}: expected {want.get(key)}, got {got.get(key)}")
    return lines[:10]
