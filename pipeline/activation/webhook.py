"""``o2o activations deliver``: post decisions from the ``activations`` topic to a webhook.

The rules of what to post, when to retry and which statuses a decision goes
through are in :mod:`pipeline.activation.delivery`; this module reads the
topic with a consumer group, posts with httpx, writes each status to
``activation.deliveries`` (acknowledged before the next step) and commits the
input once the decisions before it have a final status.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import orjson
from confluent_kafka import TopicPartition

from pipeline.activation.delivery import (
    DeliveryLedger,
    RetryPolicy,
    retry_after_seconds,
    status_record,
    to_post,
    verdict,
)
from pipeline.config import Settings
from pipeline.errors import DeliveryFailed
from pipeline.kafka import topics
from pipeline.kafka.clients import DeliveryTracker, make_consumer, make_producer, produce
from pipeline.runtime.faults import FaultPlan

log = logging.getLogger(__name__)

DELIVERY_GROUP = "activation-delivery"


class WebhookDelivery:
    """Posts each decision to post once to ``url``, with retries, recording every status."""

    def __init__(
        self,
        settings: Settings,
        url: str,
        outcomes: frozenset[str] = frozenset({"sent"}),
        headers: Mapping[str, str] | None = None,
        policy: RetryPolicy | None = None,
        timeout: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.url = url
        self.outcomes = outcomes
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        default_headers = {"Content-Type": "application/json", **(headers or {})}
        self.client = httpx.Client(timeout=timeout, headers=default_headers)
        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per post otherwise
        self.ledger = DeliveryLedger()
        self.counts: Counter[str] = Counter()
        self.faults = FaultPlan("deliver", settings.fault_at)
        self.tracker = DeliveryTracker()
        self.producer = make_producer(settings, on_delivery=self.tracker)
        self._stopped = False

    def run(self, drain: bool = False) -> Counter[str]:
        """Deliver until stopped (SIGTERM, Ctrl-C), or with ``drain`` until the topic's current end."""
        from pipeline.kafka.admin import end_offsets
        from pipeline.kafka.compacted import CompactedReader

        reader = CompactedReader(self.settings, topics.ACTIVATION_DELIVERIES, f"{DELIVERY_GROUP}-ledger")
        try:
            for key, value in reader.load(whole=True):
                self.ledger.take(key, value)
        finally:
            reader.close()
        source = self.settings.topic(topics.ACTIVATIONS)
        ends = {p: end for (_t, p), end in end_offsets(self.settings, [source]).items()}
        group = self.settings.group(DELIVERY_GROUP)
        consumer = make_consumer(self.settings, group, **{"enable.auto.commit": False})
        consumer.subscribe([source])
        previous = signal.signal(signal.SIGTERM, self._stop)
        try:
            while not self._stopped:
                messages = consumer.consume(100, timeout=0.5)
                done: dict[int, int] = {}
                for message in messages:
                    value = message.value()
                    if message.error() is not None or value is None:
                        log.warning("deliver: %s", message.error())
                        continue
                    self._deliver(orjson.loads(value))
                    done[message.partition() or 0] = (message.offset() or 0) + 1
                    if self._stopped:
                        break
                if done:
                    consumer.commit(offsets=[TopicPartition(source, p, o) for p, o in done.items()],
                                    asynchronous=False)  # fmt: skip
                elif drain and _caught_up(consumer, ends):
                    break
        finally:
            signal.signal(signal.SIGTERM, previous)
            consumer.close()
            self.client.close()
        return self.counts

    def _stop(self, *_args: object) -> None:
        self._stopped = True

    def _deliver(self, decision: dict[str, Any]) -> None:
        if not to_post(decision, self.outcomes):
            return
        decision_id = decision["decision_id"]
        step = self.ledger.next_step(decision_id)
        if step == "skip":
            self.counts["already_final"] += 1
            return
        if step == "unknown":
            # the process stopped between the POST and recording its answer: never post twice
            log.warning("deliver: %s was being sent when the last run stopped; recorded unknown", decision_id)
            self._record(decision, "unknown", self.ledger.statuses[decision_id].get("attempts", 1))
            return
        self._record(decision, "sending", 0)
        attempts, code, error = 0, 0, ""
        while True:
            attempts += 1
            answer, code, error, retry_after = self._post(decision)
            if answer != "retry" or attempts >= self.policy.max_attempts or self._stopped:
                break
            self.counts["retries"] += 1
            self.sleep(self.policy.delay(attempts, retry_after))
        self.faults.reach("after_post")
        self._record(decision, "delivered" if answer == "delivered" else "failed", attempts, code, error)

    def _post(self, decision: dict[str, Any]) -> tuple[str, int, str, float | None]:
        """One POST: (verdict, HTTP status or 0, error text, Retry-After seconds)."""
        body = orjson.dumps(decision)
        try:
            key = {"Idempotency-Key": decision["decision_id"]}
            response = self.client.post(self.url, content=body, headers=key)
        except httpx.HTTPError as exc:
            return "retry", 0, f"{type(exc).__name__}: {exc}", None
        answer = verdict(response.status_code)
        error = "" if answer == "delivered" else response.text[:200]
        return answer, response.status_code, error, retry_after_seconds(response.headers.get("Retry-After"))

    def _record(
        self, decision: dict[str, Any], status: str, attempts: int, code: int = 0, error: str = ""
    ) -> None:
        """Write a status and wait for Kafka's acknowledgement before going on."""
        row = status_record(decision, status, attempts, int(time.time() * 1000), code, error)
        produce(self.producer, self.settings.topic(topics.ACTIVATION_DELIVERIES), orjson.dumps(row),
                decision["decision_id"].encode())  # fmt: skip
        if self.producer.flush(30):
            decision_id = decision["decision_id"]
            raise DeliveryFailed(f"deliver: the status of {decision_id} was not acknowledged in 30 s")
        self.tracker.raise_if_failed()
        self.ledger.take(decision["decision_id"], row)
        self.counts[status] += 1


def _caught_up(consumer: Any, ends: dict[int, int]) -> bool:
    """True when the group holds every partition and has read or committed up to the start-up ends."""
    assignment = consumer.assignment()
    if {tp.partition for tp in assignment} != set(ends):
        return False
    read = {tp.partition: tp.offset for tp in consumer.position(assignment)}
    committed = {tp.partition: tp.offset for tp in consumer.committed(assignment, timeout=5)}
    return all(max(read[p], committed[p]) >= end for p, end in ends.items())
