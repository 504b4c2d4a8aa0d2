"""Cutting a person's events into digital sessions and store visits (pure, no Kafka).

:func:`cut_sessions` is a pure function of a person's events sorted by event
time: the same events always give the same sessions, whatever order they
arrived in. Rules (the brief's defaults, all configurable in
:class:`SessionRules`):

* digital sessions cover web and app together; a new one starts after
  ``timeout`` of inactivity, and none lasts longer than ``max_length``;
* a store visit runs from a geofence ``enter`` to ``exit``, or to the last
  event plus ``visit_timeout`` when no exit comes; a POS event with no open
  visit at its store opens one;
* a digital session and a store visit may overlap.

A session's id is derived from its person, kind and first event, so it is
deterministic; an event arriving late before a session's first event gives
the session a new id (the journeys stage retracts the old one).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.config import Settings
from pipeline.model.contract import DIGITAL_SOURCES, Event, conversion_kind, conversion_revenue

Output = tuple[str, dict[str, Any]]
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
Classifier = Callable[[Event, bool], str]


def session_id_for(person_id: str, kind: str, first_event_id: str) -> str:
    """Deterministic session id: the person, the kind and the session's first event."""
    digest = hashlib.sha256(f"{person_id}|{kind}|{first_event_id}".encode()).hexdigest()
    return "s_" + digest[:24]


def event_order(event: Event) -> tuple[int, str]:
    """The total order sessions are cut in: event time, then event id."""
    return (event["occurred_at"], event["event_id"])


def store_of(event: Event) -> str:
    """The store an event happened at (POS properties or context), or ``""``."""
    props = event.get("properties") or {}
    context = event.get("context") or {}
    return str(props.get("store_id") or context.get("store_id") or "")


@dataclass(frozen=True)
class SessionRules:
    """The sessionising rules and the allowed lateness of events, in milliseconds."""

    timeout_ms: int = 30 * MINUTE_MS
    max_length_ms: int = 24 * HOUR_MS
    visit_timeout_ms: int = 30 * MINUTE_MS
    lateness_ms: int = HOUR_MS

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionRules:
        """The rules the settings configure."""
        return cls(
            timeout_ms=int(settings.session_timeout_minutes * MINUTE_MS),
            max_length_ms=int(settings.session_max_hours * HOUR_MS),
            visit_timeout_ms=int(settings.visit_timeout_minutes * MINUTE_MS),
            lateness_ms=int(settings.allowed_lateness_minutes * MINUTE_MS),
        )

    def gap(self, kind: str) -> int:
        """Inactivity after which a session of ``kind`` can no longer grow."""
        return self.timeout_ms if kind == "digital" else self.visit_timeout_ms


@dataclass
class Cut:
    """One session as cut from the events: its row and what decides when it closes."""

    row: dict[str, Any]
    event_ids: list[str] = field(default_factory=list)
    exited_at: int | None = None  # the geofence exit that closed a store visit
    identified: bool = False  # the person was identified at the session's first event
    marketing: bool = True  # no marketing consent withdrawn at the session's first event

    @property
    def session_id(self) -> str:
        """The session's deterministic id."""
        return str(self.row["session_id"])

    def close_at(self, rules: SessionRules) -> int | None:
        """The watermark from which no in-order event can join it (None: closed already)."""
        if self.exited_at is not None:
            return None
        row = self.row
        at = row["ended_at"] + rules.gap(row["kind"])
        if row["kind"] == "digital":
            at = min(at, row["started_at"] + rules.max_length_ms)
        return int(at)

    def final_at(self, rules: SessionRules) -> int:
        """The watermark from which not even an event within the lateness can change it."""
        if self.exited_at is not None:
            return self.exited_at + rules.lateness_ms + 1
        return int(self.row["ended_at"] + rules.gap(self.row["kind"]) + rules.lateness_ms)

    def touch(self) -> dict[str, Any]:
        """The touchpoint attribution gets for the session."""
        row = self.row
        return {
            "person_id": row["person_id"],
            "session_id": row["session_id"],
            "kind": row["kind"],
            "channel": row["channel"],
            "campaign_name": row["campaign_name"],
            "started_at": row["started_at"],
            "identified": self.identified,
            "marketing": self.marketing,
        }


def cut_sessions(
    person: str,
    events: Sequence[Event],
    rules: SessionRules,
    classify: Classifier,
    identified_since: int | None = None,
) -> tuple[list[Cut], dict[str, Cut]]:
    """Sessions of ``events`` (sorted by :func:`event_order`) and each event's session.

    A session is identified when it starts at or after ``identified_since``
    (the earliest identity told of the person), else as its first event says.
    """
    cuts: list[Cut] = []
    of_event: dict[str, Cut] = {}
    digital: Cut | None = None
    visits: dict[str, Cut] = {}
    for event in events:
        at = event["occurred_at"]
        if event["source"] in DIGITAL_SOURCES:
            current = digital
            if current is not None and (
                at - current.row["ended_at"] >= rules.timeout_ms
                or at - current.row["started_at"] >= rules.max_length_ms
            ):
                current = None
            if current is None:
                current = digital = _open(person, "digital", event, classify)
                cuts.append(current)
        else:
            store = store_of(event)
            current = visits.get(store)
            if current is not None and at - current.row["ended_at"] >= rules.visit_timeout_ms:
                current = None
            if current is None:
                current = visits[store] = _open(person, "store_visit", event, classify, store)
                cuts.append(current)
            if event["type"] == "exit":
                current.exited_at = at
                del visits[store]
        _add(current, event)
        of_event[event["event_id"]] = current
    if identified_since is not None:
        for cut in cuts:
            cut.identified = cut.identified or cut.row["started_at"] >= identified_since
    return cuts, of_event


