"""Killing stages mid-stream and restarting loses nothing and counts nothing twice."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psutil
import pytest

from pipeline.config import Settings
from pipeline.model.contract import conversion_kind
from pipeline.simulate import simulate
from tests.conftest import REPO, o2o, query, settings_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_kill_minus_nine_then_drain(settings: Settings, tmp_path: Path) -> None:
    events = list(simulate(customers=300, days=10, seed=3))
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    conversions = sum(
        1
        for e in events
        if conversion_kind(e) is not None  # type: ignore[arg-type]
        and (e.get("consent") or {}).get("analytics") is not False  # never attributed
    )
    o2o(settings, "init")
    o2o(settings, "produce", "--file", str(path))

    run = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", "all"],
        env=settings_env(settings), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(12)  # stages started and partway through
        for child in psutil.Process(run.pid).children():
            if any(stage in child.cmdline() for stage in ("identity", "journeys", "sink")):
                child.send_signal(signal.SIGKILL)
        run.wait(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
        for child in psutil.Process().children(recursive=True):
            if "pipeline.cli" in " ".join(child.cmdline()):
                child.kill()
    assert run.returncode != 0  # the killed stage brought `run all` down

    o2o(settings, "run", "all", "--drain", timeout=300)

    assert query(settings, "SELECT count(), uniqExact(event_id) FROM {db}.events") == [
        (len(events), len(events))
    ]
    assert query(settings, "SELECT count() FROM {db}.conversions") == [(conversions,)]
    sums = query(
        settings,
        "SELECT conversion_id, model, sum(credit) FROM {db}.attribution GROUP BY conversion_id, model "
        "HAVING abs(sum(credit) - 1) > 1e-9",
    )
    assert sums == []
    per_model = query(settings, "SELECT model, uniqExact(conversion_id) FROM {db}.attribution GROUP BY model")
    assert {count for _model, count in per_model} == {conversions}
    # every event sits in exactly one stored session of its kind
    orphans = query(
        settings,
        "SELECT count() FROM {db}.events AS e "
        "LEFT ANTI JOIN {db}.sessions AS s ON s.session_id = e.session_id WHERE e.session_id != ''",
    )
    assert orphans == [(0,)]
    unlinked = sum(1 for e in events if (e.get("consent") or {}).get("analytics") is False)
    assert query(settings, "SELECT count() FROM {db}.events WHERE session_id = ''") == [(unlinked,)]
