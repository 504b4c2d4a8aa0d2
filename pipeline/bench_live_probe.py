"""The measuring side of ``o2o bench --live``: sender, poller, and when to start and stop.

``o2o run all`` runs (not drain). Once every stage's consumer group is
stable and the sink's query server answers, a sender thread paces simulated
events at ``--rate`` through :class:`~pipeline.event_producer.EventProducer`,
each re-timed to ``occurred_at`` = the moment it is sent and given a fresh
``event_id``. A poller thread asks ClickHouse through the query path of
``o2o sql`` (the sink's query server) how many rows are stored, to know when
to stop; then it reads when each event, conversion and credit was first
stored (the storage tables' ``inserted_at``, merges held off so that first
versions stay). Latency = first stored - sent, both on this machine's clock.
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

from pipeline.config import Settings
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

PROGRESS_S = 0.5
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
        self.stored = (0, 0, 0)  # events stored, conversions stored, conversions credited
        self.query_errors = 0
        self.visible_at: dict[str, float] = {}  # event_id -> when its first row was stored (s)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start sending and polling."""
        self.send_start = time.time()
        for target in (self._send, self._watch):
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

    def _watch(self) -> None:
        """Count what is stored while sending (progress; when to stop), then read when each item was.

        Nothing is looked up item by item while the pipeline runs: a query
        runs in the sink's process and would slow what it measures. Every
        :data:`PROGRESS_S` one count of distinct ids per table (a row stored in
        two versions counts once); once sending ended and
        the counts reach what was sent (or ``bound`` seconds later), one
        query per table reads the ``inserted_at`` of every row.
        """
        while not self.stop.is_set():
            tick = time.monotonic()
            self.stored = self._counts()
            if self.send_end is not None:
                expected = (
                    len(self.sent),
                    sum(1 for s in self.sent if s[2]),
                    sum(1 for s in self.sent if s[3]),
                )
                caught_up = all(have >= want for have, want in zip(self.stored, expected, strict=True))
                if caught_up or time.time() > self.send_end + self.bound:
                    break
            time.sleep(max(0.0, PROGRESS_S - (time.monotonic() - tick)))
        self._collect()
        self.done.set()

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        from pipeline.clickhouse.query_server import query_any

        started = time.monotonic()
        try:
            return query_any(self.settings, sql)[1]
        except PipelineError as exc:
            self.query_errors += 1
            if self.query_errors > 20:
                raise
            log.warning("live bench: query failed (%s); trying again", exc)
            return []
        finally:
            self.query_s.append(time.monotonic() - started)

    def _counts(self) -> tuple[int, int, int]:
        rows = self._query(
            "SELECT (SELECT uniqExact(event_id) FROM {db}.events_store), "
            "(SELECT uniqExact(event_id) FROM {db}.conversions_store), "
            "(SELECT uniqExact(conversion_id) FROM {db}.attribution_store)"
        )
        return (int(rows[0][0]), int(rows[0][1]), int(rows[0][2])) if rows else self.stored

    def _collect(self) -> None:
        """Latency of every sent item from the first ``inserted_at`` of its rows."""
        first = "toUnixTimestamp64Milli(min(inserted_at))"
        events = dict(self._query(f"SELECT event_id, {first} FROM {{db}}.events_store GROUP BY event_id"))
        self.visible_at = {event_id: int(at) / 1000 for event_id, at in events.items()}
        conversions = {
            event_id: (conversion_id, at)
            for event_id, conversion_id, at in self._query(
                f"SELECT event_id, conversion_id, {first} FROM {{db}}.conversions_store "
                "GROUP BY event_id, conversion_id"
            )
        }
        credits = dict(
            self._query(f"SELECT conversion_id, {first} FROM {{db}}.attribution_store GROUP BY conversion_id")
        )
        for event_id, sent, conversion, credited in self.sent:
            self._record("events", event_id, sent, events.get(event_id))
            conversion_id, converted_at = conversions.get(event_id, ("", None))
            if conversion:
                self._record("conversions", event_id, sent, converted_at)
            if credited:
                # the attribution view shows credits once their conversion row is stored too
                at = credits.get(conversion_id)
                both = None if at is None or converted_at is None else max(at, converted_at)
                self._record("credits", event_id, sent, both)

    def _record(self, kind: str, event_id: str, sent: float, stored_ms: int | None) -> None:
        seen = self.kinds[kind]
        seen.expected.append(sent)
        latency = None if stored_ms is None else int(stored_ms) / 1000 - sent
        if latency is not None and latency <= self.bound:
            seen.latencies.append((sent, latency))
        else:
            seen.expired.append(sent)
            seen.missing.append(self.what.get(event_id, "?"))

    def join(self, timeout: float) -> None:
        """Wait for both threads (at most ``timeout`` seconds in all)."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def stage_lag(settings: Settings) -> dict[str, int]:
    """Messages each stage's consumer group has not committed yet, by stage."""
    from pipeline.kafka import topics
    from pipeline.kafka.admin import group_lag

    inputs = {
        "ingest": topics.raw_topics(settings),
        "identity": [settings.topic(topics.VALID)],
        "journeys": [settings.topic(topics.IDENTIFIED)],
        "attribution": [settings.topic(topics.JOURNEYS)],
        "sink": topics.row_topics(settings),
        "activation": [settings.topic(topics.IDENTIFIED)],
    }
    return {
        stage: group_lag(settings, settings.group(stage), inputs[stage])
        for stage in inputs
        if stage in settings.stages
    }


def groups_ready(settings: Settings, admin: Any) -> bool:
    """True when every stage's consumer group is stable with members and ClickHouse answers queries.

    ``admin`` is an AdminClient the caller keeps: the futures of a client that
    was garbage-collected never complete.
    """
    from confluent_kafka import ConsumerGroupState

    from pipeline.clickhouse.query_server import live_endpoint

    futures = admin.describe_consumer_groups(
        [settings.group(stage) for stage in settings.stages], request_timeout=5
    )
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
        self.lag_at_send_end: dict[str, int] | None = None  # messages not yet committed, by stage
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
        if probe.send_end is not None and self.lag_at_send_end is None:
            self.lag_at_send_end = stage_lag(self.settings)
        progress.update(
            task,
            total=len(probe.events),
            completed=len(probe.sent),
            info=f"sent {len(probe.sent):,}, stored {probe.stored[0]:,}",
        )
        return probe.done.is_set()
