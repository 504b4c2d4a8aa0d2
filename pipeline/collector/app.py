"""The collector's ASGI app: HTTP in, raw topics out, answered once Kafka acknowledged.

* ``POST /v1/events``: contract v1 events (one object, ``{"batch": [...]}`` or an
  array) -> ``{"accepted": n, "rejected": [{"index", "reason", "detail", "event_id"}]}``,
  200 when at least one was accepted, else 400. An event whose ``source`` is
  not its write key's source is rejected with reason ``forbidden_source``.
* Segment tracking API (``/v1/track``, ``identify``, ``page``, ``screen``, ``alias``,
  ``group``, ``batch``, ``import`` and the short forms ``/v1/t`` ...), mapped by
  :mod:`pipeline.collector.segment`: always 200 ``{"success": true, "accepted",
  "rejected"}`` once authenticated and parsed. Segment clients retry other
  statuses or drop the whole batch, so per-message rejections are only in the
  body, the dead-letter topic and the metrics.
* ``GET /healthz`` (``ok`` when Kafka answers, else 503), ``GET /metrics`` (Prometheus).

Write key: HTTP Basic user name (Segment's scheme), else ``writeKey`` in the
body; it maps to the source of its events; unknown or missing: 401. Bodies may
be gzip; over ``max_body_bytes`` (also decompressed; 16 MiB by default): 413; bad JSON: 400.
Events are validated by ingest's :class:`EventNormalizer`; valid ones go as raw
JSON to ``raw.<source>`` keyed by :func:`pipeline.producer.raw_key`, rejected
ones to the dead-letter topic with ingest's headers (``o2o.topic`` =
``collector<route>``). If Kafka fails a message: 503, the tracker retries, and
ingest drops duplicates by ``event_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import Producer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from pipeline.collector.http import HTTPProblem, basic_user, gunzip, json_response
from pipeline.collector.kafka_sink import EventSink, KafkaSink
from pipeline.collector.limits import Admission, RequestLimits
from pipeline.collector.metrics import CollectorMetrics
from pipeline.collector.segment import batch_messages, map_message
from pipeline.config import Settings
from pipeline.errors import ConfigError, DeliveryFailed, InvalidEvent
from pipeline.ingest.normalize import EventNormalizer, redact_key, redact_pii
from pipeline.ingest.schemas import default_registry
from pipeline.kafka import topics
from pipeline.model.contract import SOURCES
from pipeline.producer import raw_key, raw_topic_for

log = logging.getLogger(__name__)

EVENTS_ROUTE = "/v1/events"
SEGMENT_ROUTES: dict[str, str | None] = {
    **{f"/v1/{call}": call for call in ("track", "identify", "page", "screen", "alias", "group")},
    **{f"/v1/{call[0]}": call for call in ("track", "identify", "page", "screen", "alias", "group")},
    "/v1/batch": None,
    "/v1/import": None,
    "/v1/b": None,
}
OFFLOAD_ITEMS = 500  # bigger batches are validated in a worker thread, not on the event loop
# Largest body by default, also once decompressed: every byte of a gzip body is inflated
# before it can be refused, so this bounds what one request (a valid write key is public
# in a browser) makes the collector do. Segment's own limit is 500 KB per batch.
DEFAULT_MAX_BODY_BYTES = 16 * 2**20
# gzip bodies from this size on are inflated in a worker thread (zlib lets go of the GIL),
# so a bomb being inflated does not hold up the requests of other clients
OFFLOAD_GZIP_BYTES = 16 * 1024
REFUSALS = frozenset({408, 413, 429})  # statuses of a request refused by a limit, counted by limit


@dataclass
class Item:
    """One event of a request: where it was, what was sent, what it became."""

    index: int
    original: Any  # the message as received (dead-letter payload)
    event: Any = None  # the contract event to validate and produce
    error: InvalidEvent | None = None

    def event_id(self) -> str | None:
        """The event id (Segment: messageId), when the item has a usable one."""
        docs = [d for d in (self.event, self.original) if isinstance(d, dict)]
        found = [d[f] for d in docs for f in ("event_id", "messageId") if isinstance(d.get(f), str)]
        return str(found[0]) if found else None


class Collector:
    """Request handling, independent of the ASGI plumbing (see :func:`create_app`)."""

    def __init__(
        self,
        settings: Settings,
        write_keys: Mapping[str, str],
        sink: EventSink,
        max_body_bytes: int,
        dead_letters: bool = True,
    ) -> None:
        self.settings = settings
        self.write_keys = dict(write_keys)
        self.sink = sink
        self.max_body_bytes = max_body_bytes
        self.dead_letters = dead_letters
        self.dlq_topic = settings.topic(topics.DLQ)
        self.metrics = CollectorMetrics()
        self.normalizer = EventNormalizer.from_settings(settings, default_registry())
        self.limits = RequestLimits.from_settings(settings)

    # -- routing -------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        """Every route of the collector, each counted in the request metrics."""
        routes = [
            Route(EVENTS_ROUTE, self._counted(EVENTS_ROUTE, self.events), methods=["POST"]),
            Route("/healthz", self._counted("/healthz", self.healthz), methods=["GET"]),
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
        ]
        for path, call in SEGMENT_ROUTES.items():
            handler = functools.partial(self.segment, route=path, call=call)
            routes.append(Route(path, self._counted(path, handler), methods=["POST"]))
        return routes

    def _counted(
        self, route: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            admission = request.state.admission = self.limits.admission()
            try:
                if route != "/healthz":
                    address = request.client.host if request.client else "unknown"
                    admission.admit("address", address, time.monotonic())
                response = await handler(request)
            except HTTPProblem as problem:
                response = problem.response()
                if problem.status in REFUSALS:
                    self.metrics.refused.labels(problem.error).inc()
            except Exception:
                self.metrics.requests.labels(route, "500").inc()
                raise
            finally:
                admission.release()
            self.metrics.requests.labels(route, str(response.status_code)).inc()
            return response

        return endpoint

    # -- endpoints -----------------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        """``POST /v1/events``: contract v1 events."""
        source, doc = await self._authenticated_body(request)
        if isinstance(doc, list):
            docs = doc
        elif isinstance(doc, dict) and "batch" in doc:
            if not isinstance(doc["batch"], list):
                raise HTTPProblem(400, "schema_violation", "batch: expected an array of events")
            docs = doc["batch"]
        elif isinstance(doc, dict):
            docs = [{k: v for k, v in doc.items() if k != "writeKey"}]
        else:
            raise HTTPProblem(400, "schema_violation", "expected an event, an array or {'batch': [...]}")
        if not docs:
            raise HTTPProblem(400, "empty_batch", "no events in the request")
        self._check_count(len(docs))
        items = []
        for index, event in enumerate(docs):
            item = Item(index, event, event)
            claimed = event.get("source") if isinstance(event, dict) else None
            if isinstance(claimed, str) and claimed != source:
                item.error = InvalidEvent(
                    "forbidden_source",
                    f"$.source: this write key sends {source} events, not {claimed[:16]!r}",
                )
            items.append(item)
        accepted, rejected = await self._deliver(EVENTS_ROUTE, items)
        return json_response(200 if accepted else 400, {"accepted": accepted, "rejected": rejected})

    async def segment(self, request: Request, route: str, call: str | None) -> Response:
        """A Segment tracking API call (``call`` None: a batch)."""
        source, doc = await self._authenticated_body(request)
        if call is None:
            try:
                messages = batch_messages(doc)
            except InvalidEvent as exc:
                raise HTTPProblem(400, exc.reason, exc.detail) from None
        elif isinstance(doc, dict):
            messages = [{k: v for k, v in doc.items() if k != "writeKey"}]
        else:
            raise HTTPProblem(400, "schema_violation", f"{route}: expected a JSON object")
        self._check_count(len(messages))
        received = datetime.now(UTC).isoformat(timespec="milliseconds")
        items = [Item(index, message) for index, message in enumerate(messages)]
        for item in items:
            try:
                item.event = map_message(item.original, source, received, call)
            except InvalidEvent as exc:
                item.error = exc
        accepted, rejected = await self._deliver(route, items)
        return json_response(200, {"success": True, "accepted": accepted, "rejected": rejected})

    async def healthz(self, _request: Request) -> Response:
        """``GET /healthz``: 200 ``ok`` when Kafka answers."""
        if await self.sink.healthy():
            return PlainTextResponse("ok")
        return PlainTextResponse("kafka unavailable", 503)

    async def metrics_endpoint(self, _request: Request) -> Response:
        """``GET /metrics``: Prometheus text format."""
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- request pieces ------------------------------------------------------------------------

    async def _authenticated_body(self, request: Request) -> tuple[str, Any]:
        """(source of the write key, parsed JSON body).

        A key in the header is checked, and admitted against its limits, before
        the body is read; without one, at most ``collector_body_key_max_bytes``
        are read and parsed to find the key in the body.
        """
        admission: Admission = request.state.admission
        header = request.headers.get("authorization")
        key = basic_user(header) if header else None
        source = self._source_of(key)
        if header and source is None:
            raise HTTPProblem(401, "unauthorized", "unknown write key")
        if key is not None and source is not None:
            admission.admit("key", key, time.monotonic())
            limit = self.max_body_bytes
        else:
            limit = min(self.max_body_bytes, self.settings.collector_body_key_max_bytes)
        body = await self._read_body(request, limit)
        try:
            doc = await _maybe_offloaded(len(body) > 1_000_000, orjson.loads, body)
        except orjson.JSONDecodeError as exc:
            raise HTTPProblem(400, "malformed_json", str(exc)) from None
        if source is None:
            found = doc.get("writeKey") if isinstance(doc, dict) else None
            key = found if isinstance(found, str) else None
            source = self._source_of(key)
            if key is None or source is None:
                raise HTTPProblem(401, "unauthorized", "missing or unknown write key")
            admission.admit("key", key, time.monotonic())
        return source, doc

    def _check_count(self, count: int) -> None:
        limit = self.settings.collector_max_batch_events
        if count > limit:
            raise HTTPProblem(413, "too_many_events", f"{count} events in one request, limit {limit}")

    def _source_of(self, key: str | None) -> str | None:
        if not key:
            return None
        found = None
        for known, source in self.write_keys.items():  # constant time per key
            if hmac.compare_digest(known.encode(), key.encode()):
                found = source
        return found

    async def _read_body(self, request: Request, limit: int) -> bytes:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise HTTPProblem(413, "too_large", f"body of {length} bytes, limit {limit}")
        chunks: list[bytes] = []

        async def receive() -> None:
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPProblem(413, "too_large", f"body over the limit of {limit} bytes")
                chunks.append(chunk)

        timeout = self.settings.collector_read_timeout_seconds
        try:
            await asyncio.wait_for(receive(), timeout)
        except TimeoutError:
            raise HTTPProblem(408, "slow_client", f"the body did not arrive within {timeout:g} s") from None
        body = b"".join(chunks)
        encoding = request.headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            inflated: bytes = await _maybe_offloaded(len(body) >= OFFLOAD_GZIP_BYTES, gunzip, body, limit)
            return inflated
        if encoding not in ("", "identity"):
            raise HTTPProblem(415, "unsupported_encoding", f"content-encoding {encoding[:32]!r}")
        return body

    # -- validation and delivery ---------------------------------------------------------------

    async def _deliver(self, route: str, items: list[Item]) -> tuple[int, list[dict[str, Any]]]:
        """Validate, produce valid events and dead letters, and wait for every acknowledgement."""
        now = int(time.time() * 1000)
        await _maybe_offloaded(len(items) > OFFLOAD_ITEMS, self._validate, items, now)
        sends: list[Awaitable[float]] = []
        rejected: list[dict[str, Any]] = []
        sources: list[str] = []
        for item in items:
            if item.error is None:
                sources.append(item.event["source"])
                sends.append(
                    self.sink.send(
                        raw_topic_for(self.settings, item.event),
                        orjson.dumps(item.event),
                        raw_key(item.event),
                    )
                )
                continue
            error = item.error
            entry: dict[str, Any] = {"index": item.index, "reason": error.reason, "detail": error.detail}
            event_id = item.event_id()
            if event_id is not None:
                entry["event_id"] = event_id
            rejected.append(entry)
            log.debug("%s: event %d rejected: %s", route, item.index, item.error)
            if self.dead_letters:
                sends.append(self._dead_letter(route, item, now))
        results = await asyncio.gather(*sends, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        for result in results:
            if isinstance(result, float):
                self.metrics.delivery.observe(result)
        if failures:
            log.warning(
                "%s: %d of %d messages not delivered: %s", route, len(failures), len(sends), failures[0]
            )
            if not all(isinstance(f, DeliveryFailed) for f in failures):
                raise failures[0]
            raise HTTPProblem(503, "kafka_unavailable", str(failures[0]))
        for source in sources:
            self.metrics.accepted.labels(source).inc()
        for entry in rejected:
            self.metrics.rejected.labels(entry["reason"]).inc()
        return len(sources), rejected

    def _validate(self, items: Sequence[Item], now: int) -> None:
        for item in items:
            if item.error is not None:
                continue
            try:
                self.normalizer.normalise(orjson.dumps(item.event), now)
            except InvalidEvent as exc:
                item.error = exc
            except TypeError as exc:  # nested deeper than JSON tooling handles
                item.error = InvalidEvent("schema_violation", f"$: {exc}")

    def _dead_letter(self, route: str, item: Item, now: int) -> Awaitable[float]:
        assert item.error is not None
        salt, region = self.settings.salt, self.settings.phone_region
        try:
            payload = redact_pii(orjson.dumps(item.original), salt, region)  # no raw PII past the edge
        except TypeError:
            payload = b'"(nested too deeply to keep)"'

        # offset: a hash of the payload, so the dead letter of a retried request collapses into one row
        offset = int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest(), "big") & (2**63 - 1)
        headers = [
            ("o2o.reason", item.error.reason.encode()),
            ("o2o.detail", item.error.detail.encode("utf-8", "replace")[:2000]),
            ("o2o.topic", f"collector{route}".encode()),
            ("o2o.partition", b"0"),
            ("o2o.offset", str(offset).encode()),
            ("o2o.received_at", str(now).encode()),
        ]
        key = raw_key(item.original)
        return self.sink.send(self.dlq_topic, payload, key and redact_key(key, salt, region), headers)


async def _maybe_offloaded(offload: bool, func: Callable[..., Any], *args: Any) -> Any:
    if offload:
        return await asyncio.to_thread(func, *args)
    return func(*args)


def create_app(
    settings: Settings,
    write_keys: dict[str, str],
    producer: EventSink | Producer | None = None,
    *,
    max_body_bytes: int | None = None,
    dead_letters: bool = True,
    cors_origins: Sequence[str] | None = None,
) -> Starlette:
    """The collector's ASGI app.

    ``write_keys`` maps write key -> source. ``producer``: an :class:`EventSink`,
    a confluent-kafka ``Producer`` (wrapped in a :class:`KafkaSink`), or None
    for a new producer from ``settings``. The app starts the sink on start-up
    and flushes and closes it on shutdown. ``max_body_bytes`` defaults to
    :data:`DEFAULT_MAX_BODY_BYTES` (or ``settings.max_event_bytes`` if larger);
    ``dead_letters`` sends rejected events
    to the dead-letter topic; ``cors_origins`` (default: the setting
    ``collector_cors_origins``) may post from browsers.
    """
    if cors_origins is None:
        cors_origins = settings.collector_cors_origins
    for key, source in write_keys.items():
        if not key:
            raise ConfigError("collector: a write key cannot be empty")
        if source not in SOURCES:
            known = ", ".join(SOURCES)
            raise ConfigError(f"collector: write key for unknown source {source!r} (known: {known})")
    sink: EventSink
    if producer is None:
        sink = KafkaSink(settings)
    elif isinstance(producer, Producer):
        sink = KafkaSink(settings, producer)
    else:
        sink = producer
    collector = Collector(
        settings,
        write_keys,
        sink,
        max_body_bytes or max(DEFAULT_MAX_BODY_BYTES, settings.max_event_bytes),
        dead_letters,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await sink.start()
        sources = sorted(set(write_keys.values()))
        log.info("collector ready: %d write keys, sources %s", len(write_keys), sources)
        try:
            yield
        finally:
            log.info("collector stopping: flushing the producer")
            await sink.close()

    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
        )
    ]
    app = Starlette(
        routes=collector.routes(), middleware=middleware if cors_origins else [], lifespan=lifespan
    )
    app.state.collector = collector
    return app
