"""A person's journey in event time, with late events (pure, no Kafka).

:class:`JourneyTimeline` keeps, per person, the events of the sessions that a
late event could still change, and re-cuts them (:func:`cut_sessions`)
whenever new ones arrive. It is driven by the watermark of the person's
partition (the newest event time seen there, or processing time on an idle
partition) and the allowed lateness ``L``:

* an event at or after ``watermark - L`` is placed where it belongs, however
  late it came: sessions may split, join or get a new first event; changed
  sessions are re-emitted with a higher version, sessions that no longer
  exist are retracted, events that moved are re-emitted with their new
  session (a conversion among them is sent to attribution again, with it),
  and attribution gets touch updates and removals;
* an event before ``watermark - L`` is *very late*: stored, flagged ``late``,
  given the session that covers its time if one is still held, counted, and
  no session is rewritten;
* a session is published when it appears and again when it closes (no
  in-order event can join it any more) or changes after that; it is *final*
  once not even an event within the lateness could change it, and then its
  events leave the state.

The state of a person is a plain JSON-serialisable dict::

    {"events":  [[event, session_id, version], ...],   # held, in event order
     "emitted": {session_id: [version, row_print, touch_print, first_event_id]},
                 # row_print None: retracted (kept while its first event is held)
     "next":    watermark at which advance() has something to do, or None,
     "identified_since": the earliest time identity said the person is identified from}
"""

from __future__ import annotations

import bisect
import zlib
from collections import Counter
from typing import Any

import orjson

from pipeline.journeys.channels import DEFAULT_RULES, ChannelRules
from pipeline.journeys.sessions import (
    Classifier,
    Cut,
    Output,
    SessionRules,
    conversion_record,
    cut_sessions,
    event_order,
    event_row,
    retraction_row,
    return_record,
    store_of,
)
from pipeline.model.contract import DIGITAL_SOURCES, Event, conversion_kind

END_OF_TIME = 2**62  # a watermark past every event: closes and finalises everything


def new_state() -> dict[str, Any]:
    """The state of a person with nothing held."""
    return {"events": [], "emitted": {}, "next": None}


def release_oldest_session(state: dict[str, Any]) -> dict[str, Any] | None:
    """The state without its oldest held session: the rule that bounds a person's state (hot keys).

    The session's events leave the state as if it were final, and it is
    forgotten here: its rows stay as last published, a late event in its time
    becomes a session of its own, and an open session is cut (the person's
    next event starts a new one). None when nothing is held.
    """
    held = state.get("events") or []
    if not held:
        return None
    oldest = held[0][1]
    if not oldest:  # placed but not cut yet: release that event alone
        return {**state, "events": held[1:]}
    gone = {entry[0]["event_id"] for entry in held if entry[1] == oldest}
    kept = [entry for entry in held if entry[1] != oldest]
    emitted = {
        sid: e for sid, e in (state.get("emitted") or {}).items() if sid != oldest and e[3] not in gone
    }
    return {**state, "events": kept, "emitted": emitted}


