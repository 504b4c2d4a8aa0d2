"""The HTTP collector against the real broker, driven by real tracking clients."""

from __future__ import annotations

import asyncio
import base64
import gzip
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import rudderstack.analytics as rudder
import uvicorn
from starlette.applications import Starlette

from pipeline.collector.app import create_app
from pipeline.collector.kafka_sink import KafkaSink
from pipeline.config import Settings
from pipeline.kafka.admin import ensure_topics
from pipeline.kafka.clients import make_consumer
from pipeline.stack.local_kafka import free_port
from tests.conftest import o2o, query

pytestmark = pytest.mark.integration

WEB_KEY = "wk-web-0123456789"
APP_KEY = "wk-app-0123456789"
BODY_LIMIT = 64 * 1024


@dataclass
class Running:
    """A collector served by uvicorn on a loopback port."""

    url: str
    app: Starlette


def serve(app: Starlette) -> tuple[uvicorn.Server, threading.Thread, str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="collector-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "uvicorn exited during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture
def collector(settings: Settings) -> Iterator[Running]:
    ensure_topics(settings)
    app = create_app(settings, {WEB_KEY: "web", APP_KEY: "app"}, max_body_bytes=BODY_LIMIT)
    server, thread, url = serve(app)
    try:
        yield Running(url, app)
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "uvicorn did not shut down"


@dataclass
class Received:
    topic: str
    key: bytes | None
    value: dict[str, Any]
    headers: dict[str, str]


def consume(settings: Settings, names: list[str], count: int, timeout: float = 30.0) -> list[Received]:
    """At least ``count`` messages of these topics (of this test's prefix), waiting up to ``timeout``."""
    consumer = make_consumer(settings, f"{settings.topic_prefix}collector-test-{uuid.uuid4().hex[:6]}")
    consumer.subscribe([settings.topic(name) for name in names])
    out: list[Received] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            raw_headers: list[Any] = list(message.headers() or [])
            headers = {str(k): (v or b"").decode() for k, v in raw_headers}
            out.append(
                Received(message.topic() or "", message.key(), orjson.loads(message.value() or b""), headers)
            )
        time.sleep(0.5)  # anything beyond ``count`` would be a bug: give it a chance to show
        while (message := consumer.poll(0.2)) is not None:
            if not message.error():
                out.append(
                    Received(message.topic() or "", message.key(), orjson.loads(message.value() or b""), {})
                )
    finally:
        consumer.close()
    return out


def by_event_id(messages: list[Received]) -> dict[str, Received]:
    return {m.value["event_id"]: m for m in messages}


def sent_time() -> datetime:
    """Five minutes ago, in whole milliseconds (Segment's client drops the microseconds)."""
    ts = datetime.now(UTC) - timedelta(minutes=5)
    return ts.replace(microsecond=ts.microsecond // 1000 * 1000)


def assert_tracked(settings: Settings, got: dict[str, Received], prefix: str, ts: datetime) -> None:
    """The track, identify and page calls sent with ``prefix`` ids arrived as contract events."""
    order = got[f"{prefix}-order"]
    assert order.topic == settings.topic("raw.web")
    assert order.key == b"user_id:u-1"
    assert order.value["source"] == "web"
    assert order.value["type"] == "order_completed"
    assert order.value["ids"] == {"user_id": "u-1", "anonymous_id": "a-1"}
    assert datetime.fromisoformat(order.value["occurred_at"]) == ts
    assert "sent_at" in order.value
    assert order.value["properties"]["revenue"] == 42.5
    assert order.value["properties"]["order_id"] == "o-1"
    identify = got[f"{prefix}-identify"]
    assert identify.topic == settings.topic("raw.web")
    assert identify.value["type"] == "login"
    assert identify.value["ids"] == {"user_id": "u-1", "anonymous_id": "a-1", "email": "alice@example.com"}
    page = got[f"{prefix}-page"]
    assert page.value["type"] == "page_view"
    assert page.value["ids"] == {"anonymous_id": "a-1"}
    assert page.value["context"]["page"]["url"] == "https://shop.example.com/"
    assert datetime.fromisoformat(page.value["occurred_at"]) == ts


def send_calls(client: Any, prefix: str, ts: datetime) -> None:
    client.track(
        user_id="u-1", anonymous_id="a-1", event="Order Completed", message_id=f"{prefix}-order",
        timestamp=ts, properties={"revenue": 42.5, "order_id": "o-1", "currency": "EUR"},
    )  # fmt: skip
    client.identify(
        user_id="u-1", anonymous_id="a-1", traits={"email": "alice@example.com"},
        message_id=f"{prefix}-identify", timestamp=ts,
    )  # fmt: skip
    client.page(
        anonymous_id="a-1", name="Home", properties={"url": "https://shop.example.com/"},
        message_id=f"{prefix}-page", timestamp=ts,
    )  # fmt: skip


def test_segment_client_calls_arrive_as_contract_events(settings: Settings, collector: Running) -> None:
    from segment.analytics import Client
    from segment.analytics.request import APIError

    ts = sent_time()
    web = Client(WEB_KEY, host=collector.url, sync_mode=True)
    send_calls(web, "seg", ts)
    app = Client(APP_KEY, host=collector.url, sync_mode=True)
    app.screen(
        user_id="u-1", name="Basket", message_id="seg-screen", timestamp=ts, context={"device": {"id": "d-1"}}
    )
    # the queueing mode: one gzip batch per flush
    batched = Client(WEB_KEY, host=collector.url, gzip=True, upload_interval=0.05)
    for i in range(3):
        batched.track(anonymous_id="a-2", event="Product Viewed", message_id=f"seg-view-{i}", timestamp=ts)
    batched.flush()
    batched.shutdown()

    with pytest.raises(APIError) as info:
        Client("not-a-key", host=collector.url, sync_mode=True).track(anonymous_id="a", event="Signed Up")
    assert info.value.status == 401

    messages = consume(settings, ["raw.web", "raw.app"], 7)
    assert len(messages) == 7
    got = by_event_id(messages)
    assert_tracked(settings, got, "seg", ts)
    screen = got["seg-screen"]
    assert screen.topic == settings.topic("raw.app")
    assert screen.value["type"] == "screen_view"
    assert screen.value["ids"] == {"user_id": "u-1", "device_id": "d-1"}
    for i in range(3):
        assert got[f"seg-view-{i}"].value["type"] == "product_view"

    # ... and on through every stage into ClickHouse
    o2o(settings, "run", "all", "--drain")
    stored = query(settings, "SELECT event_id, type, person_id FROM {db}.events WHERE event_id LIKE 'seg-%'")
    assert {row[0] for row in stored} == set(got)
    person = {row[0]: row[2] for row in stored}
    assert person["seg-order"] == person["seg-identify"] == person["seg-page"] == person["seg-screen"]
    assert person["seg-view-0"] != person["seg-order"]  # another browser, never identified
    conversions = query(settings, "SELECT event_id, revenue FROM {db}.conversions")
    assert conversions == [("seg-order", 42.5)]
    emails = query(settings, "SELECT id_value FROM {db}.identities WHERE id_type = 'email'")
    assert len(emails) == 1 and "alice" not in emails[0][0]


def test_rudderstack_client_calls_arrive_as_contract_events(settings: Settings, collector: Running) -> None:
    ts = sent_time()
    client = rudder.Client(WEB_KEY, host=collector.url, sync_mode=True)  # gzip by default
    send_calls(client, "rudder", ts)
    got = by_event_id(consume(settings, ["raw.web"], 3))
    assert len(got) == 3
    assert_tracked(settings, got, "rudder", ts)


def event(event_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "source": "web",
        "type": "page_view",
        "occurred_at": datetime.now(UTC).isoformat(),
        "ids": {"anonymous_id": "a-9"},
    } | overrides


def test_http_errors_rejections_dead_letters_and_metrics(settings: Settings, collector: Running) -> None:
    with httpx.Client(base_url=collector.url, auth=(WEB_KEY, "")) as http:
        good = event("ok-1")
        assert http.post("/v1/events", json=good).json() == {"accepted": 1, "rejected": []}

        r = http.post("/v1/events", json={"batch": [event("ok-2"), event("bad-1", ids={})]})
        assert r.status_code == 200
        assert r.json() == {
            "accepted": 1,
            "rejected": [
                {
                    "index": 1,
                    "reason": "missing_identifier",
                    "detail": "$.ids: at least one identifier is required",
                    "event_id": "bad-1",
                }
            ],
        }
        r = http.post("/v1/events", json=[event("bad-2", type="enter"), event("bad-3", source="pos")])
        assert r.status_code == 400
        assert [(x["index"], x["reason"]) for x in r.json()["rejected"]] == [
            (0, "unknown_type"),
            (1, "forbidden_source"),
        ]
        segment_batch = {
            "batch": [
                {
                    "type": "track",
                    "event": "Order Completed",
                    "messageId": "sb-1",
                    "anonymousId": "a-9",
                    "properties": {"orderId": "o-9", "revenue": 10, "currency": "EUR"},
                },
                {"type": "track", "event": "Video Played", "messageId": "sb-2", "anonymousId": "a-9"},
            ]
        }
        r = http.post("/v1/batch", json=segment_batch)
        assert r.status_code == 200
        assert r.json()["accepted"] == 1
        assert r.json()["rejected"][0]["index"] == 1
        assert r.json()["rejected"][0]["reason"] == "unknown_type"
        assert r.json()["rejected"][0]["event_id"] == "sb-2"

        assert http.post("/v1/events", json=good, auth=("wrong", "")).status_code == 401
        assert httpx.post(f"{collector.url}/v1/track", json={"event": "x"}).status_code == 401
        assert httpx.post(f"{collector.url}/v1/track", json={"writeKey": "nope"}).status_code == 401
        body_key = httpx.post(f"{collector.url}/v1/events", json={"writeKey": WEB_KEY, **event("ok-3")})
        assert body_key.json() == {"accepted": 1, "rejected": []}

        big = {"batch": [event(f"big-{i}") for i in range(BODY_LIMIT // 100)]}
        assert http.post("/v1/events", json=big).status_code == 413
        bomb = gzip.compress(b"[" + b" " * (BODY_LIMIT * 4) + b"]")
        assert http.post("/v1/batch", content=bomb, headers={"Content-Encoding": "gzip"}).status_code == 413
        r = http.post("/v1/events", content=b'{"event_id": ')
        assert (r.status_code, r.json()["error"]) == (400, "malformed_json")

        assert (http.get("/healthz").status_code, http.get("/healthz").text) == (200, "ok")
        metrics = http.get("/metrics").text

    messages = consume(settings, ["raw.web", "raw.app", "dlq"], 8)
    valid = {m.value["event_id"] for m in messages if m.topic == settings.topic("raw.web")}
    assert valid == {"ok-1", "ok-2", "ok-3", "sb-1"}
    dead = {
        (m.value.get("event_id") or m.value.get("messageId")): m for m in messages if m.topic.endswith("dlq")
    }
    assert set(dead) == {"bad-1", "bad-2", "bad-3", "sb-2"}
    assert dead["sb-2"].headers["o2o.reason"] == "unknown_type"
    assert dead["sb-2"].headers["o2o.topic"] == "collector/v1/batch"
    assert dead["bad-3"].headers["o2o.reason"] == "forbidden_source"

    assert 'o2o_collector_events_accepted_total{source="web"} 4.0' in metrics
    assert 'o2o_collector_events_rejected_total{reason="missing_identifier"} 1.0' in metrics
    assert 'o2o_collector_events_rejected_total{reason="unknown_type"} 2.0' in metrics
    assert 'o2o_collector_requests_total{route="/v1/events",status="413"} 1.0' in metrics
    assert 'o2o_collector_requests_total{route="/v1/events",status="401"} 1.0' in metrics
    assert 'o2o_collector_requests_total{route="/v1/batch",status="200"} 1.0' in metrics
    assert "o2o_collector_delivery_seconds_count 8.0" in metrics


def test_shutdown_flushes_what_is_in_flight(settings: Settings) -> None:
    ensure_topics(settings)
    topic = settings.topic("raw.web")

    async def scenario() -> list[float]:
        sink = KafkaSink(settings, linger_ms=1000)  # nothing leaves before the flush
        await sink.start()
        sends = [
            asyncio.create_task(sink.send(topic, orjson.dumps(event(f"f-{i}")), None)) for i in range(20)
        ]
        await asyncio.sleep(0.05)
        await sink.close()
        return await asyncio.wait_for(asyncio.gather(*sends), 5)

    assert len(asyncio.run(scenario())) == 20
    assert len(consume(settings, ["raw.web"], 20)) == 20


def test_kafka_away_means_503_and_unhealthy(settings: Settings) -> None:
    away = settings.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    sink = KafkaSink(away, delivery_timeout_ms=1500)
    server, thread, url = serve(create_app(away, {WEB_KEY: "web"}, sink))
    try:
        r = httpx.post(f"{url}/v1/events", json=event("e-1"), auth=(WEB_KEY, ""), timeout=30)
        assert r.status_code == 503
        assert r.json()["error"] == "kafka_unavailable"
        assert httpx.get(f"{url}/healthz", timeout=30).status_code == 503
    finally:
        server.should_exit = True
        thread.join(30)


SINGLE_CALLS = [  # (route, write key, message without a "type": the route decides the call)
    ("/v1/track", WEB_KEY, {"event": "Order Completed", "anonymousId": "a-5",
                            "properties": {"orderId": "o-5", "revenue": 5, "currency": "EUR"}}),
    ("/v1/t", WEB_KEY, {"event": "Product Viewed", "anonymousId": "a-5"}),
    ("/v1/identify", WEB_KEY, {"userId": "u-5", "anonymousId": "a-5", "traits": {"email": "e@example.com"}}),
    ("/v1/i", WEB_KEY, {"userId": "u-5"}),
    ("/v1/page", WEB_KEY, {"anonymousId": "a-5", "name": "Home"}),
    ("/v1/p", WEB_KEY, {"anonymousId": "a-5"}),
    ("/v1/alias", WEB_KEY, {"userId": "u-5", "previousId": "a-4"}),
    ("/v1/a", WEB_KEY, {"userId": "u-6", "previousId": "a-6"}),
    ("/v1/screen", APP_KEY, {"anonymousId": "d-5", "name": "Home"}),
    ("/v1/s", APP_KEY, {"anonymousId": "d-5"}),
]  # fmt: skip


def test_segment_single_call_routes_deliver_one_event_each(settings: Settings, collector: Running) -> None:
    for route, key, message in SINGLE_CALLS:
        body = {**message, "messageId": f"single{route}"}
        r = httpx.post(f"{collector.url}{route}", json=body, auth=(key, ""))
        assert (r.status_code, r.json()) == (200, {"success": True, "accepted": 1, "rejected": []}), route
    got = by_event_id(consume(settings, ["raw.web", "raw.app", "dlq"], len(SINGLE_CALLS)))
    assert {event_id: (m.topic.rsplit(".", 1)[1], m.value["type"]) for event_id, m in got.items()} == {
        "single/v1/track": ("web", "order_completed"),
        "single/v1/t": ("web", "product_view"),
        "single/v1/identify": ("web", "login"),
        "single/v1/i": ("web", "login"),
        "single/v1/page": ("web", "page_view"),
        "single/v1/p": ("web", "page_view"),
        "single/v1/alias": ("web", "login"),
        "single/v1/a": ("web", "login"),
        "single/v1/screen": ("app", "screen_view"),
        "single/v1/s": ("app", "screen_view"),
    }
    assert got["single/v1/identify"].value["ids"] == {"user_id": "u-5", "anonymous_id": "a-5",
                                                      "email": "e@example.com"}  # fmt: skip
    assert got["single/v1/alias"].value["ids"] == {"anonymous_id": "a-4", "user_id": "u-5"}
    assert got["single/v1/a"].value["ids"] == {"anonymous_id": "a-6", "user_id": "u-6"}
    assert got["single/v1/track"].value["properties"]["order_id"] == "o-5"
    metrics = httpx.get(f"{collector.url}/metrics").text
    for route, _key, _message in SINGLE_CALLS:
        assert f'o2o_collector_requests_total{{route="{route}",status="200"}} 1.0' in metrics


def test_slow_and_crowding_clients_are_cut_off_and_others_still_served(settings: Settings) -> None:
    """Two clients that never finish their bodies hold their address's two slots: a third request
    from that address is refused at once (429), the slow ones get 408 after the read timeout, and
    then the address is served again."""
    limited = settings.model_copy(
        update={"collector_read_timeout_seconds": 1.0, "collector_concurrency_per_address": 2,
                "collector_rate_per_address": 0}
    )  # fmt: skip
    ensure_topics(limited)
    server, thread, url = serve(create_app(limited, {WEB_KEY: "web"}))
    port = int(url.rsplit(":", 1)[1])
    auth = base64.b64encode(f"{WEB_KEY}:".encode())
    head = b"POST /v1/events HTTP/1.1\r\nHost: c\r\nAuthorization: Basic " + auth
    slow = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(2)]
    try:
        for connection in slow:  # headers, then one byte of a 200-byte body, then nothing
            connection.sendall(head + b"\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{")
        with httpx.Client(base_url=url, auth=(WEB_KEY, "")) as http:
            deadline = time.monotonic() + 10
            crowded = http.post("/v1/events", json=event("crowd-0"))
            while crowded.status_code == 200 and time.monotonic() < deadline:  # until both hold their slot
                crowded = http.post("/v1/events", json=event(f"crowd-{uuid.uuid4().hex[:6]}"))
            assert crowded.status_code == 429 and crowded.json()["error"] == "busy_address", crowded.text
            assert crowded.headers["Retry-After"] == "1"
            answers = [connection.recv(4096).split(b"\r\n")[0] for connection in slow]
            assert answers == [b"HTTP/1.1 408 Request Timeout"] * 2, answers
            assert http.post("/v1/events", json=event("after")).status_code == 200
            metrics = http.get("/metrics").text
        assert 'o2o_collector_refused_total{limit="slow_client"} 2.0' in metrics
        assert 'o2o_collector_refused_total{limit="busy_address"}' in metrics
    finally:
        for connection in slow:
            connection.close()
        server.should_exit = True
        thread.join(30)
