"""Every metric the shipped Grafana dashboard charts is really exported by the running stages.

`o2o run all` with ``O2O_METRICS_PORT`` over a small story; each stage's
``/metrics`` is scraped once the sink has stored rows and every stage has
measured its lag.
"""

from __future__ import annotations

import contextlib
import random
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.config import Settings
from pipeline.producer import send_events
from pipeline.stack.kafka_net import port_is_free
from tests.conftest import at, o2o, start_o2o, stop_o2o, story_event
from tests.unit.test_monitoring_files import dashboard_metrics

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port_range(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports."""
    for _ in range(200):
        base = random.randrange(20_000, 60_000)
        if all(port_is_free(base + i) for i in range(count)):
            return base
    raise AssertionError("no free port range")


def scrape(port: int) -> Samples:
    """Every sample of one ``/metrics`` endpoint: (name, labels) -> value."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for metric in text_string_to_metric_families(text)
        for sample in metric.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with exactly these labels (None: not exported)."""
    return samples.get((name, frozenset(labels.items())))


def test_the_dashboards_metrics_are_exported_by_the_running_stages(settings: Settings) -> None:
    base = free_port_range(len(settings.stages))
    live = settings.model_copy(update={"metrics_port": base, "lag_check_seconds": 1.0})
    o2o(live, "init")
    ids = {"anonymous_id": "m1", "loyalty_id": "L-m1"}
    events = [
        story_event("m-1", "web", "page_view", at(), ids, context={"page": {"url": "https://shop.example/"}}),
        story_event("m-2", "pos", "purchase", at(minutes=30), ids,
                    properties={"transaction_id": "t-m", "store_id": "s1", "revenue": 40, "currency": "EUR"}),
    ]  # fmt: skip
    send_events(live, events)
    running = start_o2o(live, "run", "all")
    try:
        deadline = time.monotonic() + 120
        while True:
            scraped: dict[str, Samples] = {}
            for index, stage in enumerate(live.stages):
                with contextlib.suppress(httpx.HTTPError):  # not listening yet
                    scraped[stage] = scrape(base + index)
            sink = scraped.get("sink", {})
            ready = (
                len(scraped) == len(live.stages)
                and (value(sink, "o2o_stage_records_total", stage="sink", outcome="rows.conversions") or 0)
                >= 1
                and all(
                    value(s, "o2o_stage_lag_alert", stage=stage) is not None for stage, s in scraped.items()
                )
                # parts are read again at most every 10 s: wait for a reading after the first insert
                and value(sink, "o2o_clickhouse_active_parts", table="events_store") is not None
            )
            if ready or time.monotonic() > deadline:
                break
            assert running.poll() is None, running.communicate()
            time.sleep(1)
    finally:
        stop_o2o(running)
    assert ready, (sorted(scraped), {k: v for k, v in sink.items() if k[0] == "o2o_stage_records_total"})
    exported = {name for samples in scraped.values() for name, _labels in samples}
    assert sorted(dashboard_metrics() - exported) == []
    assert (value(sink, "o2o_sink_insert_seconds_count", table="events_store") or 0) >= 1
    assert (value(sink, "o2o_clickhouse_active_parts", table="events_store") or 0) >= 1
    assert value(sink, "o2o_clickhouse_merges_running") is not None
    assert value(scraped["ingest"], "o2o_stage_records_total", stage="ingest", outcome="valid") == 2
