"""The collector's limits: rates and concurrency per address and write key, sizes, counts, CORS."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.testclient import TestClient

from pipeline.collector.app import create_app
from pipeline.collector.limits import InFlight, TokenBuckets
from pipeline.config import load_settings
from tests.unit.test_collector_fuzz import MemorySink

KEY = "web-key"
BASIC = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}


def client(**limits: Any) -> TestClient:
    """A collector with these settings (no limit unless given) in front of a memory sink."""
    unlimited = {"collector_rate_per_address": 0, "collector_rate_per_key": 0}
    settings = load_settings(topic_prefix="lim.", **{**unlimited, **limits})
    return TestClient(create_app(settings, {KEY: "web"}, producer=MemorySink()))


def an_event() -> dict[str, Any]:
    """A valid web page view (a new event id each time)."""
    return {
        "event_id": uuid.uuid4().hex,
        "source": "web",
        "type": "page_view",
        "occurred_at": datetime.now(UTC).isoformat(),
        "ids": {"anonymous_id": "a-1"},
    }


def test_token_buckets_allow_a_burst_then_the_rate_and_forget_the_oldest() -> None:
    buckets = TokenBuckets(rate=2.0, max_tracked=2)
    assert [buckets.take("a", 0.0) for _ in range(4)] == [0.0] * 4  # a burst of twice the rate
    assert buckets.take("a", 0.0) == 0.5  # the next token comes in half a second
    assert buckets.take("a", 0.5) == 0.0
    buckets.take("b", 0.5)
    buckets.take("c", 0.5)  # "a" is the least recently used of three: forgotten
    assert [buckets.take("a", 0.5) for _ in range(4)] == [0.0] * 4  # a full bucket again
    assert TokenBuckets(rate=0).take("a", 0.0) == 0.0  # 0: no limit


def test_in_flight_caps_each_key_and_frees_slots() -> None:
    slots = InFlight(2)
    assert [slots.enter("a"), slots.enter("a"), slots.enter("a"), slots.enter("b")] == [
        True,
        True,
        False,
        True,
    ]
    slots.leave("a")
    assert slots.enter("a")
    assert all(InFlight(0).enter("x") for _ in range(100))


def test_over_the_rate_of_an_address_is_429_with_retry_after_and_counted() -> None:
    with client(collector_rate_per_address=1) as http:  # bursts of 2
        codes = [http.post("/v1/events", json=an_event(), headers=BASIC).status_code for _ in range(3)]
        refused = http.post("/v1/events", json=an_event(), headers=BASIC)
        metrics = http.get("/metrics").text
        health = http.get("/healthz").status_code
    assert codes == [200, 200, 429]
    assert refused.status_code == 429 and refused.json()["error"] == "rate_address"
    assert int(refused.headers["Retry-After"]) >= 1
    assert 'o2o_collector_refused_total{limit="rate_address"} 2.0' in metrics
    assert health == 200  # health checks are never limited


def test_over_the_rate_of_a_write_key_is_429() -> None:
    with client(collector_rate_per_key=1) as http:
        codes = [http.post("/v1/events", json=an_event(), headers=BASIC).status_code for _ in range(3)]
        body_key = http.post("/v1/events", json={**an_event(), "writeKey": KEY})
    assert codes == [200, 200, 429]
    assert body_key.status_code == 429 and body_key.json()["error"] == "rate_key"  # the key, wherever it is
    with client(collector_rate_per_key=1) as http:  # an unknown key takes no token of a known one
        assert http.post("/v1/events", json=an_event(), auth=("wrong", "")).status_code == 401
        assert [http.post("/v1/events", json=an_event(), headers=BASIC).status_code for _ in range(2)] == [
            200
        ] * 2


def test_a_key_in_the_body_is_looked_for_in_a_small_read_only() -> None:
    batch = {"batch": [an_event() for _ in range(30)]}
    size = len(orjson.dumps(batch))
    assert 2048 < size < 100_000
    with client(collector_body_key_max_bytes=2048) as http:
        in_body = http.post("/v1/events", content=orjson.dumps({**batch, "writeKey": KEY}))
        in_header = http.post("/v1/events", content=orjson.dumps(batch), headers=BASIC)
    assert in_body.status_code == 413 and in_body.json()["error"] == "too_large"
    assert in_header.status_code == 200 and in_header.json()["accepted"] == 30


def test_too_many_events_in_one_request_is_413() -> None:
    with client(collector_max_batch_events=2) as http:
        events_route = http.post("/v1/events", json=[an_event() for _ in range(3)], headers=BASIC)
        messages = [
            {"type": "track", "event": "Viewed", "anonymousId": "a", "messageId": f"m{i}"} for i in range(3)
        ]
        segment = http.post("/v1/batch", json={"batch": messages}, headers=BASIC)
        two = http.post("/v1/events", json=[an_event() for _ in range(2)], headers=BASIC)
    assert events_route.status_code == 413 and events_route.json()["error"] == "too_many_events"
    assert segment.status_code == 413 and segment.json()["error"] == "too_many_events"
    assert two.status_code == 200


def test_browsers_may_post_only_from_configured_origins() -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    with client(collector_cors_origins="https://shop.example.com") as http:
        allowed = http.options("/v1/events", headers={"Origin": "https://shop.example.com", **preflight})
        other = http.options("/v1/events", headers={"Origin": "https://evil.example", **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://shop.example.com"
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    with client() as http:  # no origins configured: no CORS answer at all
        plain = http.post(
            "/v1/events", json=an_event(), headers={**BASIC, "Origin": "https://shop.example.com"}
        )
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers
