"""Each person's consent per purpose over event time (pure, no Kafka).

Consent is stated by events: a ``consent_updated`` event states the purposes
in its ``consent`` object, and any other event's ``consent`` flags are
statements too, at the event's time. A person's flag for a purpose at time
``t`` is the one stated last at or before ``t``; before any statement it is
unknown, and where a purpose is needed, the configured default decides
(``O2O_CONSENT_DEFAULT``: ``denied`` or ``granted``, for all purposes or per
purpose).

The identity stage keeps the history in the person's record, as the times
the flag changed: ``{"consent": {purpose: [[at, flag], ...]}}``, sorted by
time, a flag never equal to the one before it. A statement that arrives out
of order is placed at its time, so an event is judged by the consent that
held when it happened, whatever order the events came in; processing done
before a change arrived stays as it was. At most :data:`HISTORY_LIMIT`
changes are kept per purpose (the oldest go first).

Every statement in a ``consent_updated`` event, and every flag of another
event that changes the person's flag at its time, becomes a row of the
``consent`` table (:func:`consent_row`).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Mapping, MutableMapping
from typing import Any

from pipeline.model.contract import CONSENT_UPDATED, PURPOSES, Event

HISTORY_LIMIT = 16
History = dict[str, list[list[Any]]]  # purpose -> [[at, flag], ...]


def stated(event: Event) -> dict[str, bool]:
    """The purposes an event states, with their flags."""
    consent = event.get("consent") or {}
    return {p: consent[p] for p in PURPOSES if isinstance(consent.get(p), bool)}


def flag_at(changes: list[list[Any]], at: int) -> bool | None:
    """The flag the changes give at time ``at`` (None: nothing stated by then)."""
    index = bisect.bisect_right(changes, at, key=lambda change: change[0])
    return bool(changes[index - 1][1]) if index else None


def with_statement(changes: list[list[Any]], at: int, flag: bool) -> list[list[Any]]:
    """The changes after a statement of ``flag`` at ``at``."""
    out = [list(c) for c in changes if c[0] != at]
    bisect.insort(out, [at, flag], key=lambda change: change[0])
    return normalised(out)


def normalised(changes: list[list[Any]]) -> list[list[Any]]:
    """Sorted changes with every entry equal to the one before it dropped, the newest kept."""
    out: list[list[Any]] = []
    for change in sorted(changes, key=lambda c: (c[0], c[1])):
        if out and out[-1][0] == change[0]:
            out.pop()  # one time, two flags (two merged persons): the granted one wins
        if not out or out[-1][1] != change[1]:
            out.append(change)
    return out[-HISTORY_LIMIT:]


def merged_history(a: History | None, b: History | None) -> History:
    """The consent of two persons merged: every change of either, in time order."""
    out: History = {}
    for purpose in PURPOSES:
        changes = [*(a or {}).get(purpose, ()), *(b or {}).get(purpose, ())]
        if changes:
            out[purpose] = normalised([list(c) for c in changes])
    return out


class ConsentLedger:
    """Keeps the consent history in the person records of the identity graph."""

    def __init__(self, persons: MutableMapping[str, Any], defaults: Mapping[str, bool]) -> None:
        self.persons = persons
        self.defaults = dict(defaults)  # purpose -> what nothing stated means (O2O_CONSENT_DEFAULT)

    def history(self, person: str | None) -> History:
        """The person's consent changes per purpose ({} for no person)."""
        if person is None or person not in self.persons:
            return {}
        return dict(self.persons[person].get("consent") or {})

    def allows(self, person: str | None, event: Event, purpose: str) -> bool:
        """Whether ``purpose`` is granted for ``event``: its own flag, else the person's at its time."""
        own = stated(event).get(purpose)
        if own is not None:
            return own
        flag = flag_at(self.history(person).get(purpose, []), event["occurred_at"])
        return self.defaults.get(purpose, False) if flag is None else flag

    def known(self, person: str, at: int) -> dict[str, bool]:
        """The person's flag at time ``at`` of each purpose stated by then (others are left out)."""
        history = self.history(person)
        out = {}
        for purpose in PURPOSES:
            flag = flag_at(history.get(purpose, []), at)
            if flag is not None:
                out[purpose] = flag
        return out

    def note(self, person: str, event: Event) -> list[dict[str, Any]]:
        """Record the event's statements in the person's history; the ``consent`` rows they make."""
        statements = stated(event)
        if not statements:
            return []
        history = self.history(person)
        at = event["occurred_at"]
        rows = []
        explicit = event.get("type") == CONSENT_UPDATED
        for purpose, flag in statements.items():
            changes = history.get(purpose, [])
            before = flag_at(changes, at)
            if before != flag or explicit:
                rows.append(consent_row(person, event, purpose, flag, before))
            if before != flag:
                history[purpose] = with_statement(changes, at, flag)
        if history != (self.persons[person].get("consent") or {}):
            self.persons[person] = {**self.persons[person], "consent": history}
        return rows


def consent_row(person: str, event: Event, purpose: str, flag: bool, before: bool | None) -> dict[str, Any]:
    """The ``consent`` row of one statement: who, which purpose, granted or not, and what it was."""
    digest = hashlib.sha256(f"{event['event_id']}|{purpose}".encode()).hexdigest()[:24]
    return {
        "consent_id": "cs_" + digest,
        "person_id": person,
        "purpose": purpose,
        "granted": 1 if flag else 0,
        "previous": "unknown" if before is None else ("granted" if before else "denied"),
        "occurred_at": event["occurred_at"],
        "source": event["source"],
        "event_type": event["type"],
        "event_id": event["event_id"],
        "method": str((event.get("properties") or {}).get("method") or ""),
        "version": 1,
    }
