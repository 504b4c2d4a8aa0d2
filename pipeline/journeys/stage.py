"""The journeys stage: sessions and store visits per person, touchpoints for attribution.

Event time is kept per input partition (:class:`~pipeline.model.event_clock.PartitionClock`):
a partition's watermark is the newest event time seen on it, and after
``idle_partition_seconds`` without input it moves on with the clock, so a
quiet store still gets its visit closed. Persons wait per partition for the
next watermark at which their sessions close or become final, so a watermark
step touches only the persons it concerns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from pipeline.config import Settings
from pipeline.identity.forwarding import record_merge, settle_handoff
from pipeline.journeys.channels import DEFAULT_RULES, load_channel_rules
from pipeline.journeys.sessions import Output, SessionRules, event_row
from pipeline.journeys.timeline import JourneyTimeline, release_oldest_session
from pipeline.kafka import topics
from pipeline.kafka.envelopes import partition_for
from pipeline.model.contract import STATEMENT_TYPES
from pipeline.model.event_clock import PROGRESS, PartitionClock, watermark_key
from pipeline.model.handler import Emission, trimmed
from pipeline.model.rows import EVENTS, SESSIONS

__all__ = ["JourneysHandler", "watermark_key"]


class JourneysHandler:
    """Runs the :class:`JourneyTimeline` of each person over the stage's state tables."""

    table_names = topics.STATE_TABLES["journeys"]
    inputs = (topics.IDENTIFIED,)

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        channels = load_channel_rules(settings.channel_rules) if settings.channel_rules else DEFAULT_RULES
        self.timeline = JourneyTimeline(SessionRules.from_settings(settings), channels)
        self.counts = self.timeline.counts
        self.events_clock = PartitionClock(settings.idle_partition_seconds, clock)
        self.watermarks = self.events_clock.watermarks  # partition -> watermark, for readers
        self.partitions = 1
        self.state: MutableMapping[str, Any] = {}
        self.forward: MutableMapping[str, Any] = {}  # merged person -> survivor, for late hand-overs

    def bind(self, tables: Mapping[str, MutableMapping[str, Any]], partitions: int = 1) -> None:
        """Use the given state tables; ``partitions`` is the input topic's partition count."""
        self.state = tables["journeys_state"]
        self.forward = tables.get("journeys_forward", {})
        self.partitions = partitions
        self.events_clock.bind(tables["journeys_watermarks"], partitions)

    def release_partitions(self, partitions: Collection[int]) -> None:
        """Another process holds these input partitions now: forget their watermarks and deadlines."""
        self.events_clock.release(partitions)

    def partition_of(self, person: str) -> int:
        """The input partition of a person (its records are keyed by person id)."""
        return partition_for(person.encode(), self.partitions)

    def process(self, records: Sequence[dict[str, Any]]) -> list[Emission]:
        """Place a batch of person-keyed events; publish what the new watermarks close.

        Besides events, the input carries two control records: ``merge`` (from
        identity, keyed by the merged person, after its events) hands the
        person's state to the survivor's partition as ``handoff``; ``handoff``
        re-cuts it with the survivor's events, or passes it on when the person
        merged on since. Forward cycles are cut (``forward_cycles_cut``).
        """
        out: list[Output] = []
        handoffs: list[Emission] = []
        pending: dict[str, list[dict[str, Any]]] = {}
        newest: dict[int, int] = {}
        for record in records:
            control = record.get("record")
            person = record["person_id"]
            if control is None:
                if record["type"] in STATEMENT_TYPES:  # a statement, not a visit: no session
                    out.append(("event", event_row(record, "")))  # type: ignore[arg-type]
                    continue
                pending.setdefault(person, []).append(record)
                continue
            if control == PROGRESS:  # identity vouches for the partition (event_clock.py)
                self.events_clock.vouch(record["partition"])
                continue
            self._place(person, pending.pop(person, []), newest, out)
            if control == "merge":
                if record_merge(
                    self.forward, person, record["to_person"], self.counts, "journeys", record.get("seq")
                ):
                    handoffs.append(self._hand_over(record, out))
            elif control == "forget":  # o2o forget: the person is erased
                if person in self.state:
                    del self.state[person]
                if person in self.forward:
                    del self.forward[person]
                out.append(("forget", {"person_id": person}))
                self.counts["forgotten"] += 1
            elif control == "handoff":
                # never round a cycle of the forward table (pipeline/identity/forwarding.py)
                target = settle_handoff(
                    self.forward, person, record.get("from_person", ""), self.counts, "journeys"
                )
                if target != person:  # this person merged on since: pass the state on
                    handoffs.append((topics.IDENTIFIED, target, {**record, "person_id": target}))
                    continue
                partition = self._watch(self.partition_of(person))
                state = self.timeline.absorb(
                    self.state.get(person), record["state"], person, self.watermarks[partition], out
                )
                self._store(person, partition, state)
                self.counts["handoffs"] += 1
        for person, events in pending.items():
            self._place(person, events, newest, out)
        self.events_clock.observed(newest)
        for partition in newest:
            self._advance(partition, out)
        return [*handoffs, *(_route(kind, record) for kind, record in out)]

    def _place(
        self, person: str, events: list[dict[str, Any]], newest: dict[int, int], out: list[Output]
    ) -> None:
        if not events:
            return
        partition = self._watch(self.partition_of(person))
        state = self.timeline.place(self.state.get(person), events, self.watermarks[partition], out)  # type: ignore[arg-type]
        self._store(person, partition, state)
        latest = max(event["occurred_at"] for event in events)
        newest[partition] = max(newest.get(partition, latest), latest)

    def _hand_over(self, merge: dict[str, Any], out: list[Output]) -> Emission:
        """Send a merged person's held events to the survivor; tell attribution to do the same.

        The caller has recorded the merge in ``forward`` already.
        """
        merged, survivor = merge["person_id"], merge["to_person"]
        state = self.state.get(merged) or {}
        if merged in self.state:
            del self.state[merged]
        # sessions still held here come back re-cut under the survivor: attribution
        # need not hand their touches over
        held = sorted(state.get("emitted", {}))
        merge_record = {
            "person_id": merged,
            "to_person": survivor,
            "held_sessions": held,
            "seq": merge.get("seq"),
        }
        out.append(("merge", merge_record))
        self.counts["merges"] += 1
        handoff = {"record": "handoff", "person_id": survivor, "from_person": merged, "state": state}
        return (topics.IDENTIFIED, survivor, handoff)

    def trim_state(self, table: str, _key: str, value: Any) -> Any:
        """A person's state too large for a changelog record loses its oldest held session (counted)."""
        return trimmed(table, "journeys_state", value, release_oldest_session, self.counts)

    def tick(self) -> list[Emission]:
        """Move the watermark of idle partitions on with the clock and publish what it closes."""
        out: list[Output] = []
        for partition in self.events_clock.idle_steps():
            self._advance(partition, out)
        return [_route(kind, record) for kind, record in out]

    def flush(self) -> list[Emission]:
        """End of input: publish every session as closed and forget them."""
        out: list[Output] = []
        for person in list(self.state.keys()):
            state = self.state.get(person)
            if state:
                self._store(person, self.partition_of(person), self.timeline.close_all(state, out))
        return [_route(kind, record) for kind, record in out]

    def _watch(self, partition: int) -> int:
        """Load a partition's watermark and index its persons the first time it is seen."""
        return self.events_clock.watch(partition, lambda: self._deadlines(partition))

    def _deadlines(self, partition: int) -> Iterator[tuple[int, str]]:
        for person in list(self.state.keys()):
            state = self.state.get(person)
            if state and state.get("next") is not None and self.partition_of(person) == partition:
                yield state["next"], person

    def _store(self, person: str, partition: int, state: dict[str, Any]) -> None:
        if not state["events"]:
            if person in self.state:
                del self.state[person]
            return
        self.state[person] = state
        if state["next"] is not None:
            self.events_clock.schedule(partition, state["next"], person)

    def _advance(self, partition: int, out: list[Output]) -> None:
        """Publish the persons whose deadline the partition's watermark has reached."""
        watermark = self.watermarks[partition]
        for deadline, person in self.events_clock.due(partition):
            state = self.state.get(person)
            if not state or state.get("next") != deadline:
                continue  # an older entry of a person re-scheduled since
            self._store(person, partition, self.timeline.advance(state, watermark, out))


def _route(kind: str, record: dict[str, Any]) -> Emission:
    if kind == "event":
        return (EVENTS.topic, record["event_id"], record)
    if kind == "session":
        return (SESSIONS.topic, record["session_id"], record)
    # touches, their removals, conversions and returns go to attribution, keyed by person
    return (topics.JOURNEYS, record["person_id"], {**record, "record": kind})
