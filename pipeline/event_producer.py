"""The producers' library: send contract events straight to Kafka from Python.

Web, app, geofence and POS teams use :class:`EventProducer` instead of
hand-rolled Kafka code. It serialises each event with orjson, keys it by its
strongest identifier (so one person's events stay in order on one partition)
and sends it to the raw topic of its source, with an idempotent, batching
confluent-kafka producer (``acks=all``, ``enable.idempotence``, lz4,
``linger.ms`` 10).

Usage::

    from pipeline.event_producer import EventProducer

    with EventProducer(bootstrap_servers="kafka:9092", validate=True) as producer:
        producer.send({
            "event_id": "3f6c...",
            "source": "web",
            "type": "page_view",
            "occurred_at": "2026-11-01T10:00:00+01:00",
            "ids": {"anonymous_id": "c-123"},
        })
    # leaving the block flushes; it raises DeliveryFailed if any event was not delivered

:meth:`EventProducer.send` never waits for the broker: it queues the event and
returns. Delivery is reported asynchronously (``on_delivery`` callback, the
``delivered`` / ``failed`` counters); :meth:`EventProducer.flush` waits for it.
"""

from __future__ import annotations

import functools
import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import orjson

from pipeline.config import Settings, load_settings
from pipeline.errors import DeliveryFailed, InvalidEvent, KafkaUnavailable
from pipeline.ingest.normalize import EventNormalizer
from pipeline.kafka.clients import producer_config
from pipeline.producer import raw_key, raw_topic_for

log = logging.getLogger(__name__)

DEFAULT_LINGER_MS = 10
DEFAULT_MAX_BLOCK_SECONDS = 30.0
_BACKOFF_POLL_SECONDS = 0.05


class ProducerLike(Protocol):
    """The part of ``confluent_kafka.Producer`` that :class:`EventProducer` uses."""

    def produce(
        self,
        topic: str,
        value: bytes | None = ...,
        key: bytes | None = ...,
        *,
        on_delivery: Callable[[Any, Any], None] | None = ...,
    ) -> None:
        """Queue one message; raise BufferError when the local queue is full."""

    def poll(self, timeout: float = ...) -> int:
        """Serve delivery callbacks, waiting up to ``timeout`` seconds."""

    def flush(self, timeout: float = ...) -> int:
        """Wait for outstanding deliveries; return how many are still queued."""


class _ClosedProducer:
    """Stands in for the released producer after :meth:`EventProducer.close`."""

    def produce(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, *, on_delivery: Any = None
    ) -> None:
        raise RuntimeError("EventProducer is closed")

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


@dataclass(frozen=True)
class DeliveryReport:
    """The outcome of one sent event: where it landed, or why it did not."""

    event_id: str
    topic: str
    partition: int
    offset: int
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the broker acknowledged the event."""
        return self.error is None


def _load_schema_registry() -> Any:
    """``pipeline.ingest.schemas.SchemaRegistry.load()`` when that module exists, else None."""
    try:
        module = importlib.import_module("pipeline.ingest.schemas")
    except ModuleNotFoundError as exc:
        if exc.name in ("pipeline.ingest.schemas", "pipeline.ingest"):
            return None
        raise
    registry_cls = getattr(module, "SchemaRegistry", None)
    if registry_cls is None or not hasattr(registry_cls, "load"):
        return None
    return registry_cls.load()


def _kafka_config_keys(extra: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments as librdkafka keys: ``linger_ms=5`` -> ``"linger.ms": 5``."""
    return {key if "." in key else key.replace("_", "."): value for key, value in extra.items()}


class EventProducer:
    """Sends contract events to their raw topics, keyed by their strongest identifier.

    ``settings`` defaults to :func:`~pipeline.config.load_settings` (``O2O_*``
    environment, ``o2o.toml``); ``bootstrap_servers`` and ``topic_prefix``
    override it. With ``validate=True`` each event is checked locally first
    (the ingest stage's :class:`~pipeline.ingest.normalize.EventNormalizer`,
    plus the JSON schemas when ``pipeline.ingest.schemas`` is installed), and
    :class:`~pipeline.errors.InvalidEvent` is raised instead of sending it.
    Without it, bad events still travel and become dead letters at ingest.

    Extra keyword arguments are confluent-kafka producer settings; underscores
    stand for dots (``linger_ms=5``, ``client_id="pos-gateway"``), or pass
    dotted names with ``**{"linger.ms": 5}``. ``max_block_seconds`` is how
    long :meth:`send` may wait for room in a full local queue before it
    raises :class:`~pipeline.errors.KafkaUnavailable`. ``producer`` replaces
    the confluent-kafka producer (tests, instrumentation); it must call the
    per-message ``on_delivery`` callbacks it is given.

    Not thread-safe: use one instance per thread (or guard it with a lock).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        bootstrap_servers: str | None = None,
        topic_prefix: str | None = None,
        validate: bool = False,
        on_delivery: Callable[[DeliveryReport], None] | None = None,
        max_block_seconds: float = DEFAULT_MAX_BLOCK_SECONDS,
        producer: ProducerLike | None = None,
        **producer_config_overrides: Any,
    ) -> None:
        overrides: dict[str, Any] = {}
        if bootstrap_servers is not None:
            overrides["bootstrap_servers"] = bootstrap_servers
        if topic_prefix is not None:
            overrides["topic_prefix"] = topic_prefix
        if settings is None:
            settings = load_settings(**overrides)
        elif overrides:
            settings = Settings(**{**settings.model_dump(), **overrides})
        self.settings = settings
        self.validate = validate
        self.on_delivery = on_delivery
        self.max_block_seconds = max_block_seconds
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self.first_error: DeliveryReport | None = None
        self._closed = False
        self._normalizer: EventNormalizer | None = None
        self._schemas: Any = None
        if validate:
            self._normalizer = EventNormalizer.from_settings(settings)  # schemas checked separately, below
            self._schemas = _load_schema_registry()
        self._producer: ProducerLike = (
            producer if producer is not None else self._confluent_producer(producer_config_overrides)
        )

    def _confluent_producer(self, overrides: dict[str, Any]) -> ProducerLike:
        from confluent_kafka import Producer

        extra = {"linger.ms": DEFAULT_LINGER_MS, **_kafka_config_keys(overrides)}
        return Producer(producer_config(self.settings, **extra))

    # -- sending --------------------------------------------------------------------

    def check(self, event: dict[str, Any]) -> bytes:
        """Serialise ``event`` and, when validating, check it; returns the bytes that would be sent.

        Raises :class:`~pipeline.errors.InvalidEvent` for an event that is not
        JSON-serialisable or (with ``validate=True``) breaks the contract.
        """
        try:
            value = orjson.dumps(event)
        except TypeError as exc:
            raise InvalidEvent("schema_violation", f"$: not JSON-serialisable: {exc}") from None
        if self._schemas is not None:
            self._schemas.validate(event)
        if self._normalizer is not None:
            self._normalizer.normalise(value, int(time.time() * 1000))
        return value

    def send(self, event: dict[str, Any]) -> None:
        """Queue ``event`` for its raw topic and return without waiting for the broker.

        When the local queue is full, waits (serving delivery reports) until
        there is room, for at most ``max_block_seconds``, then raises
        :class:`~pipeline.errors.KafkaUnavailable`.
        """
        if self._closed:
            raise RuntimeError("EventProducer is closed")
        value = self.check(event)
        topic = raw_topic_for(self.settings, event)
        key = raw_key(event)
        event_id = event.get("event_id")
        callback = functools.partial(self._delivered, event_id if isinstance(event_id, str) else "")
        deadline: float | None = None
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=callback)
                break
            except BufferError:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.max_block_seconds
                elif now >= deadline:
                    raise KafkaUnavailable(
                        f"the producer queue stayed full for {self.max_block_seconds:g} s: "
                        f"is Kafka at {self.settings.bootstrap_servers} reachable?"
                    ) from None
                self._producer.poll(min(_BACKOFF_POLL_SECONDS, max(deadline - now, 0.0)))
        self.sent += 1
        self._producer.poll(0)

    def _delivered(self, event_id: str, err: Any, msg: Any) -> None:
        error = None if err is None else str(err)
        report = DeliveryReport(
            event_id=event_id,
            topic=str(msg.topic()) if msg is not None and msg.topic() is not None else "",
            partition=int(msg.partition()) if msg is not None and msg.partition() is not None else -1,
            offset=int(msg.offset()) if msg is not None and msg.offset() is not None else -1,
            error=error,
        )
        if error is None:
            self.delivered += 1
        else:
            self.failed += 1
            if self.first_error is None:
                self.first_error = report
            log.error("event %s not delivered to %s: %s", event_id, report.topic, error)
        if self.on_delivery is not None:
            self.on_delivery(report)

    # -- waiting and closing --------------------------------------------------------

    @property
    def pending(self) -> int:
        """Events sent but not yet reported delivered or failed."""
        return self.sent - self.delivered - self.failed

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery reports for up to ``timeout`` seconds; returns how many were served."""
        return int(self._producer.poll(timeout))

    def flush(self, timeout: float | None = None) -> int:
        """Wait for outstanding deliveries (``None``: as long as it takes); returns messages still queued."""
        remaining = self._producer.flush(-1 if timeout is None else timeout)
        return int(remaining)

    def raise_if_failed(self) -> None:
        """Raise :class:`~pipeline.errors.DeliveryFailed` when any delivery failed so far."""
        if self.first_error is not None:
            first = self.first_error
            raise DeliveryFailed(
                f"{self.failed} event(s) not delivered; first: {first.event_id!r} to "
                f"{first.topic or '?'}: {first.error}"
            )

    def close(self, timeout: float | None = 30.0) -> int:
        """Flush (up to ``timeout`` seconds) and refuse further sends; returns messages still queued."""
        if self._closed:
            return 0
        remaining = self.flush(timeout)
        self._closed = True
        self._producer = _ClosedProducer()  # let librdkafka's threads and sockets go
        if remaining:
            log.warning("closing with %d event(s) not delivered", remaining)
        return remaining

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        remaining = self.close(timeout=None if exc_type is None else 30.0)
        if exc_type is not None:
            return  # do not hide the original error
        if remaining:
            raise KafkaUnavailable(f"{remaining} event(s) still queued after flushing")
        self.raise_if_failed()
