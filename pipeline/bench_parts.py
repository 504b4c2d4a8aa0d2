"""The steps of ``o2o bench`` that run in a step process (see :mod:`pipeline.bench_steps`).

Preparing the stack, producing, the bare passthrough, counting rows, and the
per-part measurements: each stage alone, the identity graph and journeys
logic in process, and the HTTP collector. Each part gets its own topic prefix
so it never mixes with the end-to-end run. Every function here returns
picklable values.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import orjson

from pipeline.config import Settings
from pipeline.kafka import topics
from pipeline.kafka.admin import ensure_topics
from pipeline.kafka.reset import delete_prefixed
from pipeline.producer import send_events
from pipeline.runtime.stages import settings_env
from pipeline.simulate import simulate
from pipeline.stack.kafka_net import free_port


def prepare(settings: Settings, reset: bool = True) -> str:
    """Use the configured broker if it answers, else start the local stack; wipe and init the prefix.

    Returns a line saying which broker is used.
    """
    from pipeline.clickhouse.client import connect
    from pipeline.clickhouse.migrations import apply_migrations
    from pipeline.stack.kafka_net import topic_count
    from pipeline.stack.local_kafka import LocalKafka

    if topic_count(settings.bootstrap_servers, timeout=5.0) is not None:
        where = f"the running broker at {settings.bootstrap_servers}"
    else:
        status = LocalKafka(settings).up()
        where = f"the local stack's Kafka {status.version} at {status.bootstrap}"
    if reset:
        delete_prefixed(settings)
    ensure_topics(settings)
    with connect(settings) as ch:
        if reset:
            ch.command(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
        apply_migrations(ch)
    return where


def hold_merges(settings: Settings, *tables: str) -> None:
    """Keep ClickHouse from merging parts of ``tables`` (call while no sink holds the chDB folder).

    A background merge of a ReplacingMergeTree keeps only the newest version
    of a row; without merges the storage table keeps every insert, so the
    first time a row was stored can still be read.
    """
    from pipeline.clickhouse.client import connect

    with connect(settings) as ch:
        for table in tables:
            setting = "max_bytes_to_merge_at_max_space_in_pool = 1"
            ch.command(ch.sql(f"ALTER TABLE {{db}}.{table} MODIFY SETTING {setting}"))


def produce(settings: Settings, events: int, seed: int) -> tuple[int, float]:
    """Simulate about ``events`` events and produce them to the raw topics: (count, seconds)."""
    from pipeline.simulate import count_estimate

    per_customer = max(1.0, count_estimate(1000, 30) / 1000)
    customers = math.ceil(events / per_customer * 1.2)
    start = time.monotonic()
    n = send_events(settings, itertools.islice(simulate(customers, 30, seed), events))
    return n, time.monotonic() - start


def passthrough(settings: Settings, expected: int) -> tuple[int, float, float]:
    """Bare confluent-kafka: consume the raw topics, produce every message again, one by one.

    Returns (messages, seconds in all, seconds from the first message on): the
    second figure leaves the consumer group's start-up out, like the
    pipeline's steady state.
    """
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    from pipeline.kafka.admin import admin_client
    from pipeline.kafka.clients import DeliveryTracker, make_consumer, make_producer
    from pipeline.kafka.clients import produce as send

    out_topic = settings.topic("passthrough")
    admin = admin_client(settings)
    for future in admin.create_topics([NewTopic(out_topic, settings.partitions, 1)]).values():
        future.result()
    consumer = make_consumer(settings, settings.group("passthrough"))
    delivery = DeliveryTracker()
    producer = make_producer(settings, on_delivery=delivery)
    consumer.subscribe(topics.raw_topics(settings))
    seen = 0
    start = time.monotonic()
    first: float | None = None
    while seen < expected:
        for message in consumer.consume(5000, timeout=0.5):
            if message.error() is None:
                if first is None:
                    first = time.monotonic()
                send(producer, out_topic, message.value() or b"", message.key())
                seen += 1
        producer.poll(0)
    producer.flush()
    delivery.raise_if_failed()
    end = time.monotonic()
    consumer.close()
    return seen, end - start, end - (first if first is not None else start)


def count_rows(settings: Settings) -> dict[str, int]:
    """Rows in each storage table of the run's database (opens the chDB folder; nothing else holds it)."""
    from pipeline.clickhouse.query_server import query_any

    db = settings.clickhouse_database
    counts = {}
    for table in ("events_store", "sessions_store", "conversions_store", "attribution_store"):
        _cols, rows = query_any(settings, f"SELECT count() FROM {db}.{table}")
        counts[table] = int(rows[0][0])
    return counts


