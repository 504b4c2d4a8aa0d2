"""Looking at and replaying dead letters (``o2o dlq list`` and ``o2o dlq replay``).

A dead letter is a message of the dead-letter topic written by ingest: the
original raw bytes as value, the original key, and headers ``o2o.reason``,
``o2o.detail``, ``o2o.topic``, ``o2o.partition``, ``o2o.offset`` and
``o2o.received_at`` (see :func:`pipeline.ingest.stage.dead_letter_headers`).

* :func:`list_dead_letters` summarises the ``dead_letters`` view in ClickHouse
  (through :func:`~pipeline.clickhouse.query_server.query_any`, so it works
  while the pipeline runs on the embedded engine).
* :func:`replay` reads the dead-letter topic from its low watermark to the end
  offsets seen at start, with a throw-away consumer group that never commits,
  and re-sends the chosen payloads byte for byte to the raw topic they came
  from, with their original key.

Replaying is safe to repeat: identical (topic, key, payload) messages are
re-sent once per replay, ingest drops exact duplicates by ``event_id`` within
its dedup window, and every downstream row has a deterministic id that the
ClickHouse tables collapse on, so nothing is counted twice.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pipeline.clickhouse.format import sql_string
from pipeline.config import Settings
from pipeline.kafka.topics import DLQ, raw_topics

log = logging.getLogger(__name__)

PAYLOAD_PREVIEW_CHARS = 120
REPLAY_HEADER = "o2o.replay_of"


# -- pure pieces ------------------------------------------------------------------------


def source_of_topic(settings: Settings, topic: str) -> str:
    """The source of a raw topic name (``<prefix>raw.web`` -> ``web``); other names as they are."""
    prefix = settings.topic("raw.")
    return topic[len(prefix) :] if topic.startswith(prefix) else topic


def parse_since(text: str) -> int:
    """An ISO 8601 date or timestamp (naive means UTC) as epoch milliseconds."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 date or timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def _text(raw: str | bytes | None) -> str:
    if raw is None:
        return ""
    return raw if isinstance(raw, str) else raw.decode("utf-8", "replace")


@dataclass(frozen=True)
class DeadLetter:
    """One message of the dead-letter topic, with its headers decoded."""

    value: bytes
    key: bytes | None
    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    received_at: int
    dlq_partition: int = -1
    dlq_offset: int = -1

    @classmethod
    def from_parts(
        cls,
        value: bytes | None,
        key: bytes | None,
        headers: Mapping[str, str | bytes | None] | Iterable[tuple[str, str | bytes | None]] | None,
        dlq_partition: int = -1,
        dlq_offset: int = -1,
    ) -> DeadLetter:
        """Build from a message's value, key and headers (missing headers get neutral values)."""
        pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
        meta = {name: _text(raw) for name, raw in pairs}

        def number(name: str) -> int:
            text = meta.get(name, "")
            return int(text) if text.lstrip("-").isdigit() else -1

        return cls(
            value=value or b"",
            key=key,
            reason=meta.get("o2o.reason", "unknown"),
            detail=meta.get("o2o.detail", ""),
            topic=meta.get("o2o.topic", ""),
            partition=number("o2o.partition"),
            offset=number("o2o.offset"),
            received_at=number("o2o.received_at"),
            dlq_partition=dlq_partition,
            dlq_offset=dlq_offset,
        )

    @property
    def origin(self) -> str:
        """``topic:partition:offset`` of the original raw message (the dead_letter_id)."""
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters to pick: by reason, by source, received at or after ``since_ms``."""

    reason: str | None = None
    source: str | None = None
    since_ms: int | None = None

    def matches(self, settings: Settings, letter: DeadLetter) -> bool:
        """True when ``letter`` passes every given condition."""
        if self.reason is not None and letter.reason != self.reason:
            return False
        if self.source is not None and source_of_topic(settings, letter.topic) != self.source:
            return False
        return self.since_ms is None or letter.received_at >= self.since_ms


# -- listing (ClickHouse) ---------------------------------------------------------------


@dataclass(frozen=True)
class GroupCount:
    """Dead letters of one reason and source."""

    reason: str
    source: str
    count: int
    first_at: str
    last_at: str


@dataclass(frozen=True)
class Sample:
    """One dead letter for people to look at."""

    reason: str
    detail: str
    origin: str
    received_at: str
    payload: str


@dataclass
class DeadLetterSummary:
    """What ``o2o dlq list`` shows: counts per reason and source, and the newest samples."""

    groups: list[GroupCount] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    @property
    def total(self) -> int:
        """All dead letters matching the filter."""
        return sum(group.count for group in self.groups)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the summary."""
        by_reason: Counter[str] = Counter()
        for group in self.groups:
            by_reason[group.reason] += group.count
        return {
            "total": self.total,
            "by_reason": dict(by_reason.most_common()),
            "groups": [vars(group) for group in self.groups],
            "samples": [vars(sample) for sample in self.samples],
        }