def _print(value: Any) -> int:
    """A fingerprint that is stable across processes (``hash()`` is salted)."""
    return zlib.crc32(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


class JourneyTimeline:
    """Places a person's events into sessions in event time, late events included."""

    def __init__(self, rules: SessionRules, channels: ChannelRules = DEFAULT_RULES) -> None:
        self.rules = rules
        self.classify: Classifier = channels.classify
        self.counts: Counter[str] = Counter()

    def place(
        self, state: dict[str, Any] | None, events: list[Event], watermark: int, out: list[Output]
    ) -> dict[str, Any]:
        """Add new events of one person, seen when the partition was at ``watermark``."""
        state = dict(state) if state else new_state()
        held: list[list[Any]] = list(state["events"])
        known = {entry[0]["event_id"] for entry in held}
        horizon = watermark - self.rules.lateness_ms
        newest = held[-1][0]["occurred_at"] if held else None
        placed: list[Event] = []
        very_late: list[Event] = []
        for event in events:
            if event["event_id"] in known:
                continue  # a replay after a restart: already placed
            known.add(event["event_id"])
            if event["occurred_at"] < horizon:
                very_late.append(event)
                continue
            if newest is not None and event["occurred_at"] < newest:
                self.counts["late_events"] += 1
            bisect.insort(held, [event, "", 0], key=lambda entry: event_order(entry[0]))
            placed.append(event)
        state["events"] = held
        _note_identified(state, [event.get("identified_since") for event in events])
        cuts, of_event = self._publish(state, watermark, out)
        for event in placed:
            self._outputs(event, of_event[event["event_id"]].row, out)
        for event in very_late:
            self.counts["very_late_events"] += 1
            session = _covering(cuts, event)
            row = event_row(event, session["session_id"] if session else "", late=True, version=0)
            out.append(("event", row))
            self._outputs(event, session, out)
        return self._finalise(state, cuts, watermark)

    def advance(self, state: dict[str, Any], watermark: int, out: list[Output]) -> dict[str, Any]:
        """The partition's watermark moved: publish closed sessions, forget final ones."""
        cuts, _ = self._publish(dict(state), watermark, out)
        return self._finalise(dict(state), cuts, watermark)

    def close_all(self, state: dict[str, Any], out: list[Output]) -> dict[str, Any]:
        """End of input: publish every session as closed; nothing is held afterwards."""
        return self.advance(state, END_OF_TIME, out)

    def absorb(
        self,
        state: dict[str, Any] | None,
        other: dict[str, Any],
        person: str,
        watermark: int,
        out: list[Output],
    ) -> dict[str, Any]:
        """Take over the held events of a person merged into ``person`` and re-cut them together.

        The merged person's sessions get ids of the survivor (an id includes the
        person), so its emitted sessions are retracted and its events re-emitted.
        Attribution dropped the touches of the sessions handed over (the merge
        named them as held), so a session that keeps its id -- the state went
        round and came back to the person it left, identity renamed it back --
        has its touch sent again.
        """
        state = dict(state) if state else new_state()
        moved = [[{**entry[0], "person_id": person}, entry[1], entry[2]] for entry in other.get("events", ())]
        known = {entry[0]["event_id"] for entry in state["events"]}
        held = [*state["events"], *(entry for entry in moved if entry[0]["event_id"] not in known)]
        held.sort(key=lambda entry: event_order(entry[0]))
        state["events"] = held
        state["emitted"] = {**other.get("emitted", {}), **state["emitted"]}
        _note_identified(state, [other.get("identified_since")])
        cuts, _ = self._publish(state, watermark, out, resend=frozenset(other.get("emitted", ())))
        return self._finalise(state, cuts, watermark)

    @staticmethod
    def _outputs(event: Event, session: dict[str, Any] | None, out: list[Output]) -> None:
        kind = conversion_kind(event)
        if kind is not None:
            out.append(("conversion", conversion_record(event, kind, session)))
        elif event["type"] == "return":
            out.append(("return", return_record(event)))

    def _publish(
        self,
        state: dict[str, Any],
        watermark: int,
        out: list[Output],
        resend: frozenset[str] = frozenset(),
    ) -> tuple[list[Cut], dict[str, Cut]]:
        """Re-cut the held events and emit what changed since the last emission, and ``resend``'s touches."""
        held = state["events"]
        if not held:
            return [], {}
        person = held[0][0]["person_id"]
        cuts, of_event = cut_sessions(
            person, [entry[0] for entry in held], self.rules, self.classify, state.get("identified_since")
        )
        emitted = dict(state["emitted"])
        current = {cut.session_id for cut in cuts}
        gone = [sid for sid, entry in emitted.items() if sid not in current and entry[1] is not None]
        started = {entry[0]["event_id"]: entry[0]["occurred_at"] for entry in held} if gone else {}
        for sid in gone:
            version = emitted[sid][0] + 1
            # kept (with its first event) so that a session coming back outranks its retraction
            emitted[sid] = [version, None, None, emitted[sid][3]]
            out.append(("session", retraction_row(sid, person, version)))
            # when it started: attribution keeps the removal as long as it would keep the touch
            # (the touch may still be on its way, in a hand-over)
            removal = {"person_id": person, "session_id": sid, "version": version,
                       "started_at": started.get(emitted[sid][3], 0)}  # fmt: skip
            out.append(("touch_removed", removal))
            self.counts["sessions_retracted"] += 1
        for cut in cuts:
            close_at = cut.close_at(self.rules)
            closed = close_at is None or watermark >= close_at
            row_print, touch = _print(cut.row), cut.touch()
            touch_print = _print(touch)
            previous = emitted.get(cut.session_id)
            if previous is None or previous[1] is None:
                version = 1 if previous is None else previous[0] + 1
                emitted[cut.session_id] = [version, row_print, touch_print, cut.event_ids[0]]
                out.append(("touch", {**touch, "version": version}))
                out.append(("session", {**cut.row, "version": version}))
                continue
            version, old_row, old_touch, first = previous
            if row_print != old_row and (closed or touch_print != old_touch):
                version += 1
                out.append(("session", {**cut.row, "version": version}))
                old_row = row_print
            if touch_print != old_touch or cut.session_id in resend:
                out.append(("touch", {**touch, "version": version}))
            emitted[cut.session_id] = [version, old_row, touch_print, first]
        for entry in held:
            cut = of_event[entry[0]["event_id"]]
            if entry[1] != cut.session_id:
                version = entry[2] + 1
                row = event_row(entry[0], cut.session_id, store_id=cut.row["store_id"], version=version)
                out.append(("event", row))
                kind = conversion_kind(entry[0]) if entry[1] else None
                if kind is not None:
                    # a conversion that moved to another session (a re-cut, a merge): attribution
                    # takes the new session, whenever the move happens relative to the conversion
                    out.append(("conversion", conversion_record(entry[0], kind, cut.row)))
                entry[1], entry[2] = cut.session_id, version
        state["emitted"] = emitted
        return cuts, of_event

    def _finalise(self, state: dict[str, Any], cuts: list[Cut], watermark: int) -> dict[str, Any]:
        """Drop the events of sessions nothing can change any more; note the next deadline."""
        final = {cut.session_id for cut in cuts if watermark >= cut.final_at(self.rules)}
        if final:
            state["events"] = [entry for entry in state["events"] if entry[1] not in final]
            held = {entry[0]["event_id"] for entry in state["events"]}
            state["emitted"] = {
                sid: e for sid, e in state["emitted"].items() if sid not in final and e[3] in held
            }
        deadlines = []
        for cut in cuts:
            if cut.session_id in final:
                continue
            close_at = cut.close_at(self.rules)
            if close_at is not None and watermark < close_at:
                deadlines.append(close_at)
            else:
                deadlines.append(cut.final_at(self.rules))
        state["next"] = min(deadlines) if deadlines else None
        return state


def _note_identified(state: dict[str, Any], told: list[int | None]) -> None:
    """Keep the earliest time identity said the person is identified from (it only moves earlier)."""
    known = [t for t in [state.get("identified_since"), *told] if t is not None]
    if known:
        state["identified_since"] = min(known)


def _covering(cuts: list[Cut], event: Event) -> dict[str, Any] | None:
    """The held session of the event's kind (and store) whose time span holds the event."""
    at = event["occurred_at"]
    digital = event["source"] in DIGITAL_SOURCES
    for cut in cuts:
        row = cut.row
        if (row["kind"] == "digital") != digital:
            continue
        if not digital and row["store_id"] != store_of(event):
            continue
        if row["started_at"] <= at <= row["ended_at"]:
            return row
    return None
