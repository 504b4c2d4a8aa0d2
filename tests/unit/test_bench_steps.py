"""The bench's step runner: each run's step logs, the last run's kept beside them."""

from __future__ import annotations

from pathlib import Path

from pipeline.bench_steps import keep_previous_logs


def test_a_new_bench_run_keeps_the_last_runs_logs_beside_its_own(tmp_path: Path) -> None:
    logs = tmp_path / "bench" / "logs"
    keep_previous_logs(logs)  # no logs yet: nothing to keep
    assert not logs.with_name("logs.previous").exists()
    logs.mkdir(parents=True)
    (logs / "04-live-run.log").write_text("first run")
    keep_previous_logs(logs)
    assert (tmp_path / "bench" / "logs.previous" / "04-live-run.log").read_text() == "first run"
    assert not logs.exists()
    logs.mkdir()
    (logs / "04-live-run.log").write_text("second run")
    keep_previous_logs(logs)  # the older ones go
    assert (tmp_path / "bench" / "logs.previous" / "04-live-run.log").read_text() == "second run"
