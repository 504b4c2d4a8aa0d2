"""Size limits that line up, derived in one place from ``O2O_MAX_EVENT_BYTES``.

A raw event may be up to ``max_event_bytes``. Ingest's normalised record of
it is larger (hashed identifiers, the receipt time, the origin), and a
record travels between stages in an envelope; a dead letter carries the
raw bytes plus its reason in headers. So:

- :func:`record_bytes`, the largest record one stage hands the next: twice
  the event plus a margin. Ingest checks a large event's normalised record
  against it and dead-letters it as ``too_large`` when it is over.
- :func:`message_bytes`, the largest Kafka message the pipeline writes or
  accepts: a record plus the envelope's and headers' margin, never below
  Kafka's own default. ``o2o init`` sets it as every topic's
  ``max.message.bytes``, every producer as ``message.max.bytes``, and the
  faust stages fetch up to it per partition.
- :func:`identifiers_per_person`, the most identifiers identity links to one
  person, so that a person's state stays within a record.
"""

from __future__ import annotations

from pipeline.config import Settings

MARGIN = 64 * 1024
"""Room for what a stage adds around a record: envelope framing, headers, a dead letter's reason."""

KAFKA_DEFAULT_MESSAGE_BYTES = 1_048_588
"""The broker's default ``message.max.bytes``; the pipeline never asks for less."""


IDENTIFIER_STATE_BYTES = 600
"""Room one identifier can take in a person's identity record: its key (up to 512 characters) and an alias."""


def identifiers_per_person(settings: Settings) -> int:
    """How many identifiers identity links to one person: the setting, at most what fits a state record.

    A person's record lists every identifier it holds; it must stay within
    what a changelog record may hold (:func:`record_bytes`), whatever the
    identifiers' lengths.
    """
    fits = max((record_bytes(settings) - MARGIN) // IDENTIFIER_STATE_BYTES, 1)
    return min(settings.identity_max_ids_per_person, fits)


def record_bytes(settings: Settings) -> int:
    """The largest serialised record a stage may hand the next."""
    return 2 * settings.max_event_bytes + MARGIN


def message_bytes(settings: Settings) -> int:
    """The largest Kafka message the pipeline writes: topics' ``max.message.bytes``, producers' limit."""
    return max(record_bytes(settings) + MARGIN, KAFKA_DEFAULT_MESSAGE_BYTES)
