"""Folders the pipeline creates in the state folder are 0700, the token file 0600; secrets read from files."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.clickhouse.client import display_dsn, server_dsn
from pipeline.config import load_settings
from pipeline.errors import ConfigError
from pipeline.private_files import private_dir, write_private_file


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """A umask that lets group and others read, as on most machines."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_folder_created_is_private_and_existing_ones_keep_their_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    made = private_dir(shared / "state" / "faust" / "group")
    assert made.is_dir()
    assert [mode(p) for p in (made, made.parent, made.parent.parent)] == [0o700] * 3
    assert mode(shared) == 0o755
    assert private_dir(made) == made  # already there: nothing changes, no error


def test_the_token_file_is_private_and_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "state" / "clickhouse.endpoint"
    write_private_file(path, b'{"token": "one"}')
    write_private_file(path, b'{"token": "two"}')
    assert path.read_bytes() == b'{"token": "two"}'
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_clickhouse_password_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "clickhouse_password"
    secret.write_text("p@ss:/word\n")
    settings = load_settings(clickhouse_dsn="http://o2o@ch:8123/?secure=0", clickhouse_password_file=secret)
    dsn = server_dsn(settings)
    assert dsn == "http://o2o:p%40ss%3A%2Fword@ch:8123/?secure=0"  # quoted, newline dropped
    assert "word" not in display_dsn(dsn)
    secret.write_text("rotated")
    assert server_dsn(settings) == "http://o2o:rotated@ch:8123/?secure=0"  # read at every connection
    assert server_dsn(load_settings(clickhouse_dsn="http://u:pw@ch:8123")) == "http://u:pw@ch:8123"
    secret.unlink()
    with pytest.raises(ConfigError, match="O2O_CLICKHOUSE_PASSWORD_FILE: cannot read"):
        server_dsn(settings)


@pytest.mark.parametrize(
    ("dsn", "problem"),
    [
        ("http://u:pw@ch:8123", "needs a server DSN without a password"),
        ("", "needs a server DSN without a password"),  # the embedded engine has none
        ("http://u@ch:8123", "O2O_CLICKHOUSE_PASSWORD_FILE: cannot read"),
    ],
)
def test_clickhouse_password_file_is_checked_at_start_up(dsn: str, problem: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    if "cannot read" not in problem:
        secret.write_text("pw")
    with pytest.raises(ConfigError) as raised:
        load_settings(clickhouse_dsn=dsn, clickhouse_password_file=secret, state_dir=tmp_path)
    assert problem in str(raised.value)
