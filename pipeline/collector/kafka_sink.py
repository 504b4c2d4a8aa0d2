"""Produce from asyncio code and await each message's Kafka delivery report.

confluent-kafka calls delivery callbacks from ``poll()`` or ``flush()``; a
daemon thread polls the producer, and each callback resolves the message's
asyncio future on the event loop with ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from pipeline.config import Settings
from pipeline.errors import DeliveryFailed
from pipeline.kafka.clients import make_producer

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


class EventSink(Protocol):
    """What the collector needs to deliver messages (a :class:`KafkaSink`, or a fake in tests)."""

    async def start(self) -> None:
        """Get ready to send; called once, on the serving event loop."""

    async def send(
        self, topic: str, value: bytes, key: bytes | None, headers: Headers | None = None
    ) -> float:
        """Deliver one message; return the seconds until it was acknowledged, raise DeliveryFailed."""

    async def healthy(self) -> bool:
        """True when the cluster can be reached."""

    async def close(self) -> None:
        """Deliver what is pending and release resources."""


class KafkaSink:
    """An :class:`EventSink` on a confluent-kafka producer (``acks=all``, idempotent).

    ``delivery_timeout_ms`` bounds how long one HTTP request may wait for
    Kafka: a message still unacknowledged then fails (the request answers
    503 and the tracker retries; ingest drops the duplicates by event_id).
    """

    def __init__(
        self,
        settings: Settings,
        producer: Producer | None = None,
        *,
        delivery_timeout_ms: int = 30_000,
        linger_ms: int = 5,
        close_timeout: float = 30.0,
    ) -> None:
        self._owned = producer is None
        self._producer = producer or make_producer(
            settings,
            **{"delivery.timeout.ms": delivery_timeout_ms, "linger.ms": linger_ms},
        )
        self._close_timeout = close_timeout
        self._health_timeout = 3.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._health: tuple[float, bool] = (0.0, False)

    async def start(self) -> None:
        """Bind to the running loop and start the polling thread."""
        self._loop = asyncio.get_running_loop()
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll_forever, name="collector-kafka-poll", daemon=True)
        self._thread.start()

    def _poll_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self._producer.poll(0.1)
            except Exception:  # a callback raising must not end delivery for everyone
                log.exception("polling the producer failed")

    async def send(
        self, topic: str, value: bytes, key: bytes | None, headers: Headers | None = None
    ) -> float:
        """Produce one message and wait for its delivery report."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("KafkaSink.start() was not awaited")
        future: asyncio.Future[float] = loop.create_future()
        started = time.monotonic()

        def on_delivery(err: KafkaError | None, _msg: object) -> None:
            try:
                loop.call_soon_threadsafe(_settle, future, err, time.monotonic() - started)
            except RuntimeError:  # the loop is closed: nobody waits any more
                log.debug("delivery report after the event loop closed: %s", err)

        kwargs: dict[str, Any] = {"key": key, "on_delivery": on_delivery}
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                self._producer.produce(topic, value, **kwargs)
                break
            except BufferError:  # local queue full: the polling thread makes room
                await asyncio.sleep(0.02)
            except KafkaException as exc:
                raise DeliveryFailed(f"cannot produce to {topic}: {exc}") from exc
        return await future

    async def healthy(self) -> bool:
        """Whether broker metadata can be fetched (cached for a second)."""
        checked_at, ok = self._health
        if time.monotonic() - checked_at < 1.0:
            return ok
        try:
            await asyncio.to_thread(self._producer.list_topics, timeout=self._health_timeout)
            ok = True
        except KafkaException as exc:
            log.warning("Kafka is not reachable: %s", exc)
            ok = False
        self._health = (time.monotonic(), ok)
        return ok

    async def close(self) -> None:
        """Flush (delivery reports still resolve their futures), stop polling, close our producer.

        Messages still undelivered after ``close_timeout`` are purged: their
        senders get DeliveryFailed rather than waiting for ever.
        """
        left = await asyncio.to_thread(self._producer.flush, self._close_timeout)
        if left:
            log.error("%d messages were not delivered before shutdown; purging them", left)
            self._producer.purge()
            await asyncio.to_thread(self._producer.flush, 1.0)
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)
            self._thread = None
        if self._owned:
            await asyncio.to_thread(self._producer.close)


def _settle(future: asyncio.Future[float], err: KafkaError | None, seconds: float) -> None:
    if future.done():  # the request went away (client disconnected)
        return
    if err is not None:
        future.set_exception(DeliveryFailed(f"not delivered: {err}"))
    else:
        future.set_result(seconds)
