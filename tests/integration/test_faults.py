"""Faults and live operation: ClickHouse away at start or lost mid-run, queries while the sink holds chDB."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.bench_parts import hold_merges
from pipeline.config import Settings
from pipeline.kafka.admin import committed_offsets, end_offsets
from pipeline.kafka.clients import make_producer
from pipeline.model.rows import DEAD_LETTERS, EVENTS
from pipeline.stack.local_kafka import free_port
from tests.conftest import REPO, o2o, query, settings_env, start_o2o

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


def start_logged(settings: Settings, log: Path, *args: str) -> subprocess.Popen[str]:
    """Start ``o2o`` with its stderr in ``log``, so a test can wait for a line while it runs."""
    with log.open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *args],
            env=settings_env(settings), cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, text=True,
        )  # fmt: skip


def wait_for(
    what: str, condition: Callable[[], bool], log: Path, proc: subprocess.Popen[str], bound: float = 60.0
) -> None:
    """Poll ``condition`` while ``proc`` runs; fail with the log's tail if it ends or ``bound`` passes."""
    deadline = time.monotonic() + bound
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the process ended ({proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen in {bound} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def connect_retries(log: Path) -> int:
    """How often the sink failed to reach ClickHouse before consuming anything."""
    return log.read_text().count("(nothing consumed or committed)")


def retries(log: Path) -> int:
    """How often the sink's checkpoint failed and was retried without a commit."""
    return sum(
        "retrying in" in line and "(nothing committed)" in line for line in log.read_text().splitlines()
    )


def stored_once(settings: Settings, table: str, key: str) -> list[tuple[Any, ...]]:
    """(key, version, stored rows) of every key in a storage table, read without FINAL."""
    return query(
        settings, f"SELECT {key}, version, count() FROM {{db}}.{table} GROUP BY {key}, version ORDER BY {key}"
    )


def test_sink_waits_for_clickhouse_at_start_commits_nothing_then_writes_once(
    settings: Settings, tmp_path: Path
) -> None:
    o2o(settings, "init")
    hold_merges(settings, "events_store")
    rows = event_rows(50)
    produce_rows(settings, rows)
    away = settings.model_copy(update={"clickhouse_dsn": f"http://127.0.0.1:{free_port()}"})
    log = tmp_path / "sink.log"
    sink = start_logged(away, log, "run", "sink")
    try:
        wait_for("two connect retries", lambda: connect_retries(log) >= 2, log, sink)
        assert sink.poll() is None, "the sink must keep retrying, not exit"
        assert committed_offsets(settings, settings.group("sink"), [settings.topic(EVENTS.topic)]) == {}
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=30)
    assert sink.returncode == 0, log.read_text()[-2000:]

    o2o(settings, "run", "sink", "--drain")
    produce_rows(settings, rows[:10])  # redelivered duplicates: stored again, the view drops them
    o2o(settings, "run", "sink", "--drain")
    assert query(settings, "SELECT count(), uniqExact(event_id) FROM {db}.events") == [(50, 50)]
    assert stored_once(settings, "events_store", "event_id") == sorted(
        [(f"e{i}", 1, 2 if i < 10 else 1) for i in range(50)]
    )


def test_sink_losing_clickhouse_mid_run_retries_without_commit_then_writes_once(
    settings: Settings, tmp_path: Path
) -> None:
    """ClickHouse's storage of events_store turns unwritable after the sink committed a first batch."""
    o2o(settings, "init")
    hold_merges(settings, "events_store", "dead_letters_store")
    events, dlq = settings.topic(EVENTS.topic), settings.topic(DEAD_LETTERS.topic)
    group = settings.group("sink")
    rows = event_rows(40)
    log = tmp_path / "sink.log"
    sink = start_logged(settings, log, "run", "sink")
    frozen: str | None = None
    try:
        produce_rows(settings, rows[:20])
        wait_for("the first batch committed", lambda: _lag(settings, group, [events]) == 0, log, sink)
        ((paths,),) = query(
            settings,
            "SELECT data_paths FROM system.tables WHERE database = '{db}' AND name = 'events_store'",
        )
        frozen = paths[0]
        subprocess.run(["chattr", "+i", frozen], check=True)  # even root cannot write there now
        produce_dead_letters(settings, 5)
        produce_rows(settings, rows[20:])
        wait_for("two failed checkpoints", lambda: retries(log) >= 2, log, sink)
        assert sink.poll() is None, "the sink must keep retrying, not exit"

        done = committed_offsets(settings, group, [events])
        ends = end_offsets(settings, [events])
        print(f"at the second retry: committed {done}, end offsets {ends}")
        assert len(ends) == 2 and all(0 < done[tp] < end for tp, end in ends.items()), (done, ends)
        assert sum(ends.values()) - sum(done.values()) == 20  # every row of the second batch waits

        subprocess.run(["chattr", "-i", frozen], check=True)
        frozen = None
        wait_for("the retried batch committed", lambda: _lag(settings, group, [events, dlq]) == 0, log, sink)
    finally:
        if frozen is not None:
            subprocess.run(["chattr", "-i", frozen], check=False)
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=30)
    assert sink.returncode == 0, log.read_text()[-2000:]
    assert stored_once(settings, "events_store", "event_id") == sorted((f"e{i}", 1, 1) for i in range(40))
    assert stored_once(settings, "dead_letters_store", "dead_letter_id") == [
        (f"raw:0:{i}", 1, 1) for i in range(5)
    ]


def _lag(settings: Settings, group: str, topics: list[str]) -> int:
    ends = end_offsets(settings, topics)
    done = committed_offsets(settings, group, topics)
    return sum(end - done.get(tp, 0) for tp, end in ends.items())


def produce_dead_letters(settings: Settings, n: int) -> None:
    """``n`` dead letters as ingest sends them (original bytes, where from and why in headers)."""
    producer = make_producer(settings)
    for i in range(n):
        headers = {"o2o.topic": "raw", "o2o.partition": "0", "o2o.offset": str(i), "o2o.reason": "bad"}
        producer.produce(settings.topic(DEAD_LETTERS.topic), b"{", headers=headers)
    producer.flush()


def test_sql_answers_while_the_sink_holds_the_embedded_engine(settings: Settings) -> None:
    o2o(settings, "init")
    produce_rows(settings, event_rows(5))
    sink = start_o2o(settings, "run", "sink")
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
        assert "refused: only" in denied.stdout + denied.stderr  # through the sink's query server
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.communicate(timeout=30)
    assert sink.returncode == 0
