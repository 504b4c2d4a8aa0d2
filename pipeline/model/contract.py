"""Event contract v1: sources, types, identifier kinds and conversions.

This is the producers' API as the brief states it; ``schemas/v1`` holds the
same contract as JSON Schema. Normalised events travel between stages as plain
dicts (:class:`Event`) serialised with orjson.
"""

from __future__ import annotations

from typing import Any, TypedDict

CONTRACT_VERSION = 1

FEEDBACK_TYPES = frozenset({"review", "nps_response", "survey_response", "support_contact"})
"""Feedback from the person, in web, app and pos (a tablet at the till): the ``feedback`` view."""

SOURCES: dict[str, frozenset[str]] = {
    "web": frozenset(
        {
            "page_view",
            "product_view",
            "add_to_cart",
            "checkout",
            "signup",
            "login",
            "order_completed",
            "consent_updated",
        }
    )
    | FEEDBACK_TYPES,
    "app": frozenset(
        {
            "app_open",
            "screen_view",
            "push_opened",
            "coupon_claimed",
            "coupon_issued",
            "qr_scanned",
            "add_to_cart",
            "login",
            "order_completed",
            "consent_updated",
        }
    )
    | FEEDBACK_TYPES,
    "geofence": frozenset({"enter", "exit", "dwell", "consent_updated"}),
    "pos": frozenset({"purchase", "return", "click_and_collect_pickup", "loyalty_scan", "consent_updated"})
    | FEEDBACK_TYPES,
}

CONSENT_UPDATED = "consent_updated"
"""The type (in every source) of an event that states the person's consent: its ``consent`` flags."""
COUPON_ISSUED = "coupon_issued"
"""An app event the activation stage writes when it sends a person a coupon: it links the code to them."""
COUPON_CLAIM_TYPES = frozenset({"coupon_claimed", COUPON_ISSUED})
"""Events that make their coupon code an identifier of the person (identity's coupon links)."""
STATEMENT_TYPES = frozenset({CONSENT_UPDATED, COUPON_ISSUED})
"""Events that state something about the person rather than record a visit: stored, in no session."""
PURPOSES: tuple[str, ...] = ("analytics", "marketing", "personalisation")
"""The consent purposes: analytics (linking, sessions, attribution), marketing, personalisation."""

# Highest priority first: the person of an event is the person of its strongest identifier.
ID_PRIORITY: tuple[str, ...] = (
    "user_id",
    "loyalty_id",
    "email",
    "phone",
    "payment_token",
    "device_id",
    "anonymous_id",
)
ID_TYPES = frozenset(ID_PRIORITY)
PII_ID_TYPES = frozenset({"email", "phone", "payment_token"})
STRONG_ID_TYPES = frozenset({"user_id", "loyalty_id", "email", "phone"})

DIGITAL_SOURCES = frozenset({"web", "app"})
STORE_SOURCES = frozenset({"geofence", "pos"})


class Event(TypedDict, total=False):
    """A normalised event as it travels after ingest (times are UTC epoch milliseconds)."""

    event_id: str
    source: str
    type: str
    occurred_at: int
    original_occurred_at: int  # the device's time, when ingest corrected clock skew
    received_at: int
    origin: str  # "<source>/<raw partition>": the ordered stream ingest read the event from
    ids: dict[str, str]
    consent: dict[str, bool]
    context: dict[str, Any]
    properties: dict[str, Any]
    person_id: str
    identified: bool  # identity: the person held a strong identifier at the event's time
    identified_since: int | None  # identity: first sighting of the person's earliest strong identifier


def conversion_kind(event: Event) -> str | None:
    """Which conversion an event is (``order``, ``purchase``, ``upsell``), or None.

    A click-and-collect pickup only converts for its upsell; the order itself
    was the conversion when it was placed online.
    """
    etype = event.get("type")
    if etype == "order_completed":
        return "order"
    if event.get("source") == "pos":
        if etype == "purchase":
            return "purchase"
        if etype == "click_and_collect_pickup":
            upsell = (event.get("properties") or {}).get("upsell_revenue") or 0
            return "upsell" if _as_float(upsell) > 0 else None
    return None


def conversion_revenue(event: Event) -> float:
    """The revenue a conversion event brings (upsell revenue for a pickup)."""
    props = event.get("properties") or {}
    if event.get("type") == "click_and_collect_pickup":  # the order was the conversion
        return _as_float(props.get("upsell_revenue"))
    return _as_float(props.get("revenue"))


def strongest_id(ids: dict[str, str]) -> tuple[str, str] | None:
    """The highest-priority identifier of an event, as (type, value)."""
    for id_type in ID_PRIORITY:
        value = ids.get(id_type)
        if value:
            return id_type, value
    return None


def _as_float(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0
