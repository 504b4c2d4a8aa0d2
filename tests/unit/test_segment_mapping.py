"""Segment HTTP tracking API messages -> contract v1 events (pipeline.collector.segment)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.collector.segment import batch_messages, map_message, snake_name, track_type
from pipeline.errors import InvalidEvent
from pipeline.ingest.normalize import EventNormalizer

RECEIVED = "2026-09-21T10:00:05.000Z"
NOW_MS = 1_790_000_000_000  # 2026-09-21T14:13:20Z

# What analytics.js puts in every message's context.
WEB_CONTEXT: dict[str, Any] = {
    "library": {"name": "analytics.js", "version": "next-1.70.0"},
    "locale": "en-GB",
    "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)",
    "page": {
        "path": "/checkout/thanks",
        "referrer": "https://www.google.com/",
        "search": "?utm_source=newsletter",
        "title": "Thank you",
        "url": "https://shop.example.com/checkout/thanks?utm_source=newsletter",
    },
    "campaign": {
        "source": "newsletter",
        "medium": "email",
        "name": "autumn-sale",
        "term": "",
        "content": "hero",
    },
    "consent": {"categoryPreferences": {"Analytics": True, "Advertising": False, "Functional": True}},
}
# What analytics-ios / analytics-android put there.
APP_CONTEXT: dict[str, Any] = {
    "app": {"name": "Shop", "version": "5.2.1", "build": "5210", "namespace": "com.example.shop"},
    "device": {"id": "B5372DB0-C21E-11E4-8DFC-AA07A5B093DB", "manufacturer": "Apple", "model": "iPhone15,2"},
    "library": {"name": "analytics-ios", "version": "4.1.8"},
    "location": {"latitude": 51.5072, "longitude": -0.1276},
    "os": {"name": "iOS", "version": "17.1"},
    "traits": {"email": "alice@example.com"},
}

CASES: list[tuple[str, str, str | None, dict[str, Any], dict[str, Any]]] = [
    (
        "track Order Completed (web), total -> revenue, products -> items",
        "web",
        None,
        {
            "type": "track",
            "event": "Order Completed",
            "messageId": "ajs-next-1f1b7ef3c5",
            "anonymousId": "5f6ab1e4-2c37-4a0d-9f0c-2d1a6a0d1b7e",
            "userId": "u-1001",
            "timestamp": "2026-09-21T09:59:58.120Z",
            "sentAt": "2026-09-21T09:59:58.200Z",
            "properties": {
                "orderId": "50314b8e",
                "total": 27.5,
                "currency": "EUR",
                "products": [{"product_id": "507f1f77", "sku": "45790-32", "price": 19.0, "quantity": 1}],
            },
            "context": WEB_CONTEXT,
            "integrations": {},
        },
        {
            "event_id": "ajs-next-1f1b7ef3c5",
            "source": "web",
            "type": "order_completed",
            "occurred_at": "2026-09-21T09:59:58.120Z",
            "sent_at": "2026-09-21T09:59:58.200Z",
            "ids": {"anonymous_id": "5f6ab1e4-2c37-4a0d-9f0c-2d1a6a0d1b7e", "user_id": "u-1001"},
            "consent": {"analytics": True, "marketing": False},
            "context": {
                "campaign": {
                    "source": "newsletter",
                    "medium": "email",
                    "name": "autumn-sale",
                    "content": "hero",
                },
                "page": {
                    "url": "https://shop.example.com/checkout/thanks?utm_source=newsletter",
                    "referrer": "https://www.google.com/",
                    "title": "Thank you",
                },
            },
            "properties": {
                "order_id": "50314b8e",
                "revenue": 27.5,
                "currency": "EUR",
                "items": [{"product_id": "507f1f77", "sku": "45790-32", "price": 19.0, "quantity": 1}],
            },
        },
    ),
    (
        "track with revenue kept over total, snake_case name as is, originalTimestamp",
        "web",
        "track",
        {
            "event": "add_to_cart",
            "messageId": "m-2",
            "anonymousId": "a-2",
            "originalTimestamp": "2026-09-21T11:00:00+02:00",
            "properties": {"revenue": 10, "total": 12, "order_id": "o-2"},
        },
        {
            "event_id": "m-2",
            "source": "web",
            "type": "add_to_cart",
            "occurred_at": "2026-09-21T11:00:00+02:00",
            "ids": {"anonymous_id": "a-2"},
            "properties": {"revenue": 10, "total": 12, "order_id": "o-2"},
        },
    ),
    (
        "track Application Opened (app): device id, app, geo, traits email",
        "app",
        None,
        {
            "type": "track",
            "event": "Application Opened",
            "messageId": "9E3A4C28-2E0C-4A63-B2A5-0F1D0E6C9A11",
            "anonymousId": "D7A2D0C4-7E5A-4C38-8C5B-1A2B3C4D5E6F",
            "timestamp": "2026-09-21T08:15:00.000Z",
            "properties": {"from_background": False, "version": "5.2.1"},
            "context": APP_CONTEXT,
        },
        {
            "event_id": "9E3A4C28-2E0C-4A63-B2A5-0F1D0E6C9A11",
            "source": "app",
            "type": "app_open",
            "occurred_at": "2026-09-21T08:15:00.000Z",
            "ids": {
                "anonymous_id": "D7A2D0C4-7E5A-4C38-8C5B-1A2B3C4D5E6F",
                "email": "alice@example.com",
                "device_id": "B5372DB0-C21E-11E4-8DFC-AA07A5B093DB",
            },
            "context": {"app": {"name": "Shop", "version": "5.2.1"}, "geo": {"lat": 51.5072, "lon": -0.1276}},
            "properties": {"from_background": False, "version": "5.2.1"},
        },
    ),
    (
        "identify -> login with the traits' email and phone, consent given directly",
        "web",
        "identify",
        {
            "messageId": "id-1",
            "anonymousId": "a-3",
            "userId": 42,
            "timestamp": "2026-09-21T09:00:00Z",
            "traits": {
                "email": "Bob@Example.com",
                "phone": "+44 20 7946 0958",
                "name": "Bob",
                "loyaltyId": "L-9",
            },
            "context": {"consent": {"analytics": True, "marketing": True}},
        },
        {
            "event_id": "id-1",
            "source": "web",
            "type": "login",
            "occurred_at": "2026-09-21T09:00:00Z",
            "ids": {
                "anonymous_id": "a-3",
                "user_id": "42",
                "email": "Bob@Example.com",
                "phone": "+44 20 7946 0958",
                "loyalty_id": "L-9",
            },
            "consent": {"analytics": True, "marketing": True},
            "properties": {"segment_call": "identify"},
        },
    ),
    (
        "page -> page_view; the page properties fill context.page",
        "web",
        None,
        {
            "type": "page",
            "name": "Home",
            "category": "Landing",
            "messageId": "p-1",
            "anonymousId": "a-4",
            "timestamp": "2026-09-21T09:30:00Z",
            "properties": {"url": "https://shop.example.com/", "referrer": "https://t.co/x", "path": "/"},
        },
        {
            "event_id": "p-1",
            "source": "web",
            "type": "page_view",
            "occurred_at": "2026-09-21T09:30:00Z",
            "ids": {"anonymous_id": "a-4"},
            "context": {"page": {"url": "https://shop.example.com/", "referrer": "https://t.co/x"}},
            "properties": {
                "url": "https://shop.example.com/",
                "referrer": "https://t.co/x",
                "path": "/",
                "name": "Home",
                "category": "Landing",
            },
        },
    ),
    (
        "screen -> screen_view (app)",
        "app",
        "screen",
        {
            "name": "Product Detail",
            "messageId": "s-1",
            "userId": "u-7",
            "timestamp": "2026-09-21T09:31:00Z",
            "context": {"device": {"id": "dev-7"}, "app": {"name": "Shop", "version": "5.2.1"}},
        },
        {
            "event_id": "s-1",
            "source": "app",
            "type": "screen_view",
            "occurred_at": "2026-09-21T09:31:00Z",
            "ids": {"user_id": "u-7", "device_id": "dev-7"},
            "context": {"app": {"name": "Shop", "version": "5.2.1"}},
            "properties": {"name": "Product Detail"},
        },
    ),
    (
        "alias -> login linking previousId and userId",
        "app",
        None,
        {
            "type": "alias",
            "previousId": "anon-old",
            "userId": "u-8",
            "messageId": "al-1",
            "timestamp": "2026-09-21T09:32:00Z",
        },
        {
            "event_id": "al-1",
            "source": "app",
            "type": "login",
            "occurred_at": "2026-09-21T09:32:00Z",
            "ids": {"anonymous_id": "anon-old", "user_id": "u-8"},
            "properties": {"segment_call": "alias"},
        },
    ),
    (
        "no timestamp at all: the time the collector received it",
        "web",
        "track",
        {"event": "Signed Up", "messageId": "su-1", "anonymousId": "a-9"},
        {
            "event_id": "su-1",
            "source": "web",
            "type": "signup",
            "occurred_at": RECEIVED,
            "ids": {"anonymous_id": "a-9"},
        },
    ),
]


@pytest.mark.parametrize(
    ("source", "call", "message", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_message_maps_to_the_exact_contract_event(
    source: str, call: str | None, message: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert map_message(message, source, RECEIVED, call) == expected


@pytest.mark.parametrize(
    ("source", "call", "message", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_mapped_events_pass_ingest_validation(
    source: str, call: str | None, message: dict[str, Any], expected: dict[str, Any]
) -> None:
    normalizer = EventNormalizer("test-salt", 100_000, 23 * 3600_000, 3650 * 86400_000)
    out = normalizer.normalise(orjson.dumps(map_message(message, source, RECEIVED, call)), NOW_MS)
    assert out["event_id"] == expected["event_id"]
    assert out["type"] == expected["type"]


@pytest.mark.parametrize(
    ("name", "etype"),
    [
        ("Order Completed", "order_completed"),
        ("Product Viewed", "product_view"),
        ("Product Added", "add_to_cart"),
        ("Checkout Started", "checkout"),
        ("Signed Up", "signup"),
        ("Signed In", "login"),
        ("Logged In", "login"),
        ("Application Opened", "app_open"),
        ("Push Notification Tapped", "push_opened"),
        ("Push Opened", "push_opened"),
        ("Coupon Claimed", "coupon_claimed"),
        ("QR Scanned", "qr_scanned"),
        ("  order completed ", "order_completed"),
        ("product_view", "product_view"),
        ("qr_scanned", "qr_scanned"),
    ],
)
def test_track_names(name: str, etype: str) -> None:
    assert track_type(name) == etype


def test_snake_name() -> None:
    assert snake_name("QR-Scanned!") == "qr_scanned"


@pytest.mark.parametrize(
    ("call", "message", "reason"),
    [
        ("track", {"event": "Video Played", "messageId": "x", "anonymousId": "a"}, "unknown_type"),
        ("track", {"event": "purchase", "messageId": "x", "anonymousId": "a"}, "unknown_type"),
        ("track", {"messageId": "x", "anonymousId": "a"}, "schema_violation"),
        ("group", {"groupId": "g", "messageId": "x", "anonymousId": "a"}, "unknown_type"),
        (None, {"type": "bogus", "messageId": "x"}, "unknown_type"),
        (None, {"type": "page", "anonymousId": "a"}, "schema_violation"),
        (None, ["not", "an", "object"], "schema_violation"),
    ],
)
def test_unmappable_messages_raise_typed_reasons(call: str | None, message: Any, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        map_message(message, "web", RECEIVED, call)
    assert info.value.reason == reason


def test_batch_merges_batch_level_sent_at_and_context() -> None:
    body: dict[str, Any] = {
        "writeKey": "k",
        "sentAt": "2026-09-21T10:00:00Z",
        "context": {"device": {"id": "d-1"}, "app": {"name": "Shop"}},
        "batch": [
            {"type": "screen", "name": "Home", "messageId": "b-1", "anonymousId": "a"},
            {
                "type": "track",
                "event": "Coupon Claimed",
                "messageId": "b-2",
                "anonymousId": "a",
                "sentAt": "2026-09-21T10:00:01Z",
                "context": {"app": {"name": "Shop", "version": "2.0"}},
            },
            "junk",
        ],
    }
    messages = batch_messages(body)
    assert messages[2] == "junk"
    first = map_message(messages[0], "app", RECEIVED)
    second = map_message(messages[1], "app", RECEIVED)
    assert first["sent_at"] == "2026-09-21T10:00:00Z"
    assert first["ids"] == {"anonymous_id": "a", "device_id": "d-1"}
    assert first["context"] == {"app": {"name": "Shop"}}
    assert second["sent_at"] == "2026-09-21T10:00:01Z"
    assert second["ids"] == {"anonymous_id": "a", "device_id": "d-1"}
    assert second["context"] == {"app": {"name": "Shop", "version": "2.0"}}
    assert second["type"] == "coupon_claimed"
    assert body["batch"][0] == {"type": "screen", "name": "Home", "messageId": "b-1", "anonymousId": "a"}


def test_batch_accepts_a_bare_array_and_refuses_other_shapes() -> None:
    assert batch_messages([{"type": "page"}]) == [{"type": "page"}]
    with pytest.raises(InvalidEvent):
        batch_messages({"batch": "nope"})


def test_consent_needs_every_matching_category() -> None:
    message = {
        "type": "page",
        "messageId": "c-1",
        "anonymousId": "a",
        "context": {"consent": {"categoryPreferences": {"Advertising": True, "Marketing": False}}},
    }
    assert map_message(message, "web", RECEIVED)["consent"] == {"marketing": False}
