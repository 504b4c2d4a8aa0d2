"""confluent-kafka producer and consumer configurations used by every stage."""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer

from pipeline.config import Settings
from pipeline.errors import DeliveryFailed, KafkaUnavailable
from pipeline.kafka.security import librdkafka_security
from pipeline.model.limits import message_bytes

log = logging.getLogger(__name__)


class LibrdkafkaLog:
    """librdkafka's log lines of one client, through ``logging`` (warnings and worse), without floods.

    While the broker is away every client logs each reconnect attempt, many a
    second (a 12 s broker restart gave 3,700 lines from one ``run all``). A
    line like one logged within :attr:`REPEAT_SECONDS` (digits aside) is
    counted instead, and the count goes with the next one logged.
    """

    REPEAT_SECONDS = 10.0

    def __init__(self, logger: logging.Logger = log) -> None:
        self.logger = logger
        self._logged: dict[str, list[float]] = {}  # line with digits masked -> [logged at, repeats since]

    def log(self, level: int, message: str, *args: Any) -> None:
        """librdkafka calls this (served by the client's ``poll``)."""
        if level < logging.WARNING:
            return
        text = message % args if args else message
        key = re.sub(r"\d+", "#", text)
        now = time.monotonic()
        seen = self._logged.get(key)
        if seen is not None and now - seen[0] < self.REPEAT_SECONDS:
            seen[1] += 1
            return
        if len(self._logged) > 1000:
            self._logged.clear()
        repeats, since = (int(seen[1]), now - seen[0]) if seen is not None else (0, 0.0)
        self._logged[key] = [now, 0]
        if repeats:
            self.logger.log(level, "%s (and %d more like it in the last %.0f s)", text, repeats, since)
        else:
            self.logger.log(level, "%s", text)


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """What every confluent-kafka client needs: the brokers, TLS and SASL as the settings say, a logger."""
    conf: dict[str, Any] = {"bootstrap.servers": settings.bootstrap_servers, **librdkafka_security(settings)}
    conf["logger"] = LibrdkafkaLog()
    conf.update(extra)
    return conf


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """An idempotent, batching producer (acks=all, lz4)."""
    conf = client_config(settings)
    conf |= {
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        # the Java client's partitioner, as faust/aiokafka use: keys land on the same partitions
        "partitioner": "murmur2_random",
        "linger.ms": 20,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 500000,
        "queue.buffering.max.kbytes": 512 * 1024,
        "message.max.bytes": message_bytes(settings),
    }
    conf.update(extra)
    return conf


def process_client_id(settings: Settings, stage: str) -> str:
    """The Kafka client id of a stage's process (``<group>-<host>-<pid>``), as ``o2o status`` lists it."""
    return f"{settings.group(stage)}-{socket.gethostname()}-{os.getpid()}"


def consumer_config(settings: Settings, group: str, **extra: Any) -> dict[str, Any]:
    """A consumer that commits only when told to, reading from the earliest offset."""
    conf = client_config(settings)
    conf |= {
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.min.bytes": 1,
        "fetch.wait.max.ms": 100,
        "queued.max.messages.kbytes": 256 * 1024,
        "partition.assignment.strategy": "cooperative-sticky",
        # a crashed member's partitions move on after this (librdkafka heartbeats every third of it)
        "session.timeout.ms": int(settings.group_session_timeout_seconds * 1000),
        "heartbeat.interval.ms": max(int(settings.group_session_timeout_seconds * 1000 / 3), 100),
        "max.poll.interval.ms": int(settings.max_poll_interval_seconds * 1000),
    }
    conf.update(extra)
    return conf


def make_producer(settings: Settings, **extra: Any) -> Producer:
    """A producer with :func:`producer_config`."""
    return Producer(producer_config(settings, **extra))


def make_consumer(settings: Settings, group: str, **extra: Any) -> Consumer:
    """A consumer with :func:`consumer_config`."""
    return Consumer(consumer_config(settings, group, **extra))


class DeliveryTracker:
    """Counts delivery reports; remembers the first failure so the caller can stop before committing."""

    def __init__(self) -> None:
        self.delivered = 0
        self.error: KafkaError | None = None

    def __call__(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            if self.error is None:
                self.error = err
            log.error("delivery failed: %s", err)
        else:
            self.delivered += 1

    def raise_if_failed(self) -> None:
        """Raise DeliveryFailed when any delivery failed.

        The failure stays recorded: the messages are gone from the producer,
        so retrying the flush would commit offsets of inputs whose outputs were
        lost. The process stops instead, and a restart re-processes them.
        """
        if self.error is not None:
            raise DeliveryFailed(f"a produced message was not delivered: {self.error}")


FLUSH_SECONDS = 60.0
"""How long a command waits for Kafka to acknowledge what it sent before it gives up."""


def flush_within(producer: Producer, what: str, seconds: float = FLUSH_SECONDS) -> None:
    """Wait until Kafka acknowledged every queued message; KafkaUnavailable after ``seconds``.

    Waits in steps of a second, so Ctrl-C reaches the command while Kafka is
    away (one unbounded ``flush()`` blocks signals until librdkafka gives up).
    """
    deadline = time.monotonic() + seconds
    while (left := producer.flush(min(1.0, max(deadline - time.monotonic(), 0.0)))) > 0:
        if time.monotonic() >= deadline:
            raise KafkaUnavailable(
                f"Kafka did not acknowledge {left} message(s) of {what} within {seconds:.0f} s"
            )


def produce(producer: Producer, topic: str, value: bytes | None, key: bytes | None = None, **kw: Any) -> None:
    """Produce one message (``value`` None: a tombstone), waiting for room when the local queue is full."""
    while True:
        try:
            producer.produce(topic, value, key, **kw)
            return
        except BufferError:
            producer.poll(0.05)


Message = tuple[str, bytes | None, bytes | None, int | None]
"""(topic, value or None for a tombstone, key, partition or None for the key's)."""


def send_and_wait(
    settings: Settings, messages: Iterable[Message], what: str, timeout: float = FLUSH_SECONDS
) -> None:
    """Produce ``messages`` through a new producer and wait until Kafka acknowledged every one.

    For commands that publish a few records and must know they landed
    (``o2o forget``, ``o2o restrict``, fits): KafkaUnavailable after
    ``timeout`` (:func:`flush_within`), DeliveryFailed when one was refused.
    """
    delivery = DeliveryTracker()
    producer = make_producer(settings, on_delivery=delivery)
    for topic, value, key, partition in messages:
        produce(producer, topic, value, key, **({} if partition is None else {"partition": partition}))
    flush_within(producer, what, timeout)
    delivery.raise_if_failed()