def part_settings(settings: Settings, name: str) -> Settings:
    """Settings of one measured part: its own prefix and groups."""
    prefix = f"bench-{name}."
    return settings.model_copy(update={"topic_prefix": prefix, "consumer_group_prefix": prefix})


def events_for(n: int, seed: int) -> Iterator[dict[str, Any]]:
    """``n`` simulated events (about 37 per customer)."""
    return itertools.islice(simulate(n // 30 + 10, 30, seed), n)


def ingest_rate(settings: Settings, n: int, seed: int) -> tuple[int, float]:
    """Events/s of the ingest stage alone, draining ``n`` raw events (start-up included)."""
    part = part_settings(settings, "ingest")
    delete_prefixed(part)
    ensure_topics(part)
    sent = send_events(part, events_for(n, seed))
    start = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--log-level", "WARNING", "run", "ingest", "--drain"],
        env=settings_env(part),
        check=True,
    )
    seconds = time.monotonic() - start
    delete_prefixed(part)
    return sent, seconds


STAGE_INPUTS = {"identity": topics.VALID, "journeys": topics.IDENTIFIED, "attribution": topics.JOURNEYS}


def copy_topic(source: Settings, target: Settings | None, name: str) -> list[bytes]:
    """Read topic ``name`` of ``source``'s prefix from the start; copy it to ``target``'s, if given.

    Partition by partition; returns the message values (batch envelopes), for in-process use.
    """
    from confluent_kafka import TopicPartition

    from pipeline.kafka.admin import end_offsets
    from pipeline.kafka.clients import DeliveryTracker, make_consumer, make_producer
    from pipeline.kafka.clients import produce as send

    ends = {p: end for (_t, p), end in end_offsets(source, [source.topic(name)]).items() if end > 0}
    consumer = make_consumer(source, source.group("bench-copy"), **{"enable.auto.commit": False})
    consumer.assign([TopicPartition(source.topic(name), p, 0) for p in ends])
    delivery = DeliveryTracker()
    producer = make_producer(target, on_delivery=delivery) if target is not None else None
    values: list[bytes] = []
    left = dict(ends)
    while left:
        for message in consumer.consume(5000, timeout=1.0):
            if message.error() is not None:
                continue
            partition = int(message.partition() or 0)
            value = message.value() or b""
            if producer is not None and target is not None:
                send(producer, target.topic(name), value, message.key(), partition=partition)
            values.append(value)
            if int(message.offset() or 0) + 1 >= ends[partition]:
                left.pop(partition, None)
        if producer is not None:
            producer.poll(0)
    if producer is not None:
        producer.flush()
    delivery.raise_if_failed()
    consumer.close()
    return values


def stage_rate(base: Settings, source: Settings, stage: str) -> tuple[int, float]:
    """(records, seconds) of one faust stage alone, draining a copy of its input.

    The input is what the end-to-end run under ``source`` left in the stage's
    input topic; the stage runs in its own process, start-up included.
    """
    from pipeline.kafka.envelopes import unpack

    part = part_settings(base, stage)
    delete_prefixed(part)
    ensure_topics(part)
    values = copy_topic(source, part, STAGE_INPUTS[stage])
    start = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--log-level", "WARNING", "run", stage, "--drain"],
        env=settings_env(part),
        check=True,
    )
    seconds = time.monotonic() - start
    delete_prefixed(part)
    return sum(len(unpack(v)) for v in values), seconds


def journeys_state_size(settings: Settings) -> tuple[float, int, float]:
    """The journeys logic alone, in this process: (events/s, peak persons held, bytes per person).

    Its input is what the end-to-end run under ``settings`` left in the
    identified-events topic. State size is the serialised (changelog) size
    of the held persons, taken every 2,000 events; the figure is its mean per
    held person at the peak.
    """
    from pipeline.journeys.stage import JourneysHandler
    from pipeline.kafka.envelopes import unpack

    values = copy_topic(settings, None, STAGE_INPUTS["journeys"])
    handler = JourneysHandler(settings)
    tables: dict[str, dict[str, Any]] = {"journeys_state": {}, "journeys_watermarks": {}}
    handler.bind(tables, partitions=settings.partitions)
    records = [record for value in values for record in unpack(value)]
    peak_persons, peak_bytes, seconds = 0, 0, 0.0
    for i in range(0, len(records), 2000):
        start = time.monotonic()
        handler.process(records[i : i + 2000])
        seconds += time.monotonic() - start
        state = tables["journeys_state"]
        if len(state) > peak_persons:
            peak_persons = len(state)
            peak_bytes = sum(len(orjson.dumps(v)) for v in state.values())
    start = time.monotonic()
    handler.flush()
    seconds += time.monotonic() - start
    return len(records) / max(seconds, 1e-9), peak_persons, peak_bytes / max(peak_persons, 1)


