"""The journeys stage: sessions and store visits per person, touchpoints for attribution."""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from pipeline.config import Settings
from pipeline.journeys.reorder import DurableReorder
from pipeline.journeys.sessions import Output, Sessionizer, new_state
from pipeline.kafka import topics
from pipeline.model.rows import EVENTS, SESSIONS
from pipeline.runtime.faust_stage import Emission

MINUTE_MS = 60_000


class JourneysHandler:
    """Runs the :class:`Sessionizer` over a per-person state table."""

    table_names = ("journeys_state", "journeys_pending")
    inputs = (topics.IDENTIFIED,)

    def __init__(self, settings: Settings) -> None:
        self.sessionizer = Sessionizer(
            timeout_ms=int(settings.session_timeout_minutes * MINUTE_MS),
            max_length_ms=int(settings.session_max_hours * 60 * MINUTE_MS),
            visit_timeout_ms=int(settings.visit_timeout_minutes * MINUTE_MS),
        )
        self.state: MutableMapping[str, Any] = {}
        self.reorder = DurableReorder(key_of=lambda event: str(event["person_id"]))
        self.watermark = 0
        self._idle_since = time.monotonic()

    def bind(self, tables: Mapping[str, MutableMapping[str, Any]]) -> None:
        """Use the given per-person state table and the table of buffered events."""
        self.state = tables["journeys_state"]
        self.reorder.bind(tables["journeys_pending"])

    def process(self, records: Sequence[dict[str, Any]]) -> list[Emission]:
        """Place a batch of person-keyed events into sessions, in event-time order."""
        ready = self.reorder.add_all(list(records))
        self._idle_since = time.monotonic()
        return self._place(ready)

    def _place(self, events: Sequence[dict[str, Any]]) -> list[Emission]:
        out: list[Output] = []
        for event in events:
            person = event["person_id"]
            state = self.state.get(person) or new_state()
            self.state[person] = self.sessionizer.process(state, event, out)  # type: ignore[arg-type]
            self.watermark = max(self.watermark, event["occurred_at"])
        return [_route(kind, record) for kind, record in out]

    def tick(self) -> list[Emission]:
        """Close sessions that can no longer grow, at the event-time watermark.

        On a partition that went quiet the watermark stops moving; after a
        while of no input at all, processing time takes over so that idle
        stores still get their visits closed.
        """
        emitted = self._place(self.reorder.release())
        watermark = self.watermark
        idle = time.monotonic() - self._idle_since
        if idle > 60:
            watermark += int(idle * 1000)
        return emitted + self._close(lambda state, out: self.sessionizer.expire(state, watermark, out))

    def flush(self) -> list[Emission]:
        """Place every buffered event, then close every open session (end of input)."""
        emitted = self._place(self.reorder.release(everything=True))
        return emitted + self._close(self.sessionizer.close_all)

    def _close(self, action: Any) -> list[Emission]:
        out: list[Output] = []
        for person in list(self.state.keys()):
            state = self.state.get(person)
            if not state or (state["digital"] is None and not state["visits"]):
                continue
            before = len(out)
            new = action(state, out)
            if len(out) != before:
                self.state[person] = new
        return [_route(kind, record) for kind, record in out]


def _route(kind: str, record: dict[str, Any]) -> Emission:
    if kind == "event":
        return (EVENTS.topic, record["event_id"], record)
    if kind == "session":
        return (SESSIONS.topic, record["session_id"], record)
    # touches and conversions go to attribution, keyed by person
    return (topics.JOURNEYS, record["person_id"], {**record, "record": kind})
