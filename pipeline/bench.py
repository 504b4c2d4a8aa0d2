"""``o2o bench``: end-to-end throughput and memory, against a bare confluent-kafka passthrough.

Both runs read the same simulated events from the same broker in the same
invocation, so the ratio between them says what the pipeline's work costs on
this machine. Timings are printed, never asserted in tests.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import dataclass

import click
import psutil

from pipeline.cli.common import console, handle_errors, settings_of
from pipeline.config import Settings
from pipeline.kafka.clients import DeliveryTracker, make_consumer, make_producer, produce


@dataclass
class MemorySampler:
    """Samples the summed RSS of this process's children (the pipeline's stages); keeps the peak."""

    peak_bytes: int = 0
    _stop: bool = False

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop:
            total = 0
            for child in me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    continue
            self.peak_bytes = max(self.peak_bytes, total)
            time.sleep(0.2)

    def __enter__(self) -> MemorySampler:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop = True
        self._thread.join()


def passthrough(settings: Settings, topics: list[str], expected: int) -> float:
    """Bare confluent-kafka: consume ``expected`` messages, produce each again; returns seconds."""
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    from pipeline.kafka.admin import admin_client

    out_topic = settings.topic("passthrough")
    admin = admin_client(settings)
    for future in admin.create_topics([NewTopic(out_topic, settings.partitions, 1)]).values():
        future.result()
    consumer = make_consumer(settings, settings.group("passthrough"))
    delivery = DeliveryTracker()
    producer = make_producer(settings, on_delivery=delivery)
    consumer.subscribe(topics)
    seen = 0
    start = time.monotonic()
    while seen < expected:
        for message in consumer.consume(5000, timeout=0.5):
            if message.error() is None:
                produce(producer, out_topic, message.value() or b"", message.key())
                seen += 1
        producer.poll(0)
    producer.flush()
    delivery.raise_if_failed()
    seconds = time.monotonic() - start
    consumer.close()
    return seconds


@click.command()
@click.option(
    "--events", type=click.IntRange(1000), default=100_000, show_default=True, help="Events to simulate."
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.pass_context
@handle_errors
def bench(ctx: click.Context, events: int, seed: int) -> None:
    """Measure end-to-end events/s into ClickHouse, peak memory, and the bare passthrough rate.

    Uses its own topic prefix and ClickHouse database (`bench.`, `bench`), wiped first.
    """
    from pipeline.bench_parts import (
        collector_rate,
        identity_state_size,
        ingest_rate,
        journeys_state_size,
        stage_rate,
    )
    from pipeline.cli.demo import prepare, run_drained
    from pipeline.kafka.admin import ensure_topics
    from pipeline.kafka.topics import raw_topics
    from pipeline.producer import send_events
    from pipeline.simulate import count_estimate, simulate

    base = settings_of(ctx)
    settings = base.model_copy(
        update={"topic_prefix": "bench.", "consumer_group_prefix": "bench.", "clickhouse_database": "bench"}
    )
    prepare(settings, reset=True)
    ensure_topics(settings)
    per_customer = max(1.0, count_estimate(1000, 30) / 1000)
    customers = math.ceil(events / per_customer * 1.2)
    stream = itertools.islice(simulate(customers, 30, seed), events)
    t0 = time.monotonic()
    n = send_events(settings, stream)
    produce_s = time.monotonic() - t0
    console.print(f"produced {n} events in {produce_s:.1f} s")

    pass_s = passthrough(settings, raw_topics(settings), n)
    with MemorySampler() as memory:
        pipe_s = run_drained(settings, n)
    written = _count_rows(settings)
    pipe_rate, pass_rate = n / pipe_s, n / pass_s
    console.print("measuring each stage alone and the HTTP collector ...")
    ingest_n, ingest_s = ingest_rate(base, n, seed)
    alone = {stage: stage_rate(base, settings, stage) for stage in ("identity", "journeys", "attribution")}
    logic_rate, held, per_person = journeys_state_size(settings, alone["journeys"][2])
    graph_rate, identifiers, per_million = identity_state_size(alone["identity"][2])
    requests, accepted, collector_s = collector_rate(base, min(n, 50_000), seed)
    rows = [
        ("events", f"{n:,}"),
        ("rows written to ClickHouse", f"{written:,}"),
        ("producer (simulate + produce)", f"{n / produce_s:,.0f} events/s"),
        ("pipeline end to end (all stages, into ClickHouse)", f"{pipe_rate:,.0f} events/s ({pipe_s:.1f} s)"),
        ("pipeline peak memory (all stage processes)", f"{memory.peak_bytes / 2**20:,.0f} MiB"),
        ("bare confluent-kafka passthrough", f"{pass_rate:,.0f} events/s ({pass_s:.1f} s)"),
        ("ratio pipeline / passthrough", f"{pipe_rate / pass_rate:.3f}"),
        ("ingest stage alone (drain, start-up included)", f"{ingest_n / ingest_s:,.0f} events/s"),
        *(
            (
                f"{stage} stage alone (drain, start-up included)",
                f"{k / s:,.0f} records/s ({k:,} in {s:.1f} s)",
            )
            for stage, (k, s, _values) in alone.items()
        ),
        ("identity graph alone (in process, no Kafka)", f"{graph_rate:,.0f} events/s"),
        (
            "identity state per million identifiers (serialised)",
            f"{per_million:,.0f} MiB ({identifiers:,} identifiers measured)",
        ),
        ("journeys logic alone (in process, no Kafka)", f"{logic_rate:,.0f} events/s"),
        (
            "journeys state per active person (serialised)",
            f"{per_person:,.0f} bytes ({held:,} persons held at the peak)",
        ),
        (
            "HTTP collector (8 clients, batches of 100)",
            f"{requests / collector_s:,.0f} requests/s, {accepted / collector_s:,.0f} events/s",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


def _count_rows(settings: Settings) -> int:
    from pipeline.clickhouse.query_server import query_any

    db = settings.clickhouse_database
    total = 0
    for table in ("events_store", "sessions_store", "conversions_store", "attribution_store"):
        _cols, rows = query_any(settings, f"SELECT count() FROM {db}.{table}")
        total += int(rows[0][0])
    return total
