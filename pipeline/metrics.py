"""Prometheus metrics of a running stage: what it processed, by outcome.

Each stage keeps plain :class:`collections.Counter` objects; a custom
collector reads them when Prometheus scrapes, so the hot path pays nothing
extra. With ``O2O_METRICS_PORT`` set, stage *n* (in ``ingest, identity,
journeys, attribution, sink`` order) serves ``/metrics`` on that port + *n*.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from pipeline.config import STAGES, Settings

log = logging.getLogger(__name__)


class CountsCollector(Collector):
    """Exposes named counters as ``o2o_stage_records_total{stage, outcome}``."""

    def __init__(self, stage: str, sources: Mapping[str, Callable[[], Mapping[str, int]]]) -> None:
        self.stage = stage
        self.sources = sources

    def collect(self) -> Iterator[CounterMetricFamily]:
        """One sample per counter key (prefixed by its source name)."""
        family = CounterMetricFamily(
            "o2o_stage_records", "Records handled by a stage, by outcome", labels=["stage", "outcome"]
        )
        for source, read in self.sources.items():
            for outcome, value in sorted(read().items()):
                family.add_metric([self.stage, f"{source}.{outcome}" if source else outcome], float(value))
        yield family


def serve_metrics(
    settings: Settings,
    stage: str,
    sources: Mapping[str, Callable[[], Mapping[str, int]]],
    collectors: Sequence[Collector] = (),
    copy: int = 0,
) -> int | None:
    """Serve the counters and ``collectors`` when a metrics port is configured; returns the port.

    Copy ``copy`` of a stage that runs several processes serves on its own
    port, one set of stage ports further up per copy.
    """
    if not settings.metrics_port:
        return None
    port = settings.metrics_port + STAGES.index(stage) + len(STAGES) * copy
    registry = CollectorRegistry()
    registry.register(CountsCollector(stage, sources))
    for collector in collectors:
        registry.register(collector)
    start_http_server(port, addr=settings.metrics_host, registry=registry)
    log.info("%s: metrics on http://%s:%d/metrics", stage, settings.metrics_host, port)
    return port


def counter_of(counts: Counter[str]) -> Callable[[], Mapping[str, int]]:
    """A source reading a live Counter."""
    return lambda: dict(counts)