QueryFn = Callable[[Settings, str], tuple[list[str], list[tuple[Any, ...]]]]


def list_sql(settings: Settings, filt: DeadLetterFilter, limit: int) -> tuple[str, str]:
    """The grouped-counts and samples queries on the ``dead_letters`` view for ``filt``."""
    where = ["1"]
    if filt.reason is not None:
        where.append(f"reason = {sql_string(filt.reason)}")
    if filt.source is not None:
        where.append(f"topic = {sql_string(settings.topic('raw.' + filt.source))}")
    if filt.since_ms is not None:
        where.append(f"received_at >= fromUnixTimestamp64Milli(toInt64({int(filt.since_ms)}), 'UTC')")
    condition = " AND ".join(where)
    view = f"{settings.clickhouse_database}.dead_letters"
    groups = (
        "SELECT reason, topic, count() AS n, toString(min(received_at)) AS first_at, "
        f"toString(max(received_at)) AS last_at FROM {view} WHERE {condition} "
        "GROUP BY reason, topic ORDER BY n DESC, reason, topic"
    )
    samples = (
        "SELECT reason, detail, topic, partition, offset, toString(received_at) AS received_at, "
        f"substringUTF8(payload, 1, {PAYLOAD_PREVIEW_CHARS}) AS payload FROM {view} WHERE {condition} "
        f"ORDER BY received_at DESC, dead_letter_id LIMIT {max(0, int(limit))}"
    )
    return groups, samples


def list_dead_letters(
    settings: Settings, filt: DeadLetterFilter, limit: int = 20, query: QueryFn | None = None
) -> DeadLetterSummary:
    """Counts per reason and source and the ``limit`` newest samples, from ClickHouse."""
    if query is None:
        from pipeline.clickhouse.query_server import query_any

        query = query_any
    groups_sql, samples_sql = list_sql(settings, filt, limit)
    summary = DeadLetterSummary(
        groups=[
            GroupCount(str(reason), source_of_topic(settings, str(topic)), int(n), str(first), str(last))
            for reason, topic, n, first, last in query(settings, groups_sql)[1]
        ]
    )
    if limit > 0:
        for reason, detail, topic, partition, offset, received_at, payload in query(settings, samples_sql)[1]:
            text = payload if isinstance(payload, str) else bytes(payload).decode("utf-8", "replace")
            summary.samples.append(
                Sample(
                    str(reason), str(detail), f"{topic}:{partition}:{offset}", str(received_at),
                    text[:PAYLOAD_PREVIEW_CHARS],
                )
            )  # fmt: skip
    return summary


# -- replaying (Kafka) ------------------------------------------------------------------


def read_dead_letters(settings: Settings, timeout: float = 30.0) -> Iterator[DeadLetter]:
    """Every message of the dead-letter topic, from the low watermark to the end offsets at start.

    Read by :func:`pipeline.kafka.reader.read_topics`, which disturbs no
    running consumer. Raises :class:`~pipeline.errors.KafkaUnavailable` if
    the topic is missing or no progress is made for ``timeout`` seconds.
    """
    from pipeline.kafka.reader import read_topics

    for message in read_topics(settings, [settings.topic(DLQ)], "dlq-replay", timeout):
        yield DeadLetter.from_parts(
            message.value(), message.key(), message.headers(), message.partition() or 0, message.offset() or 0
        )


