"""Drain mode: when a stage may stop because everything before it is processed.

A stage drains when every stage upstream of it (in ``run all``) has drained
and it has consumed its input topics up to their current end. Stages that
drained leave a marker file in the state folder, so that processes of one
``run all --drain`` can wait for each other without talking.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

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


def clear_markers(settings: Settings, stages: Sequence[str]) -> None:
    """Remove old markers before a new drain run."""
    for stage in stages:
        marker(settings, stage).unlink(missing_ok=True)


class DrainGate:
    """Tells a draining stage whether its upstream stages are done."""

    def __init__(self, settings: Settings, stage: str, wait_for: Sequence[str]) -> None:
        self.settings = settings
        self.stage = stage
        self.wait_for = tuple(wait_for)
        self._open = not self.wait_for

    def upstream_done(self) -> bool:
        """True once every awaited stage has left its marker."""
        if not self._open:
            self._open = all(marker(self.settings, s).exists() for s in self.wait_for)
        return self._open

    def mark_done(self, figures: Mapping[str, float] | None = None) -> None:
        """Leave this stage's marker for the stages downstream: JSON, when it drained and ``figures``."""
        path = marker(self.settings, self.stage)
        private_dir(path.parent)
        path.write_text(json.dumps({"drained_at": time.time(), **(figures or {})}))


def drain_figures(settings: Settings, stage: str) -> dict[str, float]:
    """What ``stage`` left in its marker when it drained (empty without a marker)."""
    try:
        found = json.loads(marker(settings, stage).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in found.items()} if isinstance(found, dict) else {}
