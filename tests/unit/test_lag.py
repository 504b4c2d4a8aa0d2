"""Consumer lag arithmetic: records behind, records lost to retention, a backlog near retention."""

from __future__ import annotations

from pipeline.kafka.lag import PartitionLag, StageLag, near_retention

HOUR = 3600.0


def test_lag_counts_from_the_committed_offset_or_the_logs_start() -> None:
    assert PartitionLag("t", 0, start=0, end=10, committed=4).lag == 6
    assert PartitionLag("t", 0, start=3, end=10, committed=None).lag == 7  # never committed: all it holds
    deleted = PartitionLag("t", 0, start=8, end=10, committed=5)
    assert (deleted.lag, deleted.lost) == (2, 3)  # 5, 6 and 7 went before the stage read them
    assert PartitionLag("t", 0, start=0, end=10, committed=None).lost == 0


def test_the_backlog_age_is_that_of_the_oldest_waiting_record() -> None:
    stage = StageLag("s", "g", (
        PartitionLag("t", 0, 0, 10, 4, oldest_unacknowledged_at=100.0, newest_acknowledged_at=90.0),
        PartitionLag("t", 1, 0, 10, 10, oldest_unacknowledged_at=50.0, newest_acknowledged_at=95.0),  # done
        PartitionLag("u", 0, 0, 5, 2, oldest_unacknowledged_at=120.0),
    ))  # fmt: skip
    assert stage.oldest_age(160.0) == 60.0
    assert stage.lag == 9 and stage.by_topic() == {"t": 6, "u": 3}
    assert stage.newest_acknowledged_at == 95.0
    assert StageLag("s", "g", ()).oldest_age(160.0) is None


def test_a_backlog_alerts_past_its_share_of_the_topics_retention() -> None:
    old = PartitionLag("t", 0, 0, 10, 4, oldest_unacknowledged_at=0.0)
    kept = PartitionLag("forever", 0, 0, 10, 4, oldest_unacknowledged_at=0.0)
    done = PartitionLag("t", 1, 0, 10, 10, oldest_unacknowledged_at=0.0)
    stage = StageLag("s", "g", (old, kept, done))
    retention = {"t": int(10 * HOUR * 1000), "forever": -1}
    assert near_retention(stage, retention, 0.5, now=4 * HOUR) == []
    assert near_retention(stage, retention, 0.5, now=6 * HOUR) == [(old, 6 * HOUR, 10 * HOUR)]
    assert near_retention(stage, retention, 0.7, now=6 * HOUR) == []
