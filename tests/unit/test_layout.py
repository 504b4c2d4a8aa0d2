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


def test_no_topic_keeps_a_record_more_than_a_day_past_its_retention_or_replacement() -> None:
    """The broker deletes and compacts closed segments only: each topic closes one at least daily."""
    from pipeline.kafka.topics import DAY_MS, topic_specs

    specs = topic_specs(load_settings())
    assert all(int(config["segment.ms"]) <= DAY_MS for _name, _p, config in specs)
    compacted = [config for _name, _p, config in specs if config["cleanup.policy"] == "compact"]
    assert len(compacted) > 10  # the compacted topics and every state table's changelog
    for config in compacted:  # a replaced value or a tombstone's predecessor: gone within a day
        assert int(config["max.compaction.lag.ms"]) <= DAY_MS
        assert int(config["delete.retention.ms"]) <= DAY_MS


def test_retention_of_raw_and_intermediate_topics_follows_the_settings() -> None:
    from pipeline.kafka.topics import DAY_MS, topic_specs

    settings = load_settings(topic_prefix="r.", raw_retention_days=30, retention_days=2.5)
    retention = {name: int(config.get("retention.ms", -1)) for name, _p, config in topic_specs(settings)}
    assert retention["r.raw.web"] == retention["r.raw.pos"] == 30 * DAY_MS
    assert retention["r.events.valid"] == retention["r.journeys"] == int(2.5 * DAY_MS)
    assert retention["r.dlq"] == 30 * DAY_MS  # dead letters keep their own 30 days
    assert retention["r.identity.suppressions"] == -1  # compacted: the newest value per key, for ever
