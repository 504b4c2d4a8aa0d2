"""The command line: help for every command, clear errors for bad settings."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli.data import simulate
from pipeline.cli.demo import register as register_demo
from pipeline.cli.main import cli
from pipeline.errors import ConfigError


def full_cli() -> None:
    from pipeline.cli import attribution, collector, data, dlq, privacy

    attribution.register(cli)
    privacy.register(cli)
    data.register(cli)
    register_demo(cli)
    collector.register(cli)
    dlq.register(cli)


full_cli()

COMMANDS = [
    [], ["stack"], ["stack", "up"], ["stack", "status"], ["stack", "down"], ["init"], ["run"],
    ["sql"], ["report"], ["simulate"], ["produce"], ["demo"], ["bench"], ["collector"],
    ["dlq"], ["dlq", "list"], ["dlq", "replay"], ["forget"], ["export"], ["attribution"],
    ["attribution", "fit"],
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "o2o")
def test_every_command_explains_itself(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    # a real description, not just the usage line
    assert len([line for line in result.output.splitlines() if line.strip()]) >= 3


@pytest.mark.parametrize(
    ("variable", "value"),
    [("O2O_PARTITIONS", "many"), ("O2O_BOOTSTRAP_SERVER", "x:1"), ("O2O_CLICKHOUSE_DSN", "ftp://x")],
    ids=["invalid value", "misspelt name", "bad DSN"],
)
def test_bad_settings_give_one_clear_message_and_exit_2(variable: str, value: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "init"],
        env={variable: value, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert variable in proc.stderr
    assert "Traceback" not in proc.stderr


def test_simulate_writes_deterministic_jsonl(tmp_path: pytest.TempPathFactory) -> None:
    runner = CliRunner()
    outs = []
    for name in ("a.jsonl", "b.jsonl"):
        path = tmp_path / name  # type: ignore[operator]
        result = runner.invoke(
            simulate, ["--customers", "20", "--days", "3", "--seed", "5", "--out", str(path)]
        )
        assert result.exit_code == 0, result.output
        outs.append(path.read_bytes())
    assert outs[0] == outs[1]
    assert outs[0].count(b"\n") > 20


def test_forget_suppresses_and_waits_before_it_deletes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Rows in flight are dropped once the suppression reaches them: it goes out, and is read, first."""
    from pipeline.clickhouse import query_server
    from pipeline.identity import erasure

    steps: list[str] = []
    found = erasure.Erasure(["email:x"], persons={"p1"}, person_ids={"p1"}, identifiers={"email:x"})
    monkeypatch.setattr(erasure, "find", lambda *_a: found)
    monkeypatch.setattr(erasure, "publish", lambda *_a: steps.append("publish"))
    waited = (["ingest", "sink"], ["identity"])  # identity runs and had not read it in time
    monkeypatch.setattr(erasure, "wait_until_read", lambda _s, wait: steps.append(f"wait {wait:g}") or waited)
    monkeypatch.setattr(query_server, "erase_any", lambda *_a: steps.append("delete") or {"events": 1})
    monkeypatch.setenv("O2O_STATE_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["forget", "--id", "email:x@example.com", "--wait", "5"])
    assert result.exit_code == 0, result.output
    assert steps == ["publish", "wait 5", "delete"]
    output = " ".join(result.output.split())
    assert "warning: identity had not read the suppression after 5 s" in output
    assert "read by the running ingest, sink before the erasure" in output
    steps.clear()
    result = CliRunner().invoke(cli, ["forget", "--id", "email:x@example.com", "--dry-run"])
    assert result.exit_code == 0 and steps == ["delete"]  # a dry run counts, publishes nothing


def test_the_public_default_salt_is_named_where_pii_is_hashed() -> None:
    from pipeline.config import DEFAULT_SALT, default_salt_warning, load_settings

    warning = default_salt_warning(load_settings(salt=DEFAULT_SALT))
    assert warning is not None and "O2O_SALT is the public default" in warning
    assert default_salt_warning(load_settings(salt="a-secret-of-our-own")) is None
    local = "127.0.0.1:9092,localhost:9093,[::1]:9094,PLAINTEXT://127.0.0.2:9095"
    assert default_salt_warning(load_settings(salt=DEFAULT_SALT, bootstrap_servers=local)) is not None


@pytest.mark.parametrize(
    ("servers", "listen_host", "named"),
    [
        ("kafka.example.com:9092", None, "kafka.example.com"),
        ("127.0.0.1:9092,10.0.0.5:9092", None, "10.0.0.5"),
        ("SASL_SSL://[2001:db8::1]:9093", None, "2001:db8::1"),
        ("127.0.0.1:9092", "0.0.0.0", "0.0.0.0 (the collector's address)"),
    ],
)
def test_the_public_default_salt_is_refused_off_this_machine(
    servers: str, listen_host: str | None, named: str
) -> None:
    from pipeline.config import DEFAULT_SALT, default_salt_warning, load_settings

    settings = load_settings(salt=DEFAULT_SALT, bootstrap_servers=servers)
    with pytest.raises(ConfigError, match=rf"{re.escape(named)} is not on this machine"):
        default_salt_warning(settings, listen_host=listen_host)
    allowed = settings.model_copy(update={"allow_default_salt": True})
    assert default_salt_warning(allowed, listen_host=listen_host) is not None  # allowed, still warned
    own = settings.model_copy(update={"salt": "a-secret-of-our-own"})
    assert default_salt_warning(own, listen_host=listen_host) is None
