"""A running stage watches its own lag: Prometheus gauges, and a warning before retention bites.

Every ``O2O_LAG_CHECK_SECONDS`` a background thread measures the stage's
consumer group (:func:`pipeline.kafka.lag.measure_lag`). When the oldest
record the stage has not acknowledged is older than ``O2O_LAG_ALERT_SHARE``
of its topic's retention, the stage logs a warning per partition and the
alert gauge is 1: past the retention the broker deletes those records
before the stage reads them. Records already deleted that way (the group's
committed offset below the log's start) are logged as an error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from confluent_kafka.admin import AdminClient
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.kafka.admin import admin_client
from pipeline.kafka.lag import LagReaders, StageLag, measure_lag, near_retention, topic_retention

log = logging.getLogger(__name__)

RETENTION_REFRESH_SECONDS = 600.0
"""How long a read of the topics' retention is trusted (an operator may change it)."""


class LagWatch:
    """The latest lag reading of one stage, refreshed by :meth:`start`'s thread or by :meth:`check`."""

    def __init__(self, settings: Settings, stage: str, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.stage = stage
        self.clock = clock
        self.latest: StageLag | None = None
        self.alerting = False
        self._retention: dict[str, int] = {}
        self._retention_read = float("-inf")
        self._stop = threading.Event()
        self._admin: AdminClient | None = None
        self._readers: LagReaders | None = None  # kept open from one check to the next

    def start(self) -> LagWatch:
        """Check in a daemon thread every ``O2O_LAG_CHECK_SECONDS`` until :meth:`stop`."""
        threading.Thread(target=self._loop, name=f"{self.stage}-lag-watch", daemon=True).start()
        return self

    def stop(self) -> None:
        """End the thread after its current check."""
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.lag_check_seconds):
            try:
                self.check()
            except PipelineError as exc:
                log.warning("%s: could not measure lag: %s", self.stage, exc)
            except Exception:  # the watch must never take the stage down
                log.exception("%s: lag check failed", self.stage)

    def check(self) -> StageLag:
        """Measure now, log what needs a person, and keep the reading for the gauges."""
        admin = self._admin = self._admin or admin_client(self.settings)
        readers = self._readers = self._readers or LagReaders(self.settings)
        lag = measure_lag(self.settings, [self.stage], admin=admin, readers=readers)[self.stage]
        now = self.clock()
        if now - self._retention_read > RETENTION_REFRESH_SECONDS:
            self._retention = topic_retention(admin, {p.topic for p in lag.partitions})
            self._retention_read = now
        close = near_retention(lag, self._retention, self.settings.lag_alert_share, now)
        for p, age, keep in close:
            log.warning("%s: the oldest record of %s[%d] not acknowledged yet is %.1f h old, and the "
                        "topic keeps records %.1f h: past that they are deleted unread (%d records behind)",
                        self.stage, p.topic, p.partition, age / 3600, keep / 3600, p.lag)  # fmt: skip
        if lag.lost:
            log.error("%s: %d records were deleted by retention before this stage acknowledged them",
                      self.stage, lag.lost)  # fmt: skip
        self.latest, self.alerting = lag, bool(close)
        return lag


class LagCollector(Collector):
    """Exposes a :class:`LagWatch`'s latest reading as gauges."""

    def __init__(self, watch: LagWatch) -> None:
        self.watch = watch

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Lag per partition, the backlog's age, records lost to retention, the alert."""
        lag = self.watch.latest
        stage = self.watch.stage
        records = GaugeMetricFamily(
            "o2o_stage_lag_records",
            "Records of an input partition the stage has not acknowledged",
            labels=["stage", "topic", "partition"],
        )
        oldest = GaugeMetricFamily(
            "o2o_stage_oldest_unacknowledged_seconds",
            "Age of the oldest record the stage has not acknowledged (0: none waits)",
            labels=["stage"],
        )
        lost = GaugeMetricFamily(
            "o2o_stage_lost_to_retention_records",
            "Records deleted by retention before the stage acknowledged them",
            labels=["stage"],
        )
        alert = GaugeMetricFamily(
            "o2o_stage_lag_alert",
            "1 while the stage's backlog is older than O2O_LAG_ALERT_SHARE of its topic's retention",
            labels=["stage"],
        )
        if lag is not None:
            for p in lag.partitions:
                records.add_metric([stage, p.topic, str(p.partition)], float(p.lag))
            oldest.add_metric([stage], lag.oldest_age(self.watch.clock()) or 0.0)
            lost.add_metric([stage], float(lag.lost))
            alert.add_metric([stage], 1.0 if self.watch.alerting else 0.0)
        yield from (records, oldest, lost, alert)
