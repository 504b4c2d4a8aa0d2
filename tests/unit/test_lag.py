"""Consumer lag arithmetic: records behind, records lost to retention, a backlog near retention."""

from __future__ import annotations

import pytest

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
    assert stage.lag == 9
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


class _Broker:
    def __init__(self, broker_id: int) -> None:
        self.id, self.host, self.port = broker_id, "127.0.0.1", 9092


class _Metadata:
    cluster_id, controller_id, topics = "c1", 1, {}  # type: ignore[var-annotated]
    brokers = {1: _Broker(1)}


class _AnsweringAdmin:
    """A broker that answers metadata, then fails the next request."""

    def list_topics(self, timeout: float = -1) -> _Metadata:
        return _Metadata()

    def describe_configs(self, *_args: object, **_kwargs: object) -> dict[str, object]:
        from confluent_kafka import KafkaError, KafkaException

        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "DescribeConfigs timed out"))


@pytest.mark.parametrize("failing", ["offsets", "configs"])
def test_status_reports_a_request_that_fails_after_the_broker_answered(
    failing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An alert in the reading, so `o2o status --watch` goes on, instead of a traceback."""
    from pipeline import status
    from pipeline.config import load_settings
    from pipeline.errors import KafkaUnavailable

    def lags(*_args: object, **_kwargs: object) -> dict[str, StageLag]:
        if failing == "offsets":
            raise KafkaUnavailable("cannot read offsets from Kafka at x: ListOffsets timed out")
        return {"ingest": StageLag("ingest", "o2o.ingest", (PartitionLag("o2o.raw.web", 0, 0, 5, 2),))}

    monkeypatch.setattr(status, "admin_client", lambda _settings: _AnsweringAdmin())
    monkeypatch.setattr(status, "measure_lag", lags)
    reading = status.gather(load_settings(), stages=("ingest",), clickhouse=False)
    expected = "ListOffsets timed out" if failing == "offsets" else "DescribeConfigs timed out"
    assert reading.broker_error is not None and expected in reading.broker_error
    assert reading.brokers == ("1 127.0.0.1:9092",) and reading.cluster_id == "c1"
    assert any("answered, but reading offsets failed" in alert for alert in reading.alerts)


class _Consumer:
    """Stands for confluent-kafka's Consumer: counts how many are made and closed."""

    made: list[_Consumer] = []

    def __init__(self, _conf: dict[str, object]) -> None:
        self.closed = False
        self.assigned: list[object] = []
        type(self).made.append(self)

    def assign(self, partitions: list[object]) -> None:
        self.assigned = partitions

    def unassign(self) -> None:
        self.assigned = []

    def consume(self, _n: int, timeout: float = 0) -> list[object]:
        from confluent_kafka import KafkaError

        class EndOf:
            def __init__(self, tp: object) -> None:
                self.tp = tp

            def topic(self) -> str:
                return self.tp.topic  # type: ignore[attr-defined,no-any-return]

            def partition(self) -> int:
                return self.tp.partition  # type: ignore[attr-defined,no-any-return]

            def error(self) -> KafkaError:
                return KafkaError(KafkaError._PARTITION_EOF)

        return [EndOf(tp) for tp in self.assigned]

    def pause(self, _partitions: list[object]) -> None:
        return

    def committed(self, wanted: list[object], timeout: float = 0) -> list[object]:
        for tp in wanted:
            tp.offset = 3  # type: ignore[attr-defined]
        return wanted

    def close(self) -> None:
        self.closed = True


def test_a_lag_watch_keeps_its_consumers_from_one_check_to_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.config import load_settings
    from pipeline.kafka import admin, lag

    monkeypatch.setattr(lag, "Consumer", _Consumer)
    monkeypatch.setattr(admin, "Consumer", _Consumer)
    _Consumer.made = []
    settings = load_settings()
    readers = lag.LagReaders(settings)
    for _check in range(3):
        assert lag.record_times(settings, {("t", 0): 5}, consumer=readers.times()) == {}
        assert admin.group_offsets(settings, "g", [("t", 0)], 1.0, consumer=readers.committed("g")) == {
            ("t", 0): 3
        }
    assert len(_Consumer.made) == 2 and not any(c.closed for c in _Consumer.made)
    assert _Consumer.made[0].assigned == []  # left without an assignment between checks
    readers.close()
    assert all(c.closed for c in _Consumer.made)
    _Consumer.made = []
    lag.record_times(settings, {("t", 0): 5})  # without readers: made and closed each time
    assert len(_Consumer.made) == 1 and _Consumer.made[0].closed
