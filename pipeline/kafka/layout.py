"""The partition layout a stateful stage's state was built with, checked before the stage starts.

A stateful stage keeps each input partition's state in the same partition of
its changelog topics. If the input and the changelogs stop having the same
number of partitions, state and input no longer line up: keys whose
partition moved meet an empty state, and two partitions' state is read as
one. That happens when partitions are added to existing topics, or when
``O2O_IDENTITY_WORKERS`` moves between 1 (identity reads ``events.valid``)
and more (it reads the one-partition ``identity.sequence``). The stage then
refuses to start, and ``o2o init`` refuses to add partitions unless told to.
"""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.kafka import topics

PROCEDURE = "docs/operations.md#changing-the-partition-count"


def layout_problems(settings: Settings, stage: str, counts: Mapping[str, int]) -> list[str]:
    """Why ``stage``'s changelogs do not line up with its input (``counts``: partitions by full name)."""
    source = settings.topic(topics.stage_input(settings, stage))
    have = counts.get(source)
    if have is None:
        return []  # nothing to line up with yet: o2o init or faust creates both
    problems = []
    for name, _partitions, _config in topics.changelog_specs(settings):
        if name.startswith(f"{settings.group(stage)}-") and name in counts and counts[name] != have:
            problems.append(f"{name} has {counts[name]} partitions, the input {source} has {have}")
    if problems and stage == "identity":
        other = "more than 1" if settings.identity_workers == 1 else "1"
        problems.append(
            f"if O2O_IDENTITY_WORKERS was {other} before (now {settings.identity_workers}), set it back: "
            "identity's state is laid out for the input it read then"
        )
    return problems


def check_layout(settings: Settings, stage: str, counts: Mapping[str, int]) -> None:
    """Raise ConfigError, with every problem and the way out, when ``stage``'s state does not line up."""
    problems = layout_problems(settings, stage, counts)
    if problems:
        raise ConfigError(
            f"{stage}: its state does not line up with its input partitions, so it would split "
            f"or mix state: {'; '.join(problems)}. To change the partition count, replay into a "
            f"new topic prefix ({PROCEDURE})"
        )


def growth(settings: Settings, counts: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """Existing topics ``o2o init`` would give more partitions: name -> (now, declared)."""
    return {
        name: (counts[name], partitions)
        for name, partitions, _config in topics.topic_specs(settings)
        if name in counts and counts[name] < partitions
    }