def identity_state_size(settings: Settings) -> tuple[float, int, float]:
    """The identity graph alone, in process: (events/s, identifiers, MiB per million identifiers).

    Its input is the end-to-end run's validated events. Size is the serialised
    (changelog) size of both identity tables after all events, scaled to a
    million identifiers.
    """
    from pipeline.identity.graph import IdentityGraph
    from pipeline.kafka.envelopes import unpack

    values = copy_topic(settings, None, STAGE_INPUTS["identity"])
    ids: dict[str, Any] = {}
    persons: dict[str, Any] = {}
    graph = IdentityGraph(ids, persons)
    events = sorted(
        (r for v in values for r in unpack(v) if "occurred_at" in r),
        key=lambda e: (e["occurred_at"], e["event_id"]),
    )
    start = time.monotonic()
    for event in events:
        graph.resolve(event)  # type: ignore[arg-type]
    seconds = time.monotonic() - start
    size = sum(len(k) + len(orjson.dumps(v)) for table in (ids, persons) for k, v in table.items())
    return len(events) / max(seconds, 1e-9), len(ids), size / max(len(ids), 1) * 1e6 / 2**20


COLLECTOR_KEYS = {"web": "bench-web", "app": "bench-app", "geofence": "bench-geo", "pos": "bench-pos"}
UNLIMITED = {
    "O2O_COLLECTOR_RATE_PER_ADDRESS": "0",
    "O2O_COLLECTOR_RATE_PER_KEY": "0",
    "O2O_COLLECTOR_CONCURRENCY_PER_ADDRESS": "0",
    "O2O_COLLECTOR_CONCURRENCY_PER_KEY": "0",
}
"""The collector's request limits off: a throughput client posts from one address, like a proxy."""


@contextmanager
def running_collector(
    part: Settings, env: Mapping[str, str] = {}
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`o2o collector` on a free loopback port with :data:`COLLECTOR_KEYS`: (base URL, process).

    Its part's topics are made first and deleted afterwards.
    """
    import httpx

    delete_prefixed(part)
    ensure_topics(part)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "--log-level", "WARNING", "collector", "--port", str(port)],
        env={**settings_env(part), **env,
             "O2O_COLLECTOR_WRITE_KEYS": ",".join(f"{s}={k}" for s, k in COLLECTOR_KEYS.items())},
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the collector did not start")
            time.sleep(0.2)
        yield base, server
    finally:
        server.terminate()
        server.wait(30)
        delete_prefixed(part)


def collector_rate(settings: Settings, n: int, seed: int, batch: int = 100) -> tuple[int, int, float]:
    """(requests, events, seconds) posting ``n`` events in batches of ``batch`` to a local collector."""
    with running_collector(part_settings(settings, "collector"), UNLIMITED) as (base, _server):
        by_source: dict[str, list[dict[str, Any]]] = {}
        for event in events_for(n, seed):
            by_source.setdefault(event["source"], []).append(event)
        bodies = [
            (source, orjson.dumps({"batch": events[i : i + batch]}))
            for source, events in by_source.items()
            for i in range(0, len(events), batch)
        ]
        start = time.monotonic()
        accepted = asyncio.run(_post_all(base, bodies, COLLECTOR_KEYS))
        seconds = time.monotonic() - start
    return len(bodies), accepted, seconds


async def _post_all(
    base: str, bodies: list[tuple[str, bytes]], keys: dict[str, str], clients: int = 8
) -> int:
    import httpx

    queue = list(reversed(bodies))
    accepted = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal accepted
        while queue:
            source, body = queue.pop()
            response = await client.post(
                f"{base}/v1/events",
                content=body,
                auth=(keys[source], ""),
                headers={"content-type": "application/json"},
            )
            response.raise_for_status()
            accepted += int(response.json()["accepted"])

    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    return accepted
