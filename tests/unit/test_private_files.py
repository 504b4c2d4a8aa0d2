"""Folders the pipeline creates in the state folder are 0700, the token file 0600."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

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
