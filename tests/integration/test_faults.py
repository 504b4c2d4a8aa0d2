"""Faults and live operation: ClickHouse away, queries while the sink holds chDB."""

from __future__ import annotations

import signal
import time
from typing import Any

import orjson
import pytest

from pipeline.config import Settings
from pipeline.kafka.admin import committed_offsets, ensure_topics
from pipeline.kafka.clients import make_producer
from pipeline.model.rows import EVENTS
from pipeline.stack.local_kafka import free_port
from tests.conftest import o2o, query, start_o2o

pytestmark = pytest.mark.integration


def event_rows(n: int) -> list[dict[str, Any]]:
    return [
        dict.fromkeys(EVENTS.columns, "")
        | {
            "event_id": f"e{i}", "person_id": "p", "source": "web", "type": "page_view",
            "occurred_at": 1_790_000_000_000 + i, "received_at": 1_790_000_000_000 + i,
            "original_occurred_at": None, "revenue": 0.0,
            "consent_analytics": 1, "consent_marketing": 1, "late": 0, "version": 1,
        }
        for i in range(n)
    ]  # fmt: skip


def produce_rows(settings: Settings, rows: list[dict[str, Any]]) -> None:
    producer = make_producer(settings)
    for row in rows:
        producer.produce(settings.topic(EVENTS.topic), orjson.dumps(row), row["event_id"].encode())
    producer.flush()


start = start_o2o


def test_sink_waits_for_clickhouse_commits_nothing_then_writes_once(settings: Settings) -> None:
    ensure_topics(settings)
    rows = event_rows(50)
    produce_rows(settings, rows)
    away = settings.model_copy(update={"clickhouse_dsn": f"http://127.0.0.1:{free_port()}"})
    sink = start(away, "run", "sink")
    try:
        time.sleep(6)
        assert sink.poll() is None, "the sink must keep retrying, not exit"
        assert committed_offsets(settings, settings.group("sink"), [settings.topic(EVENTS.topic)]) == {}
    finally:
        sink.send_signal(signal.SIGTERM)
        _out, err = sink.communicate(timeout=30)
    assert sink.returncode == 0, err[-2000:]
    assert "retrying" in err

    o2o(settings, "run", "sink", "--drain")
    produce_rows(settings, rows[:10])  # redelivered duplicates
    o2o(settings, "run", "sink", "--drain")
    assert query(settings, "SELECT count(), uniqExact(event_id) FROM {db}.events") == [(50, 50)]


def test_sql_answers_while_the_sink_holds_the_embedded_engine(settings: Settings) -> None:
    o2o(settings, "init")
    produce_rows(settings, event_rows(5))
    sink = start(settings, "run", "sink")
    try:
        deadline = time.monotonic() + 60
        out = ""
        while time.monotonic() < deadline:
            proc = o2o(
                settings, "sql", "SELECT count() AS n FROM {db}.events", "--format", "json", check=False
            )
            out = proc.stdout + proc.stderr
            if proc.returncode == 0 and orjson.loads(proc.stdout) == [{"n": 5}]:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"o2o sql never saw the rows: {out}")
        denied = o2o(settings, "sql", "INSERT INTO {db}.events_store (event_id) VALUES ('x')", check=False)
        assert denied.returncode != 0
        assert "readonly" in (denied.stdout + denied.stderr).lower()
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.communicate(timeout=30)
    assert sink.returncode == 0
