"""The ingest stage: raw topics -> validated, normalised events (or dead letters)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence

import orjson
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from pipeline.config import Settings
from pipeline.errors import FatalError, InvalidEvent
from pipeline.identity.erasure import Suppressions, carries
from pipeline.ingest.normalize import Deduplicator, EventNormalizer, redact_key, redact_pii
from pipeline.ingest.progress import ProgressMarks
from pipeline.ingest.schemas import default_registry
from pipeline.journeys.sessions import unlinked_event_row
from pipeline.kafka import topics
from pipeline.kafka.admin import partition_counts
from pipeline.kafka.clients import DeliveryTracker, make_producer, produce
from pipeline.kafka.envelopes import pack
from pipeline.model.contract import CONSENT_UPDATED, strongest_id
from pipeline.model.limits import record_bytes
from pipeline.model.rows import EVENTS

log = logging.getLogger(__name__)

COMMIT_SECONDS = 0.25


def dead_letter_headers(
    reason: str, detail: str, topic: str, partition: int, offset: int, received_at: int
) -> list[tuple[str, bytes]]:
    """Kafka headers of a dead letter; the message value stays the original bytes."""
    return [
        ("o2o.reason", reason.encode()),
        ("o2o.detail", detail.encode("utf-8", "replace")[:2000]),
        ("o2o.topic", topic.encode()),
        ("o2o.partition", str(partition).encode()),
        ("o2o.offset", str(offset).encode()),
        ("o2o.received_at", str(received_at).encode()),
    ]


class IngestHandler:
    """Validates each raw message; valid events go on, bad ones to the dead-letter topic."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.normalizer = EventNormalizer.from_settings(settings, default_registry())
        self.dedup = Deduplicator(settings.dedup_max_ids, int(settings.dedup_window_minutes * 60_000))
        self.suppressions = Suppressions(settings, "ingest-suppressions").load()
        self.keep_without_consent = settings.keep_without_analytics_consent
        self.events_topic = settings.topic(EVENTS.topic)
        self.counts: Counter[str] = Counter()
        self.valid_topic = settings.topic(topics.VALID)
        counts = partition_counts(settings)
        if self.valid_topic not in counts:
            raise FatalError(f"topic {self.valid_topic} does not exist; run `o2o init`")
        self.partitions = {topic: counts[topic] for topic in (self.valid_topic, settings.topic(EVENTS.topic))}
        self.dlq_topic = settings.topic(topics.DLQ)
        self.dead_letter_room = record_bytes(settings)
        self.marks = ProgressMarks()
        self._durable_at = time.monotonic()
        self._source_of = {settings.topic(name): source for source, name in topics.RAW_TOPICS.items()}
        self.delivery = DeliveryTracker()
        self.producer = make_producer(settings, on_delivery=self.delivery)

    def handle(self, messages: Sequence[Message]) -> None:
        """Normalise a batch and produce its outputs."""
        now = int(time.time() * 1000)
        valid: list[tuple[str, str, dict[str, object]]] = []
        self.suppressions.refresh()
        suppressed = self.suppressions.identifiers
        for message in messages:
            raw = message.value() or b""
            # received = when the event reached Kafka (producer/collector time),
            # so ingest lag or a backfill is not mistaken for device clock skew
            kind, stamp = message.timestamp()
            received = stamp if kind != TIMESTAMP_NOT_AVAILABLE and 0 < stamp <= now else now
            try:
                event = self.normalizer.normalise(raw, received)
                if suppressed and carries(event["ids"], suppressed):
                    raise InvalidEvent("suppressed", "$.ids: an identifier of a person erased by o2o forget")
            except InvalidEvent as exc:
                self.counts[f"dead_letter.{exc.reason}"] += 1
                payload = redact_pii(raw, self.settings.salt, self.settings.phone_region)
                detail = exc.detail
                if len(payload) > self.dead_letter_room:  # no room left for the headers otherwise
                    detail += (
                        f"; stored truncated to its first {self.dead_letter_room} of {len(payload)} bytes"
                    )
                    payload = payload[: self.dead_letter_room]
                headers = dead_letter_headers(
                    exc.reason, detail, message.topic() or "", message.partition() or 0,
                    message.offset() or 0, received,
                )  # fmt: skip
                dlq_key = message.key()
                if dlq_key is not None:
                    dlq_key = redact_key(dlq_key, self.settings.salt, self.settings.phone_region)
                produce(self.producer, self.dlq_topic, payload, dlq_key, headers=headers)
                continue
            if self.dedup.seen(event["event_id"], now):
                self.counts["duplicate"] += 1
                continue
            # a consent_updated event goes on whatever it says: identity keeps the person's consent
            withdrawn = (event.get("consent") or {}).get("analytics") is False
            if withdrawn and event["type"] != CONSENT_UPDATED:
                # Never used for identity, sessions or attribution; stored
                # (without person or session) only if the settings say so.
                self.counts["no_analytics_consent"] += 1
                if self.keep_without_consent:
                    valid.append((self.events_topic, event["event_id"], unlinked_event_row(event)))
                continue
            self.counts["valid"] += 1
            strongest = strongest_id(event["ids"])
            key = f"{strongest[0]}:{strongest[1]}" if strongest else event["event_id"]
            # each raw partition is in event-time order; identity's reorder
            # buffer follows every such stream (see pipeline/identity/reorder.py)
            origin = f"{event['source']}/{message.partition()}"
            self.marks.passed(origin, event["occurred_at"])
            valid.append((self.valid_topic, key, {**event, "origin": origin}))
        for topic, partition, value in pack(valid, self.partitions, spread=(self.events_topic,)):
            produce(self.producer, topic, value, partition=partition)
        self.producer.poll(0)

    def progress(self, at_end: Sequence[tuple[str, int]], final: bool = False) -> None:
        """Tell identity, in order with the events, how far each raw partition has got.

        See pipeline/ingest/progress.py. Called at every poll, input or not: new
        suppressions are read here too while no input comes (``o2o forget`` waits for it).
        ``final`` (a drain's end): the marks go out now, whatever their interval, so a
        drained ingest leaves every origin it read marked as read to its end.
        """
        self.suppressions.refresh()
        for topic, partition in at_end:
            self.marks.reached_end(f"{self._source_of.get(topic, topic)}/{partition}")
        if final or self.marks.due():
            for record in self.marks.records(self.partitions[self.valid_topic]):
                produce(self.producer, self.valid_topic, orjson.dumps(record), partition=record["partition"])
            self.producer.poll(0)

    def revoked(self, partitions: Sequence[tuple[str, int]]) -> None:
        """Partitions read by another process now: their marks are its to send."""
        for topic, partition in partitions:
            self.marks.forget(f"{self._source_of.get(topic, topic)}/{partition}")

    def due(self) -> bool:
        """Commit at most every :data:`COMMIT_SECONDS` while input keeps coming (at once when it stops).

        Making outputs durable blocks the loop until Kafka acknowledged them;
        once per batch, at a steady rate, that waiting is most of the time.
        """
        return time.monotonic() - self._durable_at >= COMMIT_SECONDS

    def make_durable(self) -> None:
        """Wait until Kafka acknowledged every produced message."""
        self.producer.flush()
        self.delivery.raise_if_failed()
        self._durable_at = time.monotonic()

    def close(self) -> None:
        """Flush what is left."""
        self.producer.flush()
        self.suppressions.close()
        log.info("ingest counts: %s", dict(self.counts))
