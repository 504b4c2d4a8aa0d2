"""Erasure (``o2o forget``) and access (``o2o export``) of a person found by any identifier.

1. The given identifiers are normalised and hashed exactly as ingest does, and
   looked up in the ``identities`` view: their canonical persons, every person
   id merged into those, and all their identifiers.
2. Every ClickHouse table loses the rows of those person ids (attribution,
   adjustments, conflicts and aliases too), and dead letters whose payload
   holds one of the identifiers.
3. The persons and identifiers go to the compacted topic
   ``identity.suppressions``: ingest turns later events carrying a suppressed
   identifier into dead letters (reason ``suppressed``), the sink drops rows
   of suppressed persons still in flight.
4. A ``forget`` record on every partition of ``events.valid`` makes identity,
   journeys and attribution drop the persons from their state.

Running it again finds nothing more to delete and changes nothing.

``o2o export`` does step 1, then reads every row step 2 would delete (all
stored versions) into one JSON document.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.clickhouse.format import sql_string
from pipeline.config import Settings
from pipeline.errors import ConfigError, InvalidEvent
from pipeline.ingest.normalize import EventNormalizer
from pipeline.kafka import topics
from pipeline.model.contract import ID_TYPES

Query = Callable[[str], list[tuple[Any, ...]]]
ColumnsQuery = Callable[[str], tuple[list[str], list[tuple[Any, ...]]]]

# table -> the condition a person's rows meet ({persons} is a SQL list of person ids)
PERSON_TABLES: tuple[tuple[str, str], ...] = (
    ("events_store", "person_id IN {persons}"),
    ("sessions_store", "person_id IN {persons}"),
    ("conversions_store", "person_id IN {persons}"),
    ("attribution_store", "person_id IN {persons}"),
    ("attribution_adjustments_store", "person_id IN {persons}"),
    ("identities_store", "person_id IN {persons}"),
    ("person_aliases_store", "person_id IN {persons} OR canonical_id IN {persons}"),
    ("identity_conflicts_store", "person_id IN {persons} OR other_person IN {persons}"),
    ("activations_store", "person_id IN {persons}"),
    ("activation_deliveries_store", "person_id IN {persons}"),
    ("consent_store", "person_id IN {persons}"),
)


def identifier_key(spec: str, normalizer: EventNormalizer) -> str:
    """``type:value`` as stored, from what a user types (``email:Alice@Example.com``).

    The value goes through ingest's own rule (:meth:`EventNormalizer.stored_ids`),
    so it matches what ingest stored for the same input.
    """
    id_type, sep, value = spec.partition(":")
    id_type = id_type.strip()
    if not sep or not value.strip():
        raise ConfigError(f"--id {spec!r}: expected TYPE:VALUE, e.g. email:alice@example.com")
    if id_type not in ID_TYPES:
        raise ConfigError(f"--id {spec!r}: unknown identifier type; known: {', '.join(sorted(ID_TYPES))}")
    try:
        stored = normalizer.stored_ids({id_type: value.strip()})
    except InvalidEvent:
        raise ConfigError(f"--id {spec!r}: not a valid {id_type}") from None
    return f"{id_type}:{stored[id_type]}"


def carries(ids: Mapping[str, str], keys: Container[str]) -> bool:
    """True when one of an event's stored ``ids`` is among ``keys`` (``type:value``)."""
    return any(f"{id_type}:{value}" in keys for id_type, value in ids.items())


def _sql_list(values: Iterable[str]) -> str:
    return "(" + ", ".join([sql_string(v) for v in sorted(set(values))] or ["''"]) + ")"


@dataclass
class Erasure:
    """Who is forgotten: canonical persons, every stored person id, every identifier."""

    keys: list[str]
    persons: set[str] = field(default_factory=set)
    person_ids: set[str] = field(default_factory=set)
    identifiers: set[str] = field(default_factory=set)
    decisions: set[str] = field(default_factory=set)  # their activation decisions (delivery records)

    @classmethod
    def of(cls, person_ids: Iterable[str], keys: Iterable[str]) -> Erasure:
        """An erasure already looked up: the stored person ids and identifiers to remove."""
        keys = [str(k) for k in keys]
        return cls(keys, person_ids={str(p) for p in person_ids}, identifiers=set(keys))

    def suppressions(self, now_ms: int | None = None) -> list[tuple[str, dict[str, Any]]]:
        """The (key, value) messages of the suppression list."""
        at = int(time.time() * 1000) if now_ms is None else now_ms
        out = [(f"id:{key}", {"kind": "id", "key": key, "at": at}) for key in sorted(self.identifiers)]
        out += [(f"person:{p}", {"kind": "person", "key": p, "at": at}) for p in sorted(self.person_ids)]
        return out


