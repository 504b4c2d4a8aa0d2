"""Folders and files only the user running the pipeline may read.

The state folder holds the embedded ClickHouse data, faust's data, the
broker's logs and the query server's endpoint file with its tokens: the
folders the pipeline creates there are 0700, the token file 0600. Folders
that already exist keep their mode (the pipeline never loosens or tightens
what an operator set).
"""

from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: Path) -> Path:
    """``path``, created with every missing parent as 0700 (the umask can only tighten that)."""
    missing: list[Path] = []
    folder = path
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    return path


def read_secret(path: Path, setting: str) -> str:
    """A secret kept in a file (a mounted secret), without its trailing newline."""
    try:
        return path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``path`` as 0600, atomically (a reader sees the old content or the new, whole)."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
