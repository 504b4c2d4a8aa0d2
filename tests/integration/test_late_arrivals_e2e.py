"""An app batch that arrives late, through the real broker and chDB: sessions are re-cut."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config import Settings
from pipeline.errors import RetryableError
from tests.conftest import o2o, query, start_o2o, stop_o2o

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
IDS = {"anonymous_id": "c1", "user_id": "u1"}


def ev(event_id: str, source: str, etype: str, minutes: float, **extra: Any) -> dict[str, Any]:
    when = (T0 + timedelta(minutes=minutes)).isoformat()
    return {"event_id": event_id, "source": source, "type": etype, "occurred_at": when, "ids": IDS, **extra}


def produce(settings: Settings, path: Path, events: list[dict[str, Any]]) -> None:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    o2o(settings, "produce", "--file", str(path))


def live(settings: Settings, sql: str) -> list[list[Any]]:
    """Rows of a query while the pipeline runs, through `o2o sql` in another process.

    Opening chDB in this test process could take the folder before the sink does.
    """
    proc = o2o(settings, "sql", sql, "--format", "json", check=False)
    if proc.returncode != 0:
        raise AssertionError(proc.stderr[-500:])
    return [list(row.values()) for row in orjson.loads(proc.stdout)]


def wait_for(check: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (AssertionError, RetryableError):
            pass  # the sink (and its query server) may still be starting
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}")


def test_a_late_app_batch_joins_sessions_and_a_very_late_event_is_flagged(
    settings: Settings, tmp_path: Path
) -> None:
    o2o(settings, "init")
    running = settings.model_copy(update={"idle_partition_seconds": 3600.0})
    pipeline = start_o2o(running, "run", "all")
    try:
        # 10:00 and 10:05 on the web, then nothing for 45 minutes: two sessions so far
        produce(settings, tmp_path / "1.jsonl", [
            ev("w1", "web", "page_view", 0, context={"campaign": {"medium": "email", "name": "nov"}}),
            ev("w2", "web", "page_view", 5),
            ev("w3", "web", "page_view", 50),
        ])  # fmt: skip
        wait_for(lambda: len(live(settings, "SELECT 1 FROM {db}.events")) == 3, "the web events")
        first = live(settings, "SELECT event_id, session_id FROM {db}.events ORDER BY event_id")
        assert first[0][1] == first[1][1] != first[2][1]

        # the phone's batch from 10:25 arrives now (25 minutes late): it bridges the gap
        produce(settings, tmp_path / "2.jsonl", [ev("a1", "app", "screen_view", 25)])
        wait_for(
            lambda: len({r[0] for r in live(settings, "SELECT session_id FROM {db}.events")}) == 1,
            "the sessions to join",
        )
        # then a new session at 13:00 moves event time on, and an event from 11:30 comes in:
        # 90 minutes late, beyond the allowed hour
        produce(settings, tmp_path / "3.jsonl", [ev("w4", "web", "page_view", 180)])
        wait_for(lambda: len(live(settings, "SELECT 1 FROM {db}.events")) == 5, "the 13:00 event")
        produce(settings, tmp_path / "4.jsonl", [
            ev("a2", "app", "screen_view", 90),
            ev("w5", "web", "order_completed", 185,
               properties={"order_id": "o1", "revenue": 40.0, "currency": "EUR", "fulfillment": "delivery"}),
        ])  # fmt: skip
        wait_for(lambda: len(live(settings, "SELECT 1 FROM {db}.conversions")) == 1, "the order")
    finally:
        stop_o2o(pipeline)
    o2o(settings, "run", "all", "--drain")

    events = query(settings, "SELECT event_id, session_id, late, version FROM {db}.events ORDER BY event_id")
    by_id = {e[0]: e for e in events}
    joined = by_id["w1"][1]
    assert by_id["w2"][1] == by_id["a1"][1] == by_id["w3"][1] == joined
    assert by_id["w3"][3] == 2, "w3 was re-emitted with the joined session"
    assert (by_id["a2"][1], by_id["a2"][2]) == ("", 1)  # very late: flagged, in no session
    assert sum(e[2] for e in events) == 1

    sessions = query(
        settings,
        "SELECT session_id, channel, started_at, ended_at, event_count "
        "FROM {db}.sessions ORDER BY started_at",
    )
    assert [s[1:] for s in sessions] == [
        ("email", "2026-11-02T10:00:00", "2026-11-02T10:50:00", 4),
        ("direct", "2026-11-02T13:00:00", "2026-11-02T13:05:00", 2),
    ]
    assert sessions[0][0] == joined
    retracted = query(settings, "SELECT count() FROM {db}.sessions_store FINAL WHERE retracted = 1")
    assert retracted == [(1,)]

    # the order's path holds the joined session once and never the retracted one
    conversions = query(settings, "SELECT path_length FROM {db}.conversions")
    assert conversions == [(2,)]
    linear = query(
        settings, "SELECT channel, credit FROM {db}.attribution WHERE model = 'linear' ORDER BY channel"
    )
    assert linear == [("direct", 0.5), ("email", 0.5)]
