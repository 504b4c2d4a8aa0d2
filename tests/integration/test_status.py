"""`o2o status` and the stages' own lag watch, against the real broker and chDB.

Lag, the age of the oldest unacknowledged record, the processes and their
partitions, a backlog near its topic's retention (an alert, a warning, a
gauge), and records retention deleted before a stage read them.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from pipeline.config import Settings
from pipeline.kafka import topics
from pipeline.kafka.admin import admin_client
from pipeline.kafka.clients import make_producer
from pipeline.producer import send_events
from pipeline.runtime.lag_watch import LagCollector, LagWatch
from tests.conftest import at, o2o, start_o2o, stop_o2o, story_event

pytestmark = pytest.mark.integration

DAY = 86_400.0


def status_json(settings: Settings, *options: str) -> tuple[int, dict[str, Any]]:
    """Exit code and parsed output of `o2o status --json`."""
    ran = o2o(settings, "status", "--json", *options, check=False)
    return ran.returncode, json.loads(ran.stdout)


def by_stage(reading: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The reading's stages by name."""
    return {stage["stage"]: stage for stage in reading["stages"]}


def produce_raw(settings: Settings, count: int, written_at: float) -> str:
    """``count`` messages on partition 0 of the raw web topic, stamped ``written_at``; the topic's name."""
    topic = settings.topic(topics.RAW_TOPICS["web"])
    producer = make_producer(settings)
    for i in range(count):
        producer.produce(topic, b"{}", f"k{i}".encode(), partition=0, timestamp=int(written_at * 1000))
    assert producer.flush(10) == 0
    return topic


def test_status_shows_lag_backlog_age_processes_and_clickhouse(settings: Settings) -> None:
    o2o(settings, "init")
    ids = {"anonymous_id": "a1"}
    send_events(settings, [story_event(f"e{i}", "web", "page_view", at(minutes=i), ids) for i in range(6)])
    o2o(settings, "run", "ingest", "--drain", timeout=120)
    ingest = start_o2o(settings, "run", "ingest")
    try:
        deadline = time.monotonic() + 60
        while True:
            code, reading = status_json(settings)
            if by_stage(reading)["ingest"]["processes"] or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        stop_o2o(ingest)
    assert code == 0, reading["alerts"]
    stages = by_stage(reading)
    assert set(stages) == set(settings.stages)
    first = stages["ingest"]
    assert first["lag"] == 0 and first["oldest_unacknowledged_seconds"] is None
    assert all((p["committed"] or 0) == p["end"] for p in first["partitions"])  # None: nothing to commit
    assert first["newest_acknowledged_at"] is not None
    assert first["state"] == "stable"
    (process,) = first["processes"]
    assert process["client_id"].startswith(f"{settings.group('ingest')}-")
    assert {entry.split("[")[0] for entry in process["partitions"]} == set(topics.raw_topics(settings))
    identity = stages["identity"]  # never ran: everything in its input waits
    assert identity["lag"] > 0 and identity["lag"] == sum(p["end"] for p in identity["partitions"])
    assert identity["state"] == "absent" and identity["processes"] == []
    assert 0 <= identity["oldest_unacknowledged_seconds"] < 300
    clickhouse = reading["clickhouse"]
    assert clickhouse["error"] is None and clickhouse["read"] and clickhouse["events_stored_last_5_min"] == 0
    assert reading["kafka"]["dead_letters_last_5_min"] == 0 and reading["kafka"]["brokers"]


def test_a_backlog_near_its_retention_alerts(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    o2o(settings, "init")
    topic = produce_raw(settings, 3, time.time() - 4 * DAY)  # raw topics keep 7 days; the alert is at half
    code, reading = status_json(settings, "--no-clickhouse")
    assert code == 1
    (warning,) = by_stage(reading)["ingest"]["near_retention"]
    assert warning.startswith(f"{topic}[0]: oldest unacknowledged record is 96.0 h old, retention 168.0 h")
    assert any(alert.startswith("ingest: ") for alert in reading["alerts"])
    assert reading["clickhouse"]["read"] is False
    relaxed = settings.model_copy(update={"lag_alert_share": 0.9})
    assert status_json(relaxed, "--no-clickhouse")[0] == 0

    watch = LagWatch(settings, "ingest")
    with caplog.at_level(logging.WARNING, logger="pipeline.runtime.lag_watch"):
        lag = watch.check()
    assert lag.lag == 3 and watch.alerting
    assert f"the oldest record of {topic}[0] not acknowledged yet is 96.0 h old" in caplog.text
    gauges = {family.name: family.samples for family in LagCollector(watch).collect()}
    (alert,) = gauges["o2o_stage_lag_alert"]
    assert alert.value == 1.0 and alert.labels == {"stage": "ingest"}
    (oldest,) = gauges["o2o_stage_oldest_unacknowledged_seconds"]
    assert 4 * DAY <= oldest.value < 4 * DAY + 300
    lagging = {(s.labels["topic"], s.labels["partition"]): s.value for s in gauges["o2o_stage_lag_records"]}
    assert lagging[(topic, "0")] == 3.0 and sum(lagging.values()) == 3.0


def test_records_deleted_before_a_stage_read_them_are_reported(settings: Settings) -> None:
    o2o(settings, "init")
    topic = produce_raw(settings, 10, time.time())
    group = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": settings.group("ingest")})
    deadline = time.monotonic() + 30
    while True:  # a fresh broker's group coordinator may still be loading
        try:
            group.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
            break
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    group.close()
    admin = admin_client(settings)  # kept: the futures fail when their client is collected
    for future in admin.delete_records([TopicPartition(topic, 0, 10)], operation_timeout=30).values():
        assert future.result(timeout=60).low_watermark == 10  # the partition is emptied

    code, reading = status_json(settings, "--no-clickhouse")
    assert code == 1
    assert by_stage(reading)["ingest"]["lost_to_retention"] == 8
    assert "ingest: 8 records deleted by retention before it read them" in reading["alerts"]
    err = o2o(settings, "run", "ingest", "--drain", timeout=120).stderr
    assert f"offsets 2 to 9 of {topic}[0] were deleted by retention before this stage acknowledged" in err
    # the loss acknowledged: nothing to read there, yet the partition no longer counts as behind
    code, reading = status_json(settings, "--no-clickhouse")
    ingest = by_stage(reading)["ingest"]
    assert ingest["lost_to_retention"] == 0 and ingest["lag"] == 0, reading["alerts"]