def find(query: Query, db: str, keys: Sequence[str]) -> Erasure:
    """Look the identifiers up: their persons, the person ids merged into them, all identifiers."""
    erasure = Erasure(list(keys), identifiers=set(keys))
    pairs = ", ".join(f"({sql_string(k.partition(':')[0])}, {sql_string(k.partition(':')[2])})" for k in keys)
    rows = query(f"SELECT DISTINCT person_id FROM {db}.identities WHERE (id_type, id_value) IN ({pairs})")
    erasure.persons = {str(r[0]) for r in rows if r[0]}
    if not erasure.persons:
        return erasure
    persons = _sql_list(erasure.persons)
    merged = query(f"SELECT from_person FROM {db}.person_merges FINAL WHERE to_person IN {persons}")
    erasure.person_ids = erasure.persons | {str(r[0]) for r in merged}
    held = query(f"SELECT id_type, id_value FROM {db}.identities WHERE person_id IN {persons}")
    erasure.identifiers |= {f"{r[0]}:{r[1]}" for r in held}
    ids = _sql_list(erasure.person_ids)
    decided = query(f"SELECT DISTINCT decision_id FROM {db}.activations_store WHERE person_id IN {ids}")
    erasure.decisions = {str(r[0]) for r in decided}
    return erasure


def person_rows(erasure: Erasure) -> list[tuple[str, str]]:
    """(storage table, condition) of every row held about the persons: what forget deletes, export shows.

    Dead letters count when their payload holds one of the identifiers (of six
    characters or more, so a short value cannot match unrelated payloads).
    """
    persons = _sql_list(erasure.person_ids)
    found = [(table, condition.format(persons=persons)) for table, condition in PERSON_TABLES]
    out = found if erasure.person_ids else []
    values = sorted({key.partition(":")[2] for key in erasure.identifiers if len(key.partition(":")[2]) >= 6})
    if values:
        named = " OR ".join(f"position(payload, {sql_string(v)}) > 0" for v in values)
        out.append(("dead_letters_store", named))
    return out


def erase_statements(db: str, erasure: Erasure, cluster: str = "") -> list[tuple[str, str, str]]:
    """(table, count query, delete statement) for every table holding the persons' data.

    On a cluster (``O2O_CLICKHOUSE_CLUSTER``) the rows are counted through the
    Distributed table and deleted from the replicated tables of every node.
    """
    from pipeline.clickhouse.cluster import delete_target

    return [
        (
            table,
            f"SELECT count() FROM {db}.{table} WHERE {where}",
            f"ALTER TABLE {db}.{delete_target(table, cluster) if cluster else table} DELETE WHERE {where} "
            "SETTINGS mutations_sync = 2",
        )
        for table, where in person_rows(erasure)
    ]


def export_document(query: ColumnsQuery, db: str, erasure: Erasure, now: str) -> dict[str, Any]:
    """Everything stored about the persons as one JSON-shaped document (the right of access).

    Rows come from the storage tables, every stored version included, under
    the same conditions ``o2o forget`` deletes by; identifiers appear hashed,
    as stored.
    """
    tables: dict[str, list[dict[str, Any]]] = {}
    for table, where in person_rows(erasure):
        columns, rows = query(f"SELECT * FROM {db}.{table} WHERE {where}")
        tables[table] = [dict(zip(columns, row, strict=True)) for row in rows]
    return {
        "exported_at": now,
        "identifiers_given": erasure.keys,
        "persons": sorted(erasure.persons),
        "person_ids": sorted(erasure.person_ids),
        "identifiers": sorted(erasure.identifiers),
        "rows": tables,
    }


def execute(
    count: Callable[[str], list[tuple[Any, ...]]],
    command: Callable[[str], object],
    statements: Sequence[tuple[str, str, str]],
    dry_run: bool,
) -> dict[str, int]:
    """Count, then (unless ``dry_run``) delete; returns rows per table."""
    counts: dict[str, int] = {}
    for table, count_sql, delete_sql in statements:
        counts[table] = int(count(count_sql)[0][0])
        if counts[table] and not dry_run:
            command(delete_sql)
    return counts


def publish(settings: Settings, erasure: Erasure, timeout: float = 30.0) -> None:
    """Suppress the identifiers and persons, and tell the stages to drop them from their state."""
    from pipeline.kafka.admin import partition_counts
    from pipeline.kafka.clients import Message, send_and_wait

    topic = settings.topic
    messages: list[Message] = [
        (topic(topics.SUPPRESSIONS), orjson.dumps(value), key.encode(), None)
        for key, value in erasure.suppressions()
    ]
    # tombstones for their records on the compacted topics: merges (keyed by the merged
    # person id) and deliveries of their activation decisions (keyed by decision id)
    messages += [(topic(topics.MERGES), None, p.encode(), None) for p in sorted(erasure.person_ids)]
    messages += [
        (topic(topics.ACTIVATION_DELIVERIES), None, d.encode(), None) for d in sorted(erasure.decisions)
    ]
    if erasure.person_ids or erasure.identifiers:
        valid = topic(topics.VALID)
        count = partition_counts(settings).get(valid, settings.partitions)
        for partition in range(count):
            record = {
                "record": "forget", "copy": partition, "persons": sorted(erasure.person_ids),
                "keys": sorted(erasure.identifiers),
            }  # fmt: skip
            messages.append((valid, orjson.dumps(record), b"forget", partition))
    send_and_wait(settings, messages, "the erasure", timeout)


