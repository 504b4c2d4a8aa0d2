"""Segment HTTP tracking API messages -> contract v1 events (pure, no I/O).

The source of every event (``web`` or ``app``) comes from the write key, not
from the message. The mapping:

==========================  ====================================================
Segment                     contract v1
==========================  ====================================================
``messageId``               ``event_id`` (required: it is the dedup key)
``timestamp``               ``occurred_at`` (else ``originalTimestamp``, else
                            the time the collector received the message)
``sentAt``                  ``sent_at`` (message, else batch; kept so ingest can
                            correct the device's clock skew)
``anonymousId``             ``ids.anonymous_id``
``userId``                  ``ids.user_id``
``traits.email``/``phone``  ``ids.email`` / ``ids.phone`` (also
                            ``context.traits``); ``loyalty_id`` likewise
``context.device.id``       ``ids.device_id``
``context.campaign``        ``context.campaign`` {source, medium, name, term, content}
``context.page``            ``context.page`` {url, referrer, title}
``context.app``             ``context.app`` {name, version}
``context.location``        ``context.geo`` {lat, lon}
``context.consent``         ``consent`` {analytics, marketing, personalisation}
==========================  ====================================================

Calls: ``page`` -> ``page_view``; ``screen`` -> ``screen_view``; ``identify``
-> ``login`` (it links the anonymous id, the user id and the traits' ids,
which is what the identity stage needs), or ``consent_updated`` when its
traits carry ``consent`` (same forms as ``context.consent``; the traits' flags
win); ``alias`` -> ``login`` with
``previousId`` as ``ids.anonymous_id`` and ``userId`` as ``ids.user_id``;
``track`` -> the contract type of its event name (:data:`TRACK_EVENT_TYPES`,
names compared in snake case). ``group`` calls and unknown event names raise
:class:`~pipeline.errors.InvalidEvent` with reason ``unknown_type``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipeline.errors import InvalidEvent
from pipeline.model.contract import PURPOSES, SOURCES

CALLS = frozenset({"track", "identify", "page", "screen", "alias", "group"})

# Segment spec event names (in snake case) -> contract v1 types.
TRACK_EVENT_TYPES: dict[str, str] = {
    "order_completed": "order_completed",
    "product_viewed": "product_view",
    "product_added": "add_to_cart",
    "checkout_started": "checkout",
    "signed_up": "signup",
    "signed_in": "login",
    "logged_in": "login",
    "application_opened": "app_open",
    "push_notification_tapped": "push_opened",
    "push_opened": "push_opened",
    "coupon_claimed": "coupon_claimed",
    "qr_scanned": "qr_scanned",
    "product_reviewed": "review",
    "review_submitted": "review",
    "nps_submitted": "nps_response",
    "survey_submitted": "survey_response",
    "survey_completed": "survey_response",
    "support_contacted": "support_contact",
    # Segment Consent Management's event: the new preferences are in context.consent
    "segment_consent_preference_updated": "consent_updated",
}
# Contract names of the digital sources are accepted as they are.
DIGITAL_TYPES = SOURCES["web"] | SOURCES["app"]

_CATEGORY_WORDS = (
    ("analytics", ("analytics",)),
    ("marketing", ("marketing", "advertising")),
    ("personalisation", ("personalisation", "personalization")),
)
_NON_WORD = re.compile(r"[^a-z0-9]+")
_CAMPAIGN_KEYS = ("source", "medium", "name", "term", "content")
_PAGE_KEYS = ("url", "referrer", "title")
_APP_KEYS = ("name", "version")


def snake_name(name: str) -> str:
    """``"Order Completed"`` -> ``"order_completed"``; ``"QR-Scanned"`` -> ``"qr_scanned"``."""
    return _NON_WORD.sub("_", name.strip().lower()).strip("_")


def track_type(name: Any) -> str:
    """The contract type of a track call's event name; InvalidEvent when it has none."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidEvent("schema_violation", "event: a track call needs an event name")
    snake = snake_name(name)
    etype = TRACK_EVENT_TYPES.get(snake) or (snake if snake in DIGITAL_TYPES else None)
    if etype is None:
        raise InvalidEvent("unknown_type", f"event: {name[:64]!r} has no contract v1 type")
    return etype


def batch_messages(body: Any) -> list[Any]:
    """The messages of a ``/v1/batch`` body (an object with ``batch``, or a bare array).

    Batch-level ``sentAt`` and ``context`` are copied into each message that
    lacks them (a message's own context keys win). Items that are not objects
    are returned as they are, so the caller can reject them by index.
    """
    if isinstance(body, list):
        return list(body)
    if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
        raise InvalidEvent("schema_violation", "batch: expected an array of messages")
    sent_at = body.get("sentAt")
    shared = body.get("context") if isinstance(body.get("context"), dict) else None
    out: list[Any] = []
    for message in body["batch"]:
        if isinstance(message, dict):
            message = dict(message)
            if sent_at is not None and message.get("sentAt") is None:
                message["sentAt"] = sent_at
            if shared:
                own = message.get("context")
                message["context"] = {**shared, **own} if isinstance(own, dict) else dict(shared)
        out.append(message)
    return out


