"""`o2o activations deliver` and `tail` against the real broker, a local HTTP receiver and chDB."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from pipeline.config import Settings
from pipeline.kafka import topics
from pipeline.kafka.clients import make_producer
from tests.conftest import o2o, query

pytestmark = pytest.mark.integration


class Receiver:
    """A webhook on 127.0.0.1 that records every post; some decision ids get a 503 first, some a 400."""

    def __init__(self, flaky: set[str], refused: set[str]) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.flaky, self.refused = set(flaky), refused
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = self.headers["Idempotency-Key"]
                receiver.posts.append((key, body))
                code = 200
                if key in receiver.flaky:
                    receiver.flaky.discard(key)
                    code = 503
                elif key in receiver.refused:
                    code = 400
                self.send_response(code)
                self.send_header("Retry-After", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver(flaky={"d1"}, refused={"d4"})
    yield hook
    hook.server.shutdown()


def decision(decision_id: str, outcome: str = "sent") -> dict[str, Any]:
    return {
        "decision_id": decision_id, "rule": "open_cart_nearby", "person_id": f"p_{decision_id}",
        "trigger_event_id": f"e_{decision_id}", "triggered_at": 1_780_000_000_000,
        "decided_at": 1_780_000_000_000,
        "channel": "push", "outcome": outcome, "reason": "", "store_id": "s1", "order_id": "", "coupon": "",
        "message": "hello", "version": 1,
    }  # fmt: skip


def test_deliver_posts_each_decision_at_most_once_across_a_crash(
    settings: Settings, receiver: Receiver
) -> None:
    o2o(settings, "init")
    decisions = [decision(f"d{i}") for i in range(1, 7)] + [decision("h1", "holdout")]
    producer = make_producer(settings)
    for d in decisions:
        producer.produce(settings.topic(topics.ACTIVATIONS), orjson.dumps(d), d["decision_id"].encode())
    assert producer.flush(10) == 0

    # the process kills itself after the third decision's post, before recording its answer
    crashing = settings.model_copy(update={"fault_at": "deliver:after_post:3"})
    first = o2o(crashing, "activations", "deliver", "--webhook", receiver.url, "--drain", check=False)
    assert first.returncode == -9, first.stderr[-2000:]
    posted_before = Counter(key for key, _ in receiver.posts)
    assert len(posted_before) == 3
    o2o(settings, "activations", "deliver", "--webhook", receiver.url, "--drain")
    posted = Counter(key for key, _ in receiver.posts)

    # every sent decision reached the receiver; the holdout never did
    assert set(posted) == {f"d{i}" for i in range(1, 7)}
    # once each, but for d1's retry after its 503 (same body, same Idempotency-Key)
    assert {k: n for k, n in posted.items() if n != 1} == {"d1": 2}
    assert all(body == next(d for d in decisions if d["decision_id"] == key) for key, body in receiver.posts)

    # a third run finds every decision final and posts nothing
    again = o2o(settings, "activations", "deliver", "--webhook", receiver.url, "--drain")
    assert len(receiver.posts) == sum(posted.values()) and "nothing to deliver" in again.stderr

    o2o(settings, "run", "sink", "--drain")
    statuses = dict(query(settings, "SELECT decision_id, status FROM {db}.activation_deliveries"))
    killed = [key for key in posted_before if statuses[key] == "unknown"]
    assert len(killed) == 1, statuses  # the one posted when the process died: not posted again
    expected = {f"d{i}": "delivered" for i in range(1, 7)} | {"d4": "failed"} | {killed[0]: "unknown"}
    assert statuses == expected
    attempts = dict(query(settings, "SELECT decision_id, attempts FROM {db}.activation_deliveries"))
    if killed[0] != "d1":
        assert attempts["d1"] == 2


def test_tail_prints_the_decisions(settings: Settings) -> None:
    o2o(settings, "init")
    producer = make_producer(settings)
    for d in (decision("t1"), decision("t2", "holdout")):
        producer.produce(settings.topic(topics.ACTIVATIONS), orjson.dumps(d), d["decision_id"].encode())
    assert producer.flush(10) == 0
    lines = o2o(settings, "activations", "tail", "--from-beginning", "--max", "2", "--format", "json").stdout
    assert sorted(orjson.loads(line)["decision_id"] for line in lines.splitlines()) == ["t1", "t2"]
    text = o2o(settings, "activations", "tail", "--from-beginning", "--idle-exit", "3").stdout
    assert "open_cart_nearby push sent person=p_t1 store=s1" in text
    assert "open_cart_nearby push holdout person=p_t2" in text
