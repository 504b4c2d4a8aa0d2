"""The shipped monitoring files: Prometheus scrapes every stage on its port; the dashboard is sound."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pipeline.config import STAGES

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "o2o-pipeline.json"
METRIC_NAME = re.compile(r"\bo2o_[a-z_]+\b")
SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the Grafana dashboard."""
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def dashboard_metrics() -> set[str]:
    """The metric names (as scraped: ``_total``, ``_bucket`` included) the dashboard queries."""
    return {name for expr in dashboard_queries() for name in METRIC_NAME.findall(expr)}


def family(name: str) -> str:
    """A scraped sample name's metric family (``o2o_x_total`` -> ``o2o_x``)."""
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_the_dashboard_charts_throughput_lag_dead_letters_insert_latency_and_parts() -> None:
    families = {family(name) for name in dashboard_metrics()}
    assert {
        "o2o_stage_records",
        "o2o_stage_lag_records",
        "o2o_stage_oldest_unacknowledged_seconds",
        "o2o_sink_insert_seconds",
        "o2o_clickhouse_active_parts",
    } <= families
    assert any("dead_letter" in expr for expr in dashboard_queries())
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "o2o-prometheus", panel["title"]
        assert [t["refId"] for t in panel["targets"]] == sorted({t["refId"] for t in panel["targets"]})


def test_every_metric_the_dashboard_names_is_defined_in_the_code() -> None:
    source = "\n".join(path.read_text() for path in (ROOT / "pipeline").rglob("*.py"))
    missing = sorted(name for name in dashboard_metrics() if f'"{family(name)}"' not in source)
    assert missing == []


def test_prometheus_scrapes_every_compose_stage_on_its_metrics_port() -> None:
    config = (MONITORING / "prometheus.yml").read_text()
    targets = dict(re.findall(r'job_name: o2o-(\w+)\s+static_configs:\s+- targets: \["([^"]+)"\]', config))
    compose = (ROOT / "docker-compose.yml").read_text()
    base = int(re.search(r"O2O_METRICS_PORT: (\d+)", compose).group(1))  # type: ignore[union-attr]
    services = set(
        re.findall(r'^  (\w+):\n    <<: \*o2o-stage\n    command: \["run", "(\w+)"\]', compose, re.M)
    )
    assert services and all(service == stage for service, stage in services)
    assert targets == {stage: f"{stage}:{base + STAGES.index(stage)}" for stage, _ in services}
    assert "O2O_METRICS_HOST: 0.0.0.0" in compose  # reachable from the prometheus container
    for mounted in re.findall(r"- \./(deploy/monitoring/[^:]+):", compose):
        assert (ROOT / mounted).exists(), mounted
