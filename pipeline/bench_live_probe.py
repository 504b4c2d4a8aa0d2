"""The measuring side of ``o2o bench --live``: sender, poller, and when to start and stop.

``o2o run all`` runs (not drain). Once every stage's consumer group is
stable and the sink's query server answers, a sender thread paces simulated
events at ``--rate`` through :class:`~pipeline.event_producer.EventProducer`,
each re-timed to ``occurred_at`` = the moment it is sent and given a fresh
``event_id``. A poller thread asks ClickHouse through the query path of
``o2o sql`` (the sink's query server) every :data:`POLL_S` for the events,
conversions and credits it still waits for (:class:`~pipeline.bench_stats.Pending`)
and notes when it first saw each. Latency = first seen - sent, both on this
machine's clock.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.progress import Progress, TaskID

from pipeline.bench_stats import Pending
from pipeline.clickhouse.format import sql_string
from pipeline.config import STAGES, Settings
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

POLL_S = 0.2
MAX_CREDIT_IDS = 2000
READY_LIMIT_S = 180.0

#: (event, a conversion is expected, credits are expected)
LiveEvent = tuple[dict[str, Any], bool, bool]


def live_events(settings: Settings, count: int, seed: int) -> list[LiveEvent]:
    """``count`` simulated events that ingest accepts, with what each should become (a bench step).

    A conversion is expected for a conversion event with analytics consent;
    credits for one that also has marketing consent (a conversion without
    any touchpoint still gets none).
    """
    import itertools
    import math

    import orjson

    from pipeline.errors import InvalidEvent
    from pipeline.ingest.normalize import EventNormalizer
    from pipeline.model.contract import conversion_kind
    from pipeline.simulate import count_estimate, simulate

    normalizer = EventNormalizer.from_settings(settings)
    per_customer = max(1.0, count_estimate(1000, 30) / 1000)
    customers = math.ceil(count / per_customer * 1.2)
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    out: list[LiveEvent] = []
    for event in itertools.islice(simulate(customers, 30, seed), count):
        event = {**event, "occurred_at": now}
        event.pop("sent_at", None)
        try:
            normalizer.normalise(orjson.dumps(event), int(time.time() * 1000))
        except InvalidEvent:
            continue
        consent = event.get("consent") or {}
        kind = conversion_kind(event)  # type: ignore[arg-type]
        conversion = kind is not None and consent.get("analytics") is not False
        out.append((event, conversion, conversion and consent.get("marketing") is not False))
    return out


@dataclass
class Seen:
    """What the poller found for one kind: latencies by send time, and what it gave up on."""

    latencies: list[tuple[float, float]] = field(default_factory=list)  # (sent at, seconds)
    expected: list[float] = field(default_factory=list)  # send times of everything looked for
    expired: list[float] = field(default_factory=list)  # send times of what was given up
    missing: list[str] = field(default_factory=list)  # source/type of the events given up


class LiveProbe:
    """The sender and poller threads of a live run, and what they measured."""

    def __init__(self, settings: Settings, events: list[LiveEvent], rate: int, bound: float) -> None:
        self.settings = settings
        self.events = events
        self.rate = rate
        self.bound = bound
        self.sent: list[tuple[str, float, bool, bool]] = []  # event_id, sent at, conversion?, credits?
        self.what: dict[str, str] = {}  # event_id or conversion_id -> "source/type" of the event
        self.send_start = 0.0
        self.send_end: float | None = None
        self.done = threading.Event()
        self.stop = threading.Event()
        self.error: str | None = None
        self.kinds = {kind: Seen() for kind in ("events", "conversions", "credits")}
        self.query_s: list[float] = []
        self.query_errors = 0
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start sending and polling."""
        self.send_start = time.time()
        for target in (self._send, self._poll):
            thread = threading.Thread(target=self._guard(target), daemon=True, name=target.__name__)
            thread.start()
            self._threads.append(thread)

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception as exc:
                log.exception("live bench: %s failed", target.__name__)
                self.error = f"{target.__name__.strip('_')}: {type(exc).__name__}: {exc}"
                self.stop.set()

        return run

    def _send(self) -> None:
        from pipeline.event_producer import EventProducer

        with EventProducer(self.settings) as producer:
            start = time.monotonic()
            for i, (event, conversion, credits) in enumerate(self.events):
                due = start + i / self.rate
                while (delay := due - time.monotonic()) > 0:
                    producer.poll(min(delay, 0.005))
                if self.stop.is_set():
                    break
                now = time.time()
                event_id = str(uuid.uuid4())
                stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
                producer.send({**event, "event_id": event_id, "occurred_at": stamp})
                self.what[event_id] = f"{event.get('source')}/{event.get('type')}"
                self.sent.append((event_id, now, conversion, credits))
            self.send_end = time.time()

    def _poll(self) -> None:
        from pipeline.clickhouse.query_server import live_endpoint, query_any, query_endpoint

        endpoint = live_endpoint(self.settings)
        db = self.settings.clickhouse_database
        pending = {kind: Pending(self.bound) for kind in self.kinds}
        waiting_credits: dict[str, float] = {}  # event_id -> sent at, until its conversion is seen
        scanned = 0
        while not self.stop.is_set():
            tick = time.monotonic()
            while scanned < len(self.sent):
                event_id, sent, conversion, credits = self.sent[scanned]
                scanned += 1
                pending["events"].add(event_id, sent)
                self.kinds["events"].expected.append(sent)
                if conversion:
                    pending["conversions"].add(event_id, sent)
                    self.kinds["conversions"].expected.append(sent)
                if credits:
                    waiting_credits[event_id] = sent
                    self.kinds["credits"].expected.append(sent)
            now = time.time()
            for kind, items in pending.items():
                for item, sent in items.expire(now):
                    self._give_up(kind, item, sent)
            for event_id, sent in list(waiting_credits.items()):
                if now - sent > self.bound:
                    del waiting_credits[event_id]
                    self._give_up("credits", event_id, sent)
            sql = self._sql(db, pending, now)
            if sql is None:
                if self.send_end is not None and not waiting_credits and scanned == len(self.sent):
                    break
            else:
                started = time.monotonic()
                try:
                    if endpoint is not None:
                        _cols, rows = query_endpoint(endpoint, sql)
                    else:
                        _cols, rows = query_any(self.settings, sql)
                except PipelineError as exc:
                    self.query_errors += 1
                    if self.query_errors > 50:
                        raise
                    log.warning("live bench: query failed (%s); trying again", exc)
                    endpoint = live_endpoint(self.settings)
                    rows = []
                seen_at = time.time()
                self.query_s.append(time.monotonic() - started)
                self._take(rows, seen_at, pending, waiting_credits)
            time.sleep(max(0.0, POLL_S - (time.monotonic() - tick)))
        self.done.set()

    def _give_up(self, kind: str, item: str, sent: float) -> None:
        seen = self.kinds[kind]
        seen.expired.append(sent)
        seen.missing.append(self.what.get(item, "?"))

    def _take(
        self,
        rows: list[tuple[Any, ...]],
        seen_at: float,
        pending: dict[str, Pending],
        waiting_credits: dict[str, float],
    ) -> None:
        """Note the first sight of what the query returned; a seen conversion's credits are looked for."""
        for kind, first, second in rows:
            if kind == "e":
                sent = pending["events"].found(first)
                if sent is not None:
                    self.kinds["events"].latencies.append((sent, seen_at - sent))
            elif kind == "c":
                sent = pending["conversions"].found(first)
                if sent is not None:
                    self.kinds["conversions"].latencies.append((sent, seen_at - sent))
                credit_sent = waiting_credits.pop(first, None)
                if credit_sent is not None:
                    pending["credits"].add(second, credit_sent)
                    self.what[second] = self.what.get(first, "?")
            elif kind == "a":
                sent = pending["credits"].found(first)
                if sent is not None:
                    self.kinds["credits"].latencies.append((sent, seen_at - sent))

    @staticmethod
    def _sql(db: str, pending: dict[str, Pending], now: float) -> str | None:
        """One query for everything still looked for, or None when nothing is.

        Events and conversions are looked for in the storage tables behind the
        ``events`` and ``conversions`` views: a row there is in the view (the
        views only pick the newest version and map merged persons), and a
        time range on the storage table costs a fraction of one on the view.
        Credits are looked for in the ``attribution`` view itself (its
        version filter can hide credits), by the conversion ids already seen.
        """
        parts = []
        specs = {
            "events": ("'e', event_id, ''", f"{db}.events_store"),
            "conversions": ("'c', event_id, conversion_id", f"{db}.conversions_store"),
        }
        for kind, (columns, table) in specs.items():
            since, ids = pending[kind].query(now)
            conditions = []
            if since is not None:
                conditions.append(
                    f"occurred_at >= fromUnixTimestamp64Milli(toInt64({int(since * 1000) - 1000}))"
                )
            if ids:
                conditions.append(f"event_id IN ({', '.join(sql_string(i) for i in ids)})")
            if conditions:
                parts.append(f"SELECT {columns} FROM {table} WHERE {' OR '.join(conditions)}")
        credits = list(pending["credits"].items)[:MAX_CREDIT_IDS]
        if credits:
            listed = ", ".join(sql_string(i) for i in credits)
            where = f"conversion_id IN ({listed})"
            parts.append(f"SELECT DISTINCT 'a', conversion_id, '' FROM {db}.attribution WHERE {where}")
        return " UNION ALL ".join(parts) if parts else None

    def join(self, timeout: float) -> None:
        """Wait for both threads (at most ``timeout`` seconds in all)."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def groups_ready(settings: Settings, admin: Any) -> bool:
    """True when every stage's consumer group is stable with members and ClickHouse answers queries.

    ``admin`` is an AdminClient the caller keeps: the futures of a client that
    was garbage-collected never complete.
    """
    from confluent_kafka import ConsumerGroupState

    from pipeline.clickhouse.query_server import live_endpoint

    futures = admin.describe_consumer_groups([settings.group(stage) for stage in STAGES], request_timeout=5)
    for future in futures.values():
        try:
            description = future.result(timeout=10)
        except Exception:
            return False
        if description.state != ConsumerGroupState.STABLE or not description.members:
            return False
    return not settings.embedded_clickhouse or live_endpoint(settings) is not None


class LiveControl:
    """Drives a live run from the pipeline watcher's ticks: wait until ready, send, stop when done."""

    def __init__(self, settings: Settings, probe: LiveProbe, ready_limit: float) -> None:
        self.settings = settings
        self.probe = probe
        self.ready_limit = ready_limit
        self.ready_at: float | None = None
        self._last_check = -1.0
        from pipeline.kafka.admin import admin_client

        self._admin = admin_client(settings)

    def __call__(self, elapsed: float, _offsets: object, progress: Progress, task: TaskID) -> bool:
        """One tick: returns True once the run is over (the pipeline is then stopped)."""
        probe = self.probe
        if probe.error is not None:
            raise PipelineError(f"live bench {probe.error}")
        if self.ready_at is None:
            if elapsed > self.ready_limit:
                raise PipelineError(f"the pipeline was not ready within {self.ready_limit:.0f} s")
            if elapsed - self._last_check >= 1.0:
                self._last_check = elapsed
                if groups_ready(self.settings, self._admin):
                    self.ready_at = elapsed
                    probe.start()
            progress.update(task, info="waiting for every stage's group and the query server")
            return False
        seen = probe.kinds["events"].latencies
        progress.update(
            task,
            total=len(probe.events),
            completed=len(probe.sent),
            info=f"sent {len(probe.sent):,}, seen {len(seen):,}",
        )
        return probe.done.is_set()
