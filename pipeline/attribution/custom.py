"""The ``custom`` attribution model: weights from a rules file analysts edit.

A touch's raw weight is the product of three multipliers, each 1.0 unless
the file says otherwise, and the weights of a path are then normalised to
sum to 1::

    # attribution_rules.toml
    [position]          # first, middle, last; "only" for a one-touch path
    first = 2.0
    last = 2.0
    middle = 1.0

    [channel]           # any channel name of the journeys stage
    store = 1.5
    direct = 0.5

    [touch_type]        # digital or store_visit
    store_visit = 1.2

A path whose raw weights are all zero (every touch in a channel weighted 0)
falls back to equal shares, so a conversion is never left without credit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import read_toml_file
from pipeline.errors import ConfigError

SECTIONS = {
    "position": frozenset({"first", "middle", "last", "only"}),
    "channel": None,  # any channel name
    "touch_type": frozenset({"digital", "store_visit"}),
}


@dataclass(frozen=True)
class CustomRules:
    """Validated multipliers of the custom model."""

    position: Mapping[str, float] = field(default_factory=dict)
    channel: Mapping[str, float] = field(default_factory=dict)
    touch_type: Mapping[str, float] = field(default_factory=dict)

    def weights(self, channels: Sequence[str], kinds: Sequence[str]) -> list[float]:
        """Normalised weights of a path given its touches' channels and kinds (in path order)."""
        n = len(channels)
        if n == 0:
            return []
        raw = []
        for i, (channel, kind) in enumerate(zip(channels, kinds, strict=True)):
            place = "only" if n == 1 else "first" if i == 0 else "last" if i == n - 1 else "middle"
            raw.append(
                self.position.get(place, 1.0)
                * self.channel.get(channel, 1.0)
                * self.touch_type.get(kind, 1.0)
            )
        total = math.fsum(raw)
        if total <= 0:
            return [1.0 / n] * n
        return [w / total for w in raw]


def load_rules(path: Path) -> CustomRules:
    """Read and validate a rules file; every problem is named with its place in the file."""
    return parse_rules(read_toml_file(path, "custom attribution rules"), str(path))


def parse_rules(doc: Mapping[str, Any], where: str = "rules") -> CustomRules:
    """Validate a parsed rules document."""
    problems: list[str] = []
    sections: dict[str, dict[str, float]] = {}
    for name, value in doc.items():
        if name not in SECTIONS:
            problems.append(f"[{name}]: unknown section (known: {', '.join(SECTIONS)})")
            continue
        if not isinstance(value, dict):
            problems.append(f"{name}: must be a table like [{name}]")
            continue
        allowed = SECTIONS[name]
        table: dict[str, float] = {}
        for key, weight in value.items():
            if allowed is not None and key not in allowed:
                problems.append(f"[{name}] {key}: unknown key (known: {', '.join(sorted(allowed))})")
            elif isinstance(weight, bool) or not isinstance(weight, int | float):
                problems.append(f"[{name}] {key}: must be a number, got {weight!r}")
            elif not math.isfinite(weight) or weight < 0:
                problems.append(f"[{name}] {key}: must be a finite number >= 0, got {weight}")
            else:
                table[key] = float(weight)
        sections[name] = table
    if problems:
        raise ConfigError(f"custom attribution rules {where}:\n  " + "\n  ".join(problems))
    return CustomRules(**sections)