def publish_restriction(
    settings: Settings, person_ids: Iterable[str], lift: bool, timeout: float = 30.0
) -> None:
    """Restrict these person ids (``o2o restrict``), or lift their restriction (tombstones).

    Kept on the suppression topic under ``restricted:<person id>``: the
    activation stage and the model fits read it with the rest of the list.
    """
    from pipeline.kafka.clients import send_and_wait

    at = int(time.time() * 1000)
    messages = [
        (
            settings.topic(topics.SUPPRESSIONS),
            None if lift else orjson.dumps({"kind": "restricted", "key": person, "at": at}),
            f"restricted:{person}".encode(),
            None,
        )
        for person in sorted(set(person_ids))
    ]
    send_and_wait(settings, messages, "the restriction", timeout)


SUPPRESSION_READERS = {"ingest": "ingest-suppressions", "identity": "identity-suppressions",
                       "sink": "sink-suppressions"}  # fmt: skip
"""The stages that read the suppression list, and the group their reader commits its position under."""


def wait_until_read(settings: Settings, timeout: float) -> tuple[list[str], list[str]]:
    """Wait until every running stage has read the suppression list up to its current end.

    Returns (stages that read it, running stages that had not within
    ``timeout`` s). A stage that does not run reads the whole list when it
    starts. With several processes of a stage, their readers share one group:
    the first to read the end counts for the stage.
    """
    from pipeline.kafka.admin import active_groups, end_offsets, group_offsets
    from pipeline.kafka.lag import LagReaders

    ends = end_offsets(settings, [settings.topic(topics.SUPPRESSIONS)])
    running = active_groups(settings, [settings.group(stage) for stage in SUPPRESSION_READERS])
    waiting = {s: settings.group(r) for s, r in SUPPRESSION_READERS.items() if settings.group(s) in running}
    read: list[str] = []
    deadline = time.monotonic() + timeout
    readers = LagReaders(settings)  # one consumer per group for the whole wait, not one per look
    try:
        while waiting:
            for stage, group in list(waiting.items()):
                done = group_offsets(settings, group, ends, timeout=5.0, consumer=readers.committed(group))
                if all(done.get(tp, 0) >= end for tp, end in ends.items()):
                    read.append(stage)
                    del waiting[stage]
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
    finally:
        readers.close()
    return sorted(read), sorted(waiting)


class Suppressions:
    """The suppression list, kept current from its compacted topic (polled at most every second).

    ``identifiers`` and ``persons`` are erased (``o2o forget``); ``restricted``
    persons keep their data but are left out of activation and model fits
    (``o2o restrict``) until the restriction is lifted.
    """

    def __init__(self, settings: Settings, group: str) -> None:
        from pipeline.kafka.compacted import CompactedReader

        self.reader = CompactedReader(settings, topics.SUPPRESSIONS, group)
        self.identifiers: set[str] = set()
        self.persons: set[str] = set()
        self.restricted: set[str] = set()
        self._polled = 0.0

    def load(self, timeout: float = 60.0) -> Suppressions:
        """Read the whole list (at start-up); KafkaUnavailable if it is not read whole within ``timeout`` s.

        A stage that started with part of the list would let erased persons back in. The
        minute lets a stage that starts while the broker restarts wait for it.
        """
        self._take(self.reader.load(timeout, whole=True))
        self.reader.acknowledge()
        self._polled = time.monotonic()
        return self

    def refresh(self) -> None:
        """Take what ``o2o forget`` published since, at most once a second, and say how far it has read."""
        now = time.monotonic()
        if now - self._polled >= 1.0:
            self._polled = now
            if self._take(self.reader.poll()):
                self.reader.acknowledge()

    def _take(self, pairs: list[tuple[str, Any]]) -> bool:
        for key, value in pairs:
            kind, _, name = key.partition(":")
            target = {"id": self.identifiers, "person": self.persons, "restricted": self.restricted}.get(kind)
            if target is None:
                continue
            if value is None:
                target.discard(name)
            else:
                target.add(name)
        return bool(pairs)

    def close(self) -> None:
        """Close the consumer."""
        self.reader.close()