def map_message(message: Any, source: str, received_at: str, call: str | None = None) -> dict[str, Any]:
    """One Segment message as a contract v1 event of ``source`` (not validated further here).

    ``call`` is the endpoint's call type (``/v1/track`` -> ``track``); for
    ``/v1/batch`` it is None and the message's ``type`` decides.
    ``received_at`` (RFC 3339) stands in for a missing timestamp, as Segment does.
    Raises InvalidEvent for messages that cannot be mapped.
    """
    if not isinstance(message, dict):
        raise InvalidEvent("schema_violation", "$: a message is a JSON object")
    kind = call or message.get("type")
    if not isinstance(kind, str) or kind not in CALLS:
        raise InvalidEvent("unknown_type", f"type: {str(kind)[:32]!r} is not a Segment call type")
    if kind == "group":
        raise InvalidEvent("unknown_type", "type: group calls have no contract v1 type")
    event_id = _id_value(message.get("messageId"))
    if not isinstance(event_id, str) or not event_id:
        raise InvalidEvent("schema_violation", "messageId: required (it is the event_id)")
    context = _obj(message.get("context"))
    properties = dict(_obj(message.get("properties")))

    if kind == "track":
        etype = track_type(message.get("event"))
        properties = track_properties(properties)
    elif kind in ("page", "screen"):
        etype = "page_view" if kind == "page" else "screen_view"
        for key in ("name", "category"):
            if message.get(key) is not None:
                properties[key] = message[key]
    else:  # identify, alias
        etype = "login"
        properties = {"segment_call": kind}
    consent = consent_of(context.get("consent"))
    if kind == "identify":
        stated = consent_of(_obj(message.get("traits")).get("consent"))
        if stated:
            etype, consent = "consent_updated", {**consent, **stated}

    event: dict[str, Any] = {
        "event_id": event_id,
        "source": source,
        "type": etype,
        "occurred_at": _first(message, "timestamp", "originalTimestamp") or received_at,
        "ids": identifiers(message, context, alias=kind == "alias"),
    }
    sent_at = message.get("sentAt")
    if sent_at is not None:
        event["sent_at"] = sent_at
    if consent:
        event["consent"] = consent
    out_context = event_context(context, properties if kind == "page" else {})
    if out_context:
        event["context"] = out_context
    if properties:
        event["properties"] = properties
    return event


def track_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    """Track properties in contract names: ``total`` -> ``revenue`` (when no revenue),
    ``orderId`` -> ``order_id``, ``products`` -> ``items``, ``review_body`` -> ``text``;
    everything else as it is."""
    out = dict(properties)
    for alias, name in (
        ("total", "revenue"), ("orderId", "order_id"), ("products", "items"), ("review_body", "text"),
    ):  # fmt: skip
        if alias in out and out.get(name) is None:
            out[name] = out.pop(alias)
    return out


def identifiers(
    message: Mapping[str, Any], context: Mapping[str, Any], alias: bool = False
) -> dict[str, Any]:
    """The contract ``ids`` of a message; values that are not strings are left for validation."""
    ids: dict[str, Any] = {}
    traits = _obj(message.get("traits"))
    context_traits = _obj(context.get("traits"))
    device = _obj(context.get("device"))
    candidates: tuple[tuple[str, Any], ...] = (
        ("anonymous_id", message.get("previousId") if alias else None),
        ("anonymous_id", message.get("anonymousId")),
        ("user_id", message.get("userId")),
        ("email", traits.get("email")),
        ("email", context_traits.get("email")),
        ("phone", traits.get("phone")),
        ("phone", context_traits.get("phone")),
        ("loyalty_id", _first(traits, "loyalty_id", "loyaltyId")),
        ("loyalty_id", _first(context_traits, "loyalty_id", "loyaltyId")),
        ("device_id", device.get("id")),
    )
    for id_type, value in candidates:
        value = _id_value(value)
        if value is not None and id_type not in ids:
            ids[id_type] = value
    return ids


def consent_of(consent: Any) -> dict[str, bool]:
    """Contract consent from ``context.consent``.

    Either the purposes directly (``{"analytics": bool, "marketing": bool,
    "personalisation": bool}``), or Segment's ``categoryPreferences``:
    ``analytics`` from categories named like "Analytics", ``marketing`` from
    "Marketing"/"Advertising" ones, ``personalisation`` from
    "Personalisation"/"Personalization" ones (all of the matching categories
    must be granted).
    """
    if not isinstance(consent, dict):
        return {}
    out = {k: consent[k] for k in PURPOSES if isinstance(consent.get(k), bool)}
    prefs = consent.get("categoryPreferences")
    if isinstance(prefs, dict):
        for flag, words in _CATEGORY_WORDS:
            values = [
                v for k, v in prefs.items() if isinstance(v, bool) and any(w in str(k).lower() for w in words)
            ]
            if values and flag not in out:
                out[flag] = all(values)
    return out


def event_context(context: Mapping[str, Any], page_properties: Mapping[str, Any]) -> dict[str, Any]:
    """Contract ``context`` from a Segment context; a page call's properties fill ``page``."""
    out: dict[str, Any] = {}
    campaign = _pick(context.get("campaign"), _CAMPAIGN_KEYS)
    if campaign:
        out["campaign"] = campaign
    page = _pick(context.get("page"), _PAGE_KEYS)
    for key, value in _pick(page_properties, _PAGE_KEYS).items():
        page.setdefault(key, value)
    if page:
        out["page"] = page
    app = _pick(context.get("app"), _APP_KEYS)
    if app:
        out["app"] = app
    location = context.get("location")
    if isinstance(location, dict):
        lat, lon = location.get("latitude"), location.get("longitude")
        if _is_number(lat) and _is_number(lon):
            out["geo"] = {"lat": lat, "lon": lon}
    return out


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _pick(value: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        return {}
    return {k: value[k] for k in keys if value.get(k) not in (None, "")}


def _first(doc: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = doc.get(key)
        if value not in (None, ""):
            return value
    return None


def _id_value(value: Any) -> Any:
    """Numbers as strings (Segment allows numeric ids); None stays None; the rest as it is."""
    if _is_number(value):
        return str(value)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
