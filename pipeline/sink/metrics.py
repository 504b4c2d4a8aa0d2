"""The sink's Prometheus metrics: how long ClickHouse inserts take, and ClickHouse's parts and merges.

Both are read by the sink's ``/metrics`` endpoint (``O2O_METRICS_PORT`` + 4)
next to its row counters; the Grafana dashboard in ``deploy/monitoring``
charts them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeline.clickhouse.client import ClickHouse
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

INSERT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Upper bounds (seconds) of the insert latency histogram."""

CLICKHOUSE_READ_SECONDS = 10.0
"""A scrape within this long of the last one reuses its parts and merges."""

CLICKHOUSE_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "o2o_clickhouse_active_parts": ("Active data parts of a table (many: merges fall behind)", ("table",)),
    "o2o_clickhouse_active_part_rows": ("Rows in a table's active parts (before deduplication)", ("table",)),
    "o2o_clickhouse_merges_running": ("Merges running in the pipeline's database", ()),
}
"""The gauges :class:`ClickHouseCollector` exports: name -> (help, labels)."""


def clickhouse_gauge(name: str, value: float | None = None) -> GaugeMetricFamily:
    """One of :data:`CLICKHOUSE_GAUGES`, empty (to add labelled samples to) or with its one ``value``."""
    helptext, labels = CLICKHOUSE_GAUGES[name]
    return GaugeMetricFamily(name, helptext, value=value, labels=list(labels) if value is None else None)


def parts_query(database: str) -> str:
    """SQL: active parts and their rows per table of ``database`` (also used by ``o2o status``)."""
    return (
        f"SELECT table, count(), sum(rows) FROM system.parts WHERE database = '{database}' AND active "
        "GROUP BY table ORDER BY table"
    )


def merges_query(database: str) -> str:
    """SQL: merges running in ``database``."""
    return f"SELECT count() FROM system.merges WHERE database = '{database}'"


def insert_histogram() -> Histogram:
    """``o2o_sink_insert_seconds{table}``: one observation per ClickHouse insert of a batch."""
    return Histogram(
        "o2o_sink_insert_seconds",
        "Time of one ClickHouse insert of a batch of rows, per storage table",
        labelnames=["table"],
        buckets=INSERT_BUCKETS,
        registry=None,
    )


def insert_observer(histogram: Histogram) -> Callable[[str, float], None]:
    """A :class:`~pipeline.sink.writer.RowBatcher` observer feeding ``histogram``."""
    return lambda table, seconds: histogram.labels(table).observe(seconds)


class ClickHouseCollector(Collector):
    """``o2o_clickhouse_active_parts{table}``, ``o2o_clickhouse_active_part_rows{table}``, merges.

    Read from ``system.parts`` and ``system.merges`` at most every
    :data:`CLICKHOUSE_READ_SECONDS`; when ClickHouse does not answer, the
    scrape leaves the gauges out rather than failing.
    """

    def __init__(self, ch: ClickHouse, clock: Callable[[], float] = time.monotonic) -> None:
        self.ch = ch
        self.clock = clock
        self._lock = threading.Lock()
        self._read_at = -CLICKHOUSE_READ_SECONDS
        self._parts: list[tuple[str, int, int]] = []
        self._merges: int | None = None

    def _read(self) -> None:
        now = self.clock()
        if now - self._read_at < CLICKHOUSE_READ_SECONDS:
            return
        self._read_at = now
        try:
            # the read-only handle: the writer's lock would hold up an insert (and its timing)
            parts = self.ch.query(parts_query(self.ch.database), readonly=True).rows
            merges = self.ch.query(merges_query(self.ch.database), readonly=True).rows
        except PipelineError as exc:
            log.warning("sink metrics: could not read ClickHouse parts: %s", exc)
            self._parts, self._merges = [], None
            return
        self._parts = [(str(t), int(n), int(r)) for t, n, r in parts]
        self._merges = int(merges[0][0])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Parts, their rows and merges as gauges."""
        with self._lock:
            self._read()
            parts, merges = list(self._parts), self._merges
        active, rows = (
            clickhouse_gauge("o2o_clickhouse_active_parts"),
            clickhouse_gauge("o2o_clickhouse_active_part_rows"),
        )
        for table, count, total in parts:
            active.add_metric([table], float(count))
            rows.add_metric([table], float(total))
        yield from (active, rows)
        if merges is not None:
            yield clickhouse_gauge("o2o_clickhouse_merges_running", float(merges))
