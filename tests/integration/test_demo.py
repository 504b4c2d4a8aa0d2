"""`o2o demo` through the command line, on the session's broker with the smallest simulation."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from pipeline.config import Settings
from tests.conftest import o2o, query
from tests.conftest import story_event as ev

pytestmark = pytest.mark.integration


def test_demo_starts_afresh_runs_every_stage_and_prints_the_report(
    settings: Settings, kafka_stack: Settings, tmp_path: Path
) -> None:
    # an event left under the prefix from an earlier run: the demo deletes the topics first
    o2o(settings, "init")
    stale = tmp_path / "stale.jsonl"
    stale.write_bytes(
        orjson.dumps(ev("stale-1", "web", "page_view", "2026-11-01T10:00:00Z", {"anonymous_id": "x"}))
    )
    o2o(settings, "produce", "--file", str(stale))

    # the session broker's state folder and ports: `up` finds it running and starts nothing
    local = settings.model_copy(
        update={
            "state_dir": kafka_stack.state_dir,
            "kafka_port": kafka_stack.kafka_port,
            "kafka_controller_port": kafka_stack.kafka_controller_port,
        }
    )
    demo = o2o(local, "demo", "--customers", "3", "--days", "1", "--seed", "7", timeout=120)
    sent = int(re.search(r"(\d+) events through every stage", demo.stderr).group(1))  # type: ignore[union-attr]
    stored = query(settings, "SELECT count(), countIf(event_id = 'stale-1') FROM {db}.events")[0]
    letters = query(settings, "SELECT count() FROM {db}.dead_letters")[0][0]
    assert stored[1] == 0 and stored[0] + letters == sent > 0
    assert "broker already running" in demo.stderr
    page = re.search(r"dashboard \(every page, one file\): file://(\S+)", demo.stderr)
    assert page and "Sales online and in store" in Path(page.group(1)).read_text()
    assert re.search(r"reset: deleted \d+ topics", demo.stderr)
    for title in ("Credited revenue per channel, by model", "Conversions per O2O label", "Totals"):
        assert title in demo.stdout
