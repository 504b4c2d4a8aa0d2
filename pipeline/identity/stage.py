"""The identity stage: resolve each event's person and re-key it by person_id."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Collection, Mapping, MutableMapping, Sequence
from typing import Any

from pipeline.config import BUILT_IN_CONSENT
from pipeline.identity.consent import ConsentLedger, stated
from pipeline.identity.erasure import carries
from pipeline.identity.graph import IdentityGraph, identified_by
from pipeline.identity.reorder import DurableReorder, held_partition_key
from pipeline.journeys.sessions import unlinked_event_row
from pipeline.kafka import topics
from pipeline.kafka.envelopes import partition_for
from pipeline.model.contract import CONSENT_UPDATED, strongest_id
from pipeline.model.event_clock import progress_records
from pipeline.model.handler import Emission
from pipeline.model.rows import CONSENT, EVENTS, ROW_TABLES_BY_NAME

log = logging.getLogger(__name__)

RELEASE_PER_STEP = 2000
"""Held events resolved per step at most: a backlog the watermark frees at once (every source caught
up after a pause) goes over several steps and ticks, so no step holds the event loop for seconds."""

PROGRESS_FRESH_SECONDS = 3.0
"""How recent ingest's marks must be for identity to vouch (ingest repeats them every second)."""


class IdentityHandler:
    """Resolves events with an :class:`IdentityGraph` over the stage's tables."""

    table_names = topics.STATE_TABLES["identity"]
    # one key per held event, on the partition of its source message's key
    partition_keys = {"identity_pending": held_partition_key}

    def __init__(
        self,
        max_persons_per_id: int = 5,
        origins: Sequence[str] = (),
        suppressions: Any = None,
        workers: int = 1,
        valid_partitions: int = 0,
        idle_seconds: float = 30.0,
        consent_defaults: Mapping[str, bool] | None = None,
        keep_without_consent: bool = True,
        max_ids_per_person: int = 1000,
    ) -> None:
        # One process: the graph is updated straight from events.valid. Several:
        # every process forwards its events.valid partitions to the one-partition
        # identity.sequence, and whichever process owns that partition applies
        # them to the graph (docs/identity.md, "Several identity processes").
        self.inputs: tuple[str, ...] = (topics.SEQUENCE,) if workers > 1 else (topics.VALID,)
        self.forward_from: tuple[str, ...] = (topics.VALID,) if workers > 1 else ()
        self.needs_every_partition = workers == 1
        self.valid_partitions = valid_partitions
        self.max_persons_per_id = max_persons_per_id
        self.max_ids_per_person = max_ids_per_person
        self.origins = tuple(origins)  # "<source>/<raw partition>" of every raw partition
        self.suppressions = suppressions  # the erasure list (o2o forget), if any
        self.suppressed: set[str] = set()
        self.graph: IdentityGraph | None = None
        self.consent: ConsentLedger | None = None
        self.consent_defaults = dict(consent_defaults or BUILT_IN_CONSENT)
        self.keep_without_consent = keep_without_consent  # O2O_KEEP_WITHOUT_ANALYTICS_CONSENT
        self.counts: Counter[str] = Counter()
        self._late_logged_at = -float("inf")
        # Sources arrive on separate topics and partitions are fetched in
        # chunks; resolving in event-time order makes links and merges follow
        # what happened, and hands journeys its events in order.
        self.partitions = 1
        self._expected: list[str] = []  # the streams of every raw partition, through each valid one
        self.reorder = DurableReorder(
            key_of=source_key, stream_of=self._stream, idle_seconds=idle_seconds, at_most=RELEASE_PER_STEP
        )

    def bind(self, tables: Mapping[str, MutableMapping[str, Any]], partitions: int = 1) -> None:
        """Build the graph over the given state tables."""
        self.graph = IdentityGraph(
            tables["identity_ids"], tables["identity_persons"],
            max_persons_per_id=self.max_persons_per_id, max_ids_per_person=self.max_ids_per_person,
        )  # fmt: skip
        self.consent = ConsentLedger(tables["identity_persons"], self.consent_defaults)
        self.reorder.bind(tables["identity_pending"])
        self.partitions = self.valid_partitions or partitions
        self._expected = [f"{o}>{p}" for o in self.origins for p in range(self.partitions)]
        self.reorder.buffer.expect(self._expected)

    def release_partitions(self, _partitions: Collection[int]) -> None:
        """Another process holds (some of) the input now: drop the held events, as at a start.

        The held events stay in ``identity_pending`` for the new owner; the
        ones of partitions kept here are read back from it before anything
        more is released, as after a restart.
        """
        self.reorder.reset()
        self.reorder.buffer.expect(self._expected)

    def forward(self, records: Sequence[dict[str, Any]]) -> list[Emission]:
        """Several identity processes: pass events.valid records on to the sequence partition."""
        return [(topics.SEQUENCE, "sequence", record) for record in records]

    def _stream(self, event: dict[str, Any]) -> str:
        """The ordered path an event came on: its raw partition, then its ``events.valid`` partition.

        Events of one raw partition stay in order through ingest and on one
        valid partition, so each such path is in event-time order; the
        reorder buffer waits for the slowest active one.
        """
        origin = event.get("origin") or event["source"]
        return f"{origin}>{partition_for(source_key(event).encode(), self.partitions)}"

    def process(self, records: Sequence[dict[str, Any]]) -> list[Emission]:
        """Resolve a batch of validated events, in event-time order; apply erasures."""
        out: list[Emission] = []
        if self.suppressions is not None:
            self.suppressions.refresh()
            self.suppressed |= self.suppressions.identifiers
        events = []
        for record in records:
            control = record.get("record")
            if control == "progress":
                self._progress(record)
            elif control == "forget":
                out += self._forget(record)
            elif self.suppressed and carries(record["ids"], self.suppressed):
                self.counts["suppressed"] += 1  # passed ingest before its person was erased
            else:
                events.append(record)
        released = self.reorder.add_all(events)
        self._note_late()
        return out + self._resolve(released)

    def _note_late(self) -> None:
        """Count events that came after newer ones were resolved; say so at most once a minute."""
        late = self.reorder.buffer.late - self.counts["late_events"]
        if not late:
            return
        self.counts["late_events"] += late
        now = time.monotonic()
        if now - self._late_logged_at >= 60:
            self._late_logged_at = now
            stream, by = self.reorder.buffer.last_late
            log.warning("identity: %d events in all arrived after newer ones were resolved (the last on "
                        "%s, %d ms late; see O2O_REORDER_IDLE_SECONDS)", self.counts["late_events"],
                        stream, by)  # fmt: skip

    def _progress(self, record: dict[str, Any]) -> None:
        """Ingest's marks for one events.valid partition (pipeline/ingest/progress.py)."""
        partition = record["partition"]
        times = record.get("times") or {}
        for origin, at_end in record["marks"].items():
            self.reorder.buffer.progress(f"{origin}>{partition}", bool(at_end), times.get(origin))

    def _forget(self, record: dict[str, Any]) -> list[Emission]:
        """Drop erased persons and identifiers from the graph; tell journeys (once, from copy 0)."""
        assert self.graph is not None, "bind() first"
        self.suppressed |= set(record.get("keys") or ())
        self.graph.forget(record.get("keys") or (), record.get("persons") or ())
        self.counts["forgotten"] += len(record.get("persons") or ())
        if record.get("copy", 0) != 0:
            return []
        return [
            (topics.IDENTIFIED, p, {"record": "forget", "person_id": p}) for p in record.get("persons") or ()
        ]

    def _resolve(self, events: Sequence[dict[str, Any]]) -> list[Emission]:
        assert self.graph is not None and self.consent is not None, "bind() first"
        out: list[Emission] = []
        for event in events:
            if event["type"] != CONSENT_UPDATED and not self._analytics(event, out):
                continue
            result = self.graph.resolve(event)  # type: ignore[arg-type]
            person = result.person_id
            event["person_id"] = person
            since = self.graph.identified_since(person)
            event["identified_since"] = since
            event["identified"] = identified_by(since, event["occurred_at"])
            for row in self.consent.note(person, event):  # type: ignore[arg-type]
                out.append((CONSENT.topic, row["consent_id"], row))
            # downstream stages read the person's consent at the event's time from the event
            event["consent"] = self.consent.known(person, event["occurred_at"])
            for table, row in result.rows:
                key = (
                    row.get("person_id", "")
                    if table != "identities"
                    else f"{row['id_type']}:{row['id_value']}"
                )
                out.append((ROW_TABLES_BY_NAME[table].topic, key, row))
            for merged in result.merged:
                merge = {"from_person": merged, "to_person": person, "merged_at": event["occurred_at"]}
                out.append((topics.MERGES, merged, merge))
                # after the merged person's events on its partition: journeys hands its state over
                control = {
                    "record": "merge",
                    "person_id": merged,
                    **merge,
                    "seq": self.graph.next_merge_sequence(),
                }
                out.append((topics.IDENTIFIED, merged, control))
            out.append((topics.IDENTIFIED, person, event))
        return out

    def _analytics(self, event: dict[str, Any], out: list[Emission]) -> bool:
        """True when the event may be linked and passed on; else it is stored unlinked (or dropped).

        Without analytics consent at the event's time (its own flag, else its
        known person's, else the default) an event links nothing and reaches
        no session or attribution; statements it carries still count.
        """
        assert self.graph is not None and self.consent is not None
        if stated(event).get("analytics") is True:  # type: ignore[arg-type]
            return True  # its own flag grants it: no need to know whose it is
        person = self.graph.person_of(event)  # type: ignore[arg-type]
        if self.consent.allows(person, event, "analytics"):  # type: ignore[arg-type]
            return True
        self.counts["no_analytics_consent"] += 1
        if person is not None:
            for row in self.consent.note(person, event):  # type: ignore[arg-type]
                out.append((CONSENT.topic, row["consent_id"], row))
        if self.keep_without_consent:
            out.append((EVENTS.topic, event["event_id"], unlinked_event_row(event)))  # type: ignore[arg-type]
        return False

    def tick(self) -> list[Emission]:
        """Resolve held events once idle sources stop holding them back; read new suppressions while idle.

        When everything is passed on and ingest says it has read everything,
        every partition of ``events.identified`` gets a ``progress`` record:
        journeys and activation move a quiet partition's event time on only
        over time so vouched for (pipeline/model/event_clock.py).
        """
        if self.suppressions is not None:
            self.suppressions.refresh()
            self.suppressed |= self.suppressions.identifiers
        out = self._resolve(self.reorder.release())
        # nothing held (a bounded release's rest included): ingest vouched for every stream
        if self.reorder.buffer.caught_up(PROGRESS_FRESH_SECONDS):
            out += [(topics.IDENTIFIED, key, record) for key, record in progress_records(self.partitions)]
        return out

    def backlog(self) -> bool:
        """True when held events the watermark lets through are left for the next step (a bounded one)."""
        return self.reorder.buffer.releasable()

    def flush(self) -> list[Emission]:
        """End of input: resolve every held event."""
        return self._resolve(self.reorder.release(everything=True))


def source_key(event: dict[str, Any]) -> str:
    """The key ingest gave the event: its strongest identifier."""
    strongest = strongest_id(event["ids"])
    return f"{strongest[0]}:{strongest[1]}" if strongest else event["event_id"]
