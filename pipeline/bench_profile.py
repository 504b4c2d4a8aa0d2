"""``o2o bench --profile``: where each stage process spends its time, sampled with py-spy.

py-spy samples a running process's Python stacks from outside (no
instrumentation, a few percent of overhead), so the stages run as they do
without it. Each stage process gets one ``py-spy record`` over the steady
window; the collapsed stacks it writes (``<state_dir>/bench/profiles``, one
``<stage>-<pid>.txt`` each, the input of flame-graph tools) are summed here
into the share of samples by package and by function.
"""

from __future__ import annotations

import logging
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.private_files import private_dir

log = logging.getLogger(__name__)

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")

PACKAGES: tuple[tuple[str, str], ...] = (
    ("pipeline/", "pipeline (this project)"),
    ("faust/", "faust, mode, aiokafka"),
    ("mode/", "faust, mode, aiokafka"),
    ("aiokafka/", "faust, mode, aiokafka"),
    ("kafka/", "faust, mode, aiokafka"),
    ("confluent_kafka/", "confluent-kafka"),
    ("clickhouse_connect/", "clickhouse-connect, chDB"),
    ("chdb/", "clickhouse-connect, chDB"),
    ("asyncio/", "asyncio"),
    ("uvloop/", "asyncio"),
)


def py_spy() -> str | None:
    """The py-spy executable next to this Python, or on PATH; None when it is not installed."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


@dataclass
class Profile:
    """Samples of one stage: in all, by leaf function (self) and by package of the leaf frame."""

    samples: int = 0
    by_function: Counter[str] = field(default_factory=Counter)
    by_package: Counter[str] = field(default_factory=Counter)

    def add(self, lines: Iterable[str]) -> None:
        """Add py-spy's raw (collapsed) output: ``frame;frame;...;leaf <count>`` per line."""
        for line in lines:
            stack, _, count_text = line.rstrip().rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            leaf = stack.rsplit(";", 1)[-1]
            self.samples += count
            self.by_function[function_name(leaf)] += count
            self.by_package[package_of(leaf)] += count


def function_name(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file.py)``: one entry per function, not per line."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    return f"{match['func']} ({match['file'].rsplit('/', 1)[-1]})"


def package_of(frame: str) -> str:
    """The package group a frame's file belongs to (see :data:`PACKAGES`), else ``other``."""
    match = _FRAME.match(frame)
    path = match["file"] if match else frame
    for marker, name in PACKAGES:
        if path.startswith(marker) or f"/{marker}" in path:
            return name
    return "other (stdlib, orjson, ...)"


class StageProfiler:
    """One ``py-spy record`` per stage process over a window of a running pipeline."""

    def __init__(self, out_dir: Path, rate: int = 100) -> None:
        self.out_dir = out_dir
        self.rate = rate
        self.started = False
        self.stopped = False
        self._spies: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
        self.missing = py_spy() is None

    def start(self, stages: Mapping[int, str]) -> None:
        """Start sampling the processes ``{pid: stage}``."""
        self.started = True
        exe = py_spy()
        if exe is None:
            return
        private_dir(self.out_dir)
        for old in self.out_dir.glob("*.txt"):
            old.unlink()
        for pid, stage in stages.items():
            out = self.out_dir / f"{stage}-{pid}.txt"
            command = [exe, "record", "--pid", str(pid), "--rate", str(self.rate), "--format", "raw"]
            command += ["--output", str(out), "--nonblocking", "--duration", "3600"]
            log_file = (self.out_dir / f"{stage}-{pid}.log").open("wb")
            spy = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
            self._spies.append((stage, out, spy))

    def stop(self) -> None:
        """Stop sampling (py-spy writes its output on SIGINT)."""
        if self.stopped:
            return
        self.stopped = True
        for _stage, _out, spy in self._spies:
            if spy.poll() is None:
                spy.send_signal(signal.SIGINT)
        for stage, _out, spy in self._spies:
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log.warning("py-spy of %s did not stop; killed", stage)
                spy.kill()

    def profiles(self) -> dict[str, Profile]:
        """The samples of every stage (processes of one stage summed)."""
        out: dict[str, Profile] = {}
        for stage, path, _spy in self._spies:
            if path.exists():
                out.setdefault(stage, Profile()).add(path.read_text(errors="replace").splitlines())
        return out


def top_rows(profiles: Mapping[str, Profile], order: Sequence[str], top: int) -> list[list[str]]:
    """Rows for the report: per stage, the packages, then the ``top`` functions by own samples."""
    rows: list[list[str]] = []
    for stage in [s for s in order if s in profiles] + sorted(set(profiles) - set(order)):
        profile = profiles[stage]
        if not profile.samples:
            continue
        rows.append([f"{stage} ({profile.samples:,} samples)", "", ""])
        for name, count in profile.by_package.most_common():
            rows.append([f"  {name}", "package", f"{100 * count / profile.samples:.1f}%"])
        for name, count in profile.by_function.most_common(top):
            rows.append([f"  {name}", "function", f"{100 * count / profile.samples:.1f}%"])
    return rows
