"""The collector's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

DELIVERY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class CollectorMetrics:
    """The collector's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "o2o_collector_requests", "HTTP requests by route and status", ["route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.accepted = Counter(
            "o2o_collector_events_accepted", "events produced to a raw topic, by source", ["source"],
            registry=self.registry,
        )  # fmt: skip
        self.rejected = Counter(
            "o2o_collector_events_rejected", "events rejected, by reason", ["reason"], registry=self.registry
        )
        self.refused = Counter(
            "o2o_collector_refused", "requests refused by a limit, by limit (rate_address, busy_key, "
            "too_large, too_many_events, slow_client, ...)", ["limit"], registry=self.registry,
        )  # fmt: skip
        self.delivery = Histogram(
            "o2o_collector_delivery_seconds", "seconds from produce to Kafka's acknowledgement",
            buckets=DELIVERY_BUCKETS, registry=self.registry,
        )  # fmt: skip
