"""Cutting a person's events into digital sessions and store visits (pure, no Kafka).

One :class:`Sessionizer` holds the rules; the state of each person is a plain
dict (JSON-serialisable, so a changelog-backed table can hold it) passed in
and returned whole. Rules (the brief's defaults, all configurable):

* digital sessions cover web and app together; a new one starts after
  ``timeout`` of inactivity, and none lasts longer than ``max_length``;
* a store visit runs from a geofence ``enter`` to ``exit``, or to the last
  event plus ``visit_timeout`` when no exit comes; a POS event with no open
  visit at its store opens one;
* a digital session and a store visit may overlap.

Outputs are ``(kind, record)`` pairs: ``("event", row)`` for every event with
its session, ``("session", row)`` when a session opens and closes,
``("touch", record)`` when a session opens (a touchpoint for attribution),
and ``("conversion", record)`` for conversion events.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from pipeline.journeys.channels import classify
from pipeline.model.contract import DIGITAL_SOURCES, Event, conversion_kind, conversion_revenue

Output = tuple[str, dict[str, Any]]
MINUTE_MS = 60_000


def session_id_for(person_id: str, kind: str, first_event_id: str) -> str:
    """Deterministic session id: the person, the kind and the session's first event."""
    digest = hashlib.sha256(f"{person_id}|{kind}|{first_event_id}".encode()).hexdigest()
    return "s_" + digest[:24]


def new_state() -> dict[str, Any]:
    """The state of a person with no open session."""
    return {"digital": None, "visits": {}}


def _store_of(event: Event) -> str:
    props = event.get("properties") or {}
    context = event.get("context") or {}
    return str(props.get("store_id") or context.get("store_id") or "")


class Sessionizer:
    """Assigns events to sessions and store visits, per person, in event time."""

    def __init__(self, timeout_ms: int, max_length_ms: int, visit_timeout_ms: int) -> None:
        self.timeout_ms = timeout_ms
        self.max_length_ms = max_length_ms
        self.visit_timeout_ms = visit_timeout_ms

    def process(self, state: dict[str, Any], event: Event, out: list[Output]) -> dict[str, Any]:
        """Place one event of the state's person; returns the new state, appends outputs."""
        at = event["occurred_at"]
        person = event["person_id"]
        if event["source"] in DIGITAL_SOURCES:
            session = state["digital"]
            if session is not None and (
                at - session["ended_at"] >= self.timeout_ms
                or at - session["started_at"] >= self.max_length_ms
            ):
                out.append(("session", self._close(session)))
                session = None
            if session is None:
                session = self._open(person, "digital", event, out)
            state["digital"] = session = self._add(session, event)
            if session["version"] == 0:
                out.append(("session", self._emit(session)))
        else:
            store = _store_of(event)
            visits = state["visits"]
            self._expire_visits(visits, at, out)
            visit = visits.get(store)
            if visit is None:
                visit = self._open(person, "store_visit", event, out, store)
            session = self._add(visit, event)
            if session["version"] == 0:
                out.append(("session", self._emit(session)))
            if event["type"] == "exit":
                out.append(("session", self._close(session)))
                visits.pop(store, None)
            else:
                visits[store] = session
        out.append(("event", event_row(event, session["session_id"], store_id=session["store_id"])))
        kind = conversion_kind(event)
        if kind is not None:
            out.append(("conversion", conversion_record(event, kind, session)))
        elif event["type"] == "return":
            props = event.get("properties") or {}
            out.append(
                (
                    "return",
                    {
                        "person_id": event["person_id"],
                        "event_id": event["event_id"],
                        "occurred_at": event["occurred_at"],
                        "order_ref": str(props.get("transaction_id") or props.get("order_id") or ""),
                        "refund": conversion_revenue(event),
                    },
                )
            )
        return state

    def expire(self, state: dict[str, Any], watermark: int, out: list[Output]) -> dict[str, Any]:
        """Close every session of the state that can no longer grow at event time ``watermark``."""
        session = state["digital"]
        if session is not None and watermark - session["ended_at"] >= self.timeout_ms:
            out.append(("session", self._close(session)))
            state["digital"] = None
        self._expire_visits(state["visits"], watermark, out)
        return state

    def close_all(self, state: dict[str, Any], out: list[Output]) -> dict[str, Any]:
        """Close every open session (end of input in drain mode)."""
        if state["digital"] is not None:
            out.append(("session", self._close(state["digital"])))
        for visit in state["visits"].values():
            out.append(("session", self._close(visit)))
        return new_state()

    def _expire_visits(self, visits: dict[str, Any], at: int, out: list[Output]) -> None:
        for store in [s for s, v in visits.items() if at - v["ended_at"] >= self.visit_timeout_ms]:
            out.append(("session", self._close(visits.pop(store))))

    def _open(
        self, person: str, kind: str, event: Event, out: list[Output], store: str = ""
    ) -> dict[str, Any]:
        context = event.get("context") or {}
        campaign = context.get("campaign") or {}
        page = context.get("page") or {}
        props = event.get("properties") or {}
        landing = str(page.get("url") or props.get("screen_name") or props.get("screen") or "")
        session = {
            "session_id": session_id_for(person, kind, event["event_id"]),
            "person_id": person,
            "kind": kind,
            "channel": classify(event, store_visit=kind == "store_visit"),
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
            "version": 0,
        }
        out.append(
            (
                "touch",
                {
                    "person_id": person,
                    "session_id": session["session_id"],
                    "kind": kind,
                    "channel": session["channel"],
                    "campaign_name": session["campaign_name"],
                    "started_at": session["started_at"],
                    "identified": bool(event.get("identified")),
                },
            )
        )
        return session

    @staticmethod
    def _add(session: dict[str, Any], event: Event) -> dict[str, Any]:
        at = event["occurred_at"]
        session = dict(session)
        session["started_at"] = min(session["started_at"], at)
        session["ended_at"] = max(session["ended_at"], at)
        session["event_count"] += 1
        etype = event["type"]
        if etype == "page_view":
            session["page_views"] += 1
        elif etype == "screen_view":
            session["screen_views"] += 1
        if conversion_kind(event) is not None:
            session["conversions"] += 1
            session["revenue"] += conversion_revenue(event)
        return session

    @staticmethod
    def _emit(session: dict[str, Any]) -> dict[str, Any]:
        session["version"] += 1
        return dict(session)

    def _close(self, session: dict[str, Any]) -> dict[str, Any]:
        return self._emit(dict(session))


def event_row(event: Event, session_id: str, store_id: str = "") -> dict[str, Any]:
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
        "store_id": store_id or _store_of(event),
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
        "version": 1,
    }


def conversion_record(event: Event, kind: str, session: dict[str, Any]) -> dict[str, Any]:
    """What attribution needs to know of a conversion."""
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
        "store_id": session["store_id"] or _store_of(event),
        "staff_id": str(props.get("staff_id") or ""),
        "session_id": session["session_id"],
        "session_kind": session["kind"],
        "marketing": (event.get("consent") or {}).get("marketing") is not False,
    }
