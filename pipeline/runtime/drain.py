"""Drain mode: when a stage may stop because everything before it is processed.

A stage drains when every stage upstream of it (in ``run all``) has drained
and it has consumed its input topics up to their current end. Stages that
drained leave a marker file in the state folder, so that processes of one
``run all --drain`` can wait for each other without talking.

A stage may run as several processes (copies), each holding some of its
input partitions. A copy that has drained its own partitions says which in a
file of its own; the stage has drained once those files together name every
input partition. Until then the copies stay in their group, so no partition
moves (and has to be restored and flushed again) while the last ones finish.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.private_files import private_dir

UPSTREAM: dict[str, tuple[str, ...]] = {
    "ingest": (),
    "identity": ("ingest",),
    "journeys": ("identity",),
    "attribution": ("journeys", "activation"),
    "activation": ("identity",),
    "sink": ("ingest", "identity", "journeys", "attribution", "activation"),
}


def marker_dir(settings: Settings) -> Path:
    """Folder of the drain markers of this topic prefix."""
    return settings.state_dir / "run" / settings.topic_prefix.rstrip(".")


def marker(settings: Settings, stage: str) -> Path:
    """The marker a stage writes once it drained."""
    return marker_dir(settings) / f"{stage}.drained"


def copies_dir(settings: Settings, stage: str) -> Path:
    """Folder where each process of a stage says which partitions it drained."""
    return marker_dir(settings) / f"{stage}.copies"


def clear_markers(settings: Settings, stages: Sequence[str]) -> None:
    """Remove old markers before a new drain run."""
    for stage in stages:
        marker(settings, stage).unlink(missing_ok=True)
        shutil.rmtree(copies_dir(settings, stage), ignore_errors=True)


class DrainGate:
    """Tells a draining stage whether its upstream stages are done."""

    def __init__(
        self, settings: Settings, stage: str, wait_for: Sequence[str], process_name: str | None = None
    ) -> None:
        self.settings = settings
        self.stage = stage
        self.wait_for = tuple(wait_for)
        self._open = not self.wait_for
        self.process_name = process_name or str(os.getpid())  # names this process's own file
        # files written before this process started are an earlier drain's (a stage
        # drained on its own, `o2o run STAGE --drain`, leaves them for the next one);
        # less a file system clock tick, which may lag time.time()
        self.started = time.time() - 0.1
        self._drained: set[str] = set()

    def upstream_done(self) -> bool:
        """True once every awaited stage has left its marker."""
        if not self._open:
            self._open = all(marker(self.settings, s).exists() for s in self.wait_for)
        return self._open

    def stage_done(self) -> bool:
        """True once this stage's marker is there (every input partition drained, by some copy)."""
        return self._current(marker(self.settings, self.stage))

    def _current(self, path: Path) -> bool:
        """True when ``path`` was written during this drain (not before this process started)."""
        try:
            return path.stat().st_mtime >= self.started
        except OSError:
            return False

    def mark_copy_done(
        self, drained: Iterable[str], every: Iterable[str], figures: Mapping[str, float] | None = None
    ) -> bool:
        """Say this process drained the input partitions ``drained``; True once the stage has drained.

        ``every`` names all of the stage's input partitions. When the copies'
        files together name each of them, the stage's marker is left for the
        stages downstream, with each figure's largest value over the copies.
        A copy that held no partition names none; one given more since names
        them all the next time.
        """
        folder = copies_dir(self.settings, self.stage)
        private_dir(folder)
        self._drained.update(drained)
        own = folder / f"{self.process_name}.json"
        _write_json(own, {"partitions": sorted(self._drained), "figures": dict(figures or {})})
        covered: set[str] = set()
        largest: dict[str, float] = {}
        for path in folder.glob("*.json"):
            if not self._current(path):
                continue
            found = _read_json(path)
            covered.update(found.get("partitions", []))
            for name, value in (found.get("figures") or {}).items():
                largest[name] = max(largest.get(name, value), value)
        if not set(every) <= covered:
            return False
        _write_json(marker(self.settings, self.stage), {"drained_at": time.time(), **largest})
        return True


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Write ``value`` so that a reader sees the old file or the whole new one, never half of it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(value))
    os.replace(partial, path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def drain_figures(settings: Settings, stage: str) -> dict[str, float]:
    """What ``stage`` left in its marker when it drained (empty without a marker)."""
    return {str(k): float(v) for k, v in _read_json(marker(settings, stage)).items()}