@dataclass
class ReplayResult:
    """What a replay did (or, with ``dry_run``, would do)."""

    dry_run: bool = False
    scanned: int = 0
    matched: int = 0
    resent: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    not_replayable: int = 0

    @property
    def total(self) -> int:
        """Messages re-sent (or that would be)."""
        return sum(self.resent.values())

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the result."""
        return {
            "dry_run": self.dry_run,
            "scanned": self.scanned,
            "matched": self.matched,
            "resent": self.total,
            "by_reason": dict(sorted(self.resent.items())),
            "duplicates_skipped": self.duplicates,
            "not_replayable": self.not_replayable,
        }


class Sender(Protocol):
    """Where replayed messages go."""

    def send(self, topic: str, value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]]) -> None:
        """Queue one message."""

    def finish(self) -> None:
        """Wait until every queued message is acknowledged."""


class KafkaSender:
    """Replayed messages to Kafka, with the pipeline's idempotent producer."""

    def __init__(self, settings: Settings) -> None:
        from pipeline.kafka.clients import DeliveryTracker, make_producer

        self.delivery = DeliveryTracker()
        self.producer = make_producer(settings, on_delivery=self.delivery)

    def send(self, topic: str, value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]]) -> None:
        """Queue one message (waits for room when the queue is full)."""
        from pipeline.kafka.clients import produce

        received = dict(headers).get("o2o.received_at", b"")
        timestamp = {"timestamp": int(received)} if received.isdigit() else {}
        # the original receive time: ingest's clock-skew correction measures against it
        produce(self.producer, topic, value, key, headers=list(headers), **timestamp)

    def finish(self) -> None:
        """Wait until every message is acknowledged; DeliveryFailed, or KafkaUnavailable after a minute."""
        from pipeline.kafka.clients import flush_within

        flush_within(self.producer, "the replayed dead letters")
        self.delivery.raise_if_failed()


def replay(
    settings: Settings,
    filt: DeadLetterFilter,
    dry_run: bool = False,
    letters: Iterable[DeadLetter] | None = None,
    sender: Sender | None = None,
) -> ReplayResult:
    """Re-send the dead letters matching ``filt`` to their raw topics, byte for byte, same key.

    ``letters`` defaults to :func:`read_dead_letters`. Only dead letters from
    this deployment's raw topics are replayed; identical (topic, key, payload)
    messages are sent once. Each re-sent message carries an ``o2o.replay_of``
    header naming the dead letter's position, for tracing.
    """
    if letters is None:
        letters = read_dead_letters(settings)
    allowed = set(raw_topics(settings))
    dlq_topic = settings.topic(DLQ)
    result = ReplayResult(dry_run=dry_run)
    seen: set[tuple[str, bytes | None, bytes]] = set()
    if not dry_run and sender is None:
        sender = KafkaSender(settings)
    for letter in letters:
        result.scanned += 1
        if not filt.matches(settings, letter):
            continue
        result.matched += 1
        if letter.topic not in allowed:
            result.not_replayable += 1
            log.warning("dead letter %s: origin %r is not a raw topic; skipped", letter.origin, letter.topic)
            continue
        identity = (letter.topic, letter.key, hashlib.sha256(letter.value).digest())
        if identity in seen:
            result.duplicates += 1
            continue
        seen.add(identity)
        result.resent[letter.reason] += 1
        if sender is not None and not dry_run:
            position = f"{dlq_topic}:{letter.dlq_partition}:{letter.dlq_offset}".encode()
            sender.send(letter.topic, letter.value, letter.key, [(REPLAY_HEADER, position)])
    if sender is not None and not dry_run:
        sender.finish()
    return result
