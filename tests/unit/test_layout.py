"""Whether a stateful stage's changelogs line up with its input, and what init would grow."""

from __future__ import annotations

from pipeline.config import load_settings
from pipeline.kafka import topics
from pipeline.kafka.layout import growth, layout_problems

SETTINGS = load_settings(topic_prefix="p.", partitions=4)


def counts_as_declared(identity_workers: int = 1) -> dict[str, int]:
    """Partitions of every topic as `o2o init` creates them."""
    declared = SETTINGS.model_copy(update={"identity_workers": identity_workers})
    return {name: partitions for name, partitions, _c in topics.topic_specs(declared)}


def test_topics_as_declared_line_up() -> None:
    for stage in topics.STATE_TABLES:
        assert layout_problems(SETTINGS, stage, counts_as_declared()) == []
    assert growth(SETTINGS, counts_as_declared()) == {}
    assert layout_problems(SETTINGS, "journeys", {}) == []  # nothing created yet


def test_a_changelog_with_other_partitions_than_the_input_is_named() -> None:
    counts = counts_as_declared()
    counts["p.events.identified"] = 6
    problems = layout_problems(SETTINGS, "journeys", counts)
    assert len(problems) == 4  # three tables and the epochs
    assert (
        "p.journeys-journeys_state-changelog has 4 partitions, the input p.events.identified has 6"
        in problems
    )
    assert layout_problems(SETTINGS, "attribution", counts) == []


def test_identity_workers_changed_either_way_is_named() -> None:
    sequenced = SETTINGS.model_copy(update={"identity_workers": 3})
    problems = layout_problems(sequenced, "identity", counts_as_declared(identity_workers=1))
    assert problems[-1].startswith("if O2O_IDENTITY_WORKERS was 1 before (now 3)")
    problems = layout_problems(SETTINGS, "identity", counts_as_declared(identity_workers=2))
    assert problems[-1].startswith("if O2O_IDENTITY_WORKERS was more than 1 before (now 1)")


def test_init_would_grow_only_topics_with_fewer_partitions() -> None:
    counts = counts_as_declared()
    counts["p.raw.web"] = 2
    counts["p.journeys"] = 8  # more than declared: left alone
    assert growth(SETTINGS, counts) == {"p.raw.web": (2, 4)}
