"""A stalled stage upstream is not a quiet one: identity down longer than the allowed lateness.

Live events keep arriving while identity is stopped for longer than the
allowed lateness; journeys' partitions get no input meanwhile. Had their event
time moved on with the clock, everything identity passes on once it is back
would be very late. It moves on only over time identity vouched for
(pipeline/model/event_clock.py), so no event is stored as very late.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.event_producer import EventProducer
from tests.conftest import o2o, query, start_o2o_logged

pytestmark = [pytest.mark.integration, pytest.mark.outage, pytest.mark.timeout(600)]

LATENESS_SECONDS = 15
OUTAGE_SECONDS = 30  # twice the allowed lateness


def stop(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> None:
    os.killpg(process.pid, sig)
    process.wait(60)


def send_for(producer: EventProducer, seconds: float, sent: list[str]) -> None:
    """Page views stamped now, five a second, over a dozen visitors (both partitions get some)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        n = len(sent)
        event_id = f"live-{n}"
        producer.send({
            "event_id": event_id, "source": "web", "type": "page_view",
            "occurred_at": datetime.now(UTC).isoformat(), "ids": {"anonymous_id": f"visitor-{n % 12}"},
        })  # fmt: skip
        sent.append(event_id)
        producer.poll(0)
        time.sleep(0.2)
    producer.flush(10)


def test_identity_down_longer_than_the_lateness_leaves_no_event_very_late(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={"allowed_lateness_minutes": LATENESS_SECONDS / 60, "idle_partition_seconds": 1.0}
    )
    o2o(settings, "init")
    log = tmp_path / "stages.log"
    stages = {
        stage: start_o2o_logged(settings, log, "run", stage)
        for stage in ("ingest", "identity", "journeys", "sink")
    }
    sent: list[str] = []
    try:
        with EventProducer(settings) as producer:
            send_for(producer, 15, sent)
            stop(stages["identity"], signal.SIGKILL)
            send_for(producer, OUTAGE_SECONDS, sent)
            stages["identity"] = start_o2o_logged(settings, log, "run", "identity")
            send_for(producer, 10, sent)
    finally:
        for process in stages.values():
            if process.poll() is None:
                stop(process)
    o2o(settings, "run", "all", "--drain", timeout=240)
    text = log.read_text()
    assert "journeys: " in text and "identity: " in text, text[-3000:]
    stored = query(settings, "SELECT count(), countIf(late = 1) FROM {db}.events")
    assert stored == [(len(sent), 0)], (stored, len(sent))