def _open(person: str, kind: str, event: Event, classify: Classifier, store: str = "") -> Cut:
    context = event.get("context") or {}
    campaign = context.get("campaign") or {}
    page = context.get("page") or {}
    props = event.get("properties") or {}
    landing = str(page.get("url") or props.get("screen_name") or props.get("screen") or "")
    row = {
        "session_id": session_id_for(person, kind, event["event_id"]),
        "person_id": person,
        "kind": kind,
        "channel": classify(event, kind == "store_visit"),
        "started_at": event["occurred_at"],
        "ended_at": event["occurred_at"],
        "store_id": store,
        "event_count": 0,
        "page_views": 0,
        "screen_views": 0,
        "conversions": 0,
        "revenue": 0.0,
        "campaign_source": str(campaign.get("source") or ""),
        "campaign_medium": str(campaign.get("medium") or ""),
        "campaign_name": str(campaign.get("name") or ""),
        "landing": landing if kind == "digital" else store,
        "referrer": str(page.get("referrer") or ""),
        "retracted": 0,
    }
    marketing = (event.get("consent") or {}).get("marketing") is not False
    return Cut(row, identified=bool(event.get("identified")), marketing=marketing)


def _add(cut: Cut, event: Event) -> None:
    row = cut.row
    row["ended_at"] = max(row["ended_at"], event["occurred_at"])
    row["event_count"] += 1
    etype = event["type"]
    if etype == "page_view":
        row["page_views"] += 1
    elif etype == "screen_view":
        row["screen_views"] += 1
    if conversion_kind(event) is not None:
        row["conversions"] += 1
        row["revenue"] += conversion_revenue(event)
    cut.event_ids.append(event["event_id"])


def retraction_row(session_id: str, person_id: str, version: int) -> dict[str, Any]:
    """The row that withdraws a session a late event merged into another or renamed."""
    return {
        "session_id": session_id, "person_id": person_id, "kind": "", "channel": "",
        "started_at": 0, "ended_at": 0, "store_id": "", "event_count": 0, "page_views": 0,
        "screen_views": 0, "conversions": 0, "revenue": 0.0, "campaign_source": "",
        "campaign_medium": "", "campaign_name": "", "landing": "", "referrer": "",
        "retracted": 1, "version": version,
    }  # fmt: skip


def event_row(
    event: Event, session_id: str, store_id: str = "", version: int = 1, late: bool = False
) -> dict[str, Any]:
    """The ClickHouse row of an event, with its session."""
    context = event.get("context") or {}
    campaign = context.get("campaign") or {}
    page = context.get("page") or {}
    props = event.get("properties") or {}
    consent = event.get("consent") or {}
    kind = conversion_kind(event)
    return {
        "event_id": event["event_id"],
        "person_id": event["person_id"],
        "source": event["source"],
        "type": event["type"],
        "occurred_at": event["occurred_at"],
        "received_at": event.get("received_at", event["occurred_at"]),
        "original_occurred_at": event.get("original_occurred_at", event["occurred_at"]),
        "session_id": session_id,
        "store_id": store_id or store_of(event),
        "conversion_kind": kind or "",
        "revenue": conversion_revenue(event) if kind else 0.0,
        "currency": str(props.get("currency") or ""),
        "campaign_source": str(campaign.get("source") or ""),
        "campaign_medium": str(campaign.get("medium") or ""),
        "campaign_name": str(campaign.get("name") or ""),
        "page_url": str(page.get("url") or ""),
        "referrer": str(page.get("referrer") or ""),
        "consent_analytics": 0 if consent.get("analytics") is False else 1,
        "consent_marketing": 0 if consent.get("marketing") is False else 1,
        "properties": orjson.dumps(props).decode(),
        "late": 1 if late else 0,
        "version": version,
    }


def unlinked_event_row(event: Event) -> dict[str, Any]:
    """The row of an event used without analytics consent: stored with no person and no session."""
    return event_row({**event, "person_id": ""}, "")


def conversion_record(event: Event, kind: str, session: dict[str, Any] | None) -> dict[str, Any]:
    """What attribution needs to know of a conversion (``session`` None: placed in none)."""
    props = event.get("properties") or {}
    return {
        "person_id": event["person_id"],
        "event_id": event["event_id"],
        "kind": kind,
        "source": event["source"],
        "occurred_at": event["occurred_at"],
        "revenue": conversion_revenue(event),
        "currency": str(props.get("currency") or ""),
        "order_id": str(props.get("order_id") or props.get("transaction_id") or ""),
        "store_id": (session or {}).get("store_id") or store_of(event),
        "staff_id": str(props.get("staff_id") or ""),
        "fulfillment": str(props.get("fulfillment") or "") if kind == "order" else "",
        "session_id": (session or {}).get("session_id", ""),
        "session_kind": (session or {}).get("kind", ""),
        "marketing": (event.get("consent") or {}).get("marketing") is not False,
    }


def return_record(event: Event) -> dict[str, Any]:
    """What attribution needs to know of a return."""
    props = event.get("properties") or {}
    return {
        "person_id": event["person_id"],
        "event_id": event["event_id"],
        "occurred_at": event["occurred_at"],
        "order_ref": str(props.get("transaction_id") or props.get("order_id") or ""),
        "refund": conversion_revenue(event),
    }
