"""The bench's pure helpers: percentiles, the steady-state window, per-event ratios, profiles."""

from __future__ import annotations

import math

import pytest

from pipeline.bench_profile import Profile, top_rows
from pipeline.bench_stats import (
    Phases,
    TopicCount,
    crossing_time,
    cumulative,
    hop_seconds,
    per_event,
    percentile,
    records_consumed,
    stage_label,
    steady_window,
)


class TestPercentile:
    def test_matches_linear_interpolation_between_ranks(self) -> None:
        values = [1.0, 2.0, 3.0, 4.0]
        assert percentile(values, 0) == 1.0
        assert percentile(values, 100) == 4.0
        assert percentile(values, 50) == pytest.approx(2.5)
        assert percentile(values, 25) == pytest.approx(1.75)

    def test_order_of_values_does_not_matter(self) -> None:
        values = [float(v) for v in range(1, 101)]
        assert percentile(list(reversed(values)), 99) == pytest.approx(99.01)
        assert percentile(values, 95) == pytest.approx(95.05)

    def test_one_value_is_every_percentile(self) -> None:
        assert percentile([0.7], 50) == percentile([0.7], 99) == 0.7

    def test_rejects_no_values_and_bad_q(self) -> None:
        with pytest.raises(ValueError):
            percentile([], 50)
        with pytest.raises(ValueError):
            percentile([1.0], 101)


class TestSteadyWindow:
    def test_linear_progress_after_a_start_up(self) -> None:
        # nothing for 5 s, then 100 units/s until 1,000 at 15 s; the run ends at 18 s
        series = [(t / 2, max(0.0, (t / 2 - 5) * 100)) for t in range(37)]
        phases = steady_window(series, total=1000, end=18.0)
        assert phases is not None
        assert phases.startup_s == pytest.approx(5.5)  # the first sample that shows output
        assert phases.lo_at == pytest.approx(6.0)
        assert phases.hi_at == pytest.approx(14.0)
        assert phases.steady_s == pytest.approx(8.0)
        assert phases.tail_s == pytest.approx(4.0)
        assert phases.rate(1000) == pytest.approx(100.0)
        # the input counted in other units: same window, scaled
        assert phases.rate(50_000) == pytest.approx(5000.0)

    def test_window_excludes_a_slow_start_and_a_slow_end(self) -> None:
        series = [
            (1.0, 0.0),
            (2.0, 50.0),
            (3.0, 100.0),
            (4.0, 500.0),
            (5.0, 900.0),
            (9.0, 950.0),
            (20.0, 1000.0),
        ]
        phases = steady_window(series, total=1000, end=21.0)
        assert phases is not None
        assert phases.startup_s == 2.0
        assert phases.lo_at == pytest.approx(3.0)
        assert phases.hi_at == pytest.approx(5.0)
        assert phases.rate(1000) == pytest.approx(400.0)
        assert phases.startup_s + phases.ramp_s + phases.steady_s + phases.tail_s == pytest.approx(21.0)

    def test_interpolates_within_one_sampling_interval(self) -> None:
        phases = steady_window([(0.0, 0.0), (1.0, 0.0), (2.0, 1000.0)], total=1000, end=2.0)
        assert phases is not None
        assert phases.lo_at == pytest.approx(1.1)
        assert phases.hi_at == pytest.approx(1.9)
        assert phases.startup_s == pytest.approx(1.1)  # not after the window's start

    def test_a_dip_in_the_series_counts_as_no_progress(self) -> None:
        assert crossing_time([(1.0, 60.0), (2.0, 40.0), (3.0, 100.0)], 80.0) == pytest.approx(2.5)

    def test_none_when_the_end_is_never_reached(self) -> None:
        assert steady_window([(1.0, 10.0), (2.0, 50.0)], total=100, end=3.0) is None
        assert steady_window([(1.0, 0.0), (2.0, 0.0)], total=100, end=3.0) is None
        assert steady_window([], total=0, end=1.0) is None

    def test_rate_without_length_is_infinite(self) -> None:
        phases = Phases(first_output=1.0, lo_at=2.0, hi_at=2.0, end=3.0, lo=0.1, hi=0.9)
        assert math.isinf(phases.rate(1))


class TestRecordsConsumed:
    def test_counts_records_before_the_committed_offset(self) -> None:
        running = {("rows", 0): (0, cumulative([3, 1, 4])), ("rows", 1): (10, cumulative([2, 2]))}
        assert cumulative([3, 1, 4]) == [0, 3, 4, 8]
        assert records_consumed({("rows", 0): 2, ("rows", 1): 11}, running) == 4 + 2
        # at or past the end: everything; before the start: nothing; unknown partitions: nothing
        assert records_consumed({("rows", 0): 99, ("rows", 1): 3, ("other", 0): 5}, running) == 8


class TestPerEvent:
    def test_divides_by_input_events_and_names_without_prefix(self) -> None:
        changelog = "bench.identity-identity_ids-changelog"
        counts = [
            TopicCount("bench.raw.web", messages=600, read=600, records=600, payload_bytes=300_000),
            TopicCount(
                "bench.events.valid", 10, read=10, records=1000, payload_bytes=700_000, disk_bytes=250_000
            ),
            TopicCount(changelog, messages=2000, read=1500, records=1500, payload_bytes=90_000),
            TopicCount("bench.dlq", messages=0, read=0, records=0, payload_bytes=0),
        ]
        rows = per_event(counts, 1000, prefix="bench.")
        assert [row.topic for row in rows] == ["events.valid", "identity-identity_ids-changelog", "raw.web"]
        valid = rows[0]
        assert (valid.messages, valid.records, valid.payload_bytes, valid.disk_bytes) == (
            0.01,
            1.0,
            700.0,
            250.0,
        )
        assert rows[1].messages == 2.0 and rows[1].records == 1.5 and rows[1].disk_bytes is None

    def test_needs_input_events(self) -> None:
        with pytest.raises(ValueError):
            per_event([], 0)


def test_stage_label_names_stage_processes() -> None:
    assert stage_label(["/v/bin/python", "-m", "pipeline.cli", "run", "journeys", "--drain"]) == "journeys"
    assert stage_label(["python", "-m", "pipeline.cli", "--log-level", "WARNING", "run", "all"]) == (
        "run all (supervisor)"
    )
    assert stage_label(["/v/bin/o2o", "run", "sink"]) == "sink"
    assert stage_label(["/usr/bin/java", "-Xmx1g", "kafka.Kafka"]) == "java"


class TestProfile:
    def test_collapsed_stacks_sum_by_leaf_function_and_package(self) -> None:
        lines = [
            "run (pipeline/runtime/faust_stage.py:10);process (pipeline/identity/stage.py:80) 7",
            "run (pipeline/runtime/faust_stage.py:10);process (pipeline/identity/stage.py:95) 3",
            "run (faust/streams.py:5);select (selectors.py:468) 5",
            "garbage without a count",
            "_run (/x/site-packages/confluent_kafka/cimpl.py:1) 5",
        ]
        profile = Profile()
        profile.add(lines)
        assert profile.samples == 20
        assert profile.by_function == {
            "process (stage.py)": 10,
            "select (selectors.py)": 5,
            "_run (cimpl.py)": 5,
        }
        assert profile.by_package == {
            "pipeline (this project)": 10,
            "other (stdlib, orjson, ...)": 5,
            "confluent-kafka": 5,
        }
        rows = top_rows({"identity": profile, "sink": Profile()}, ["identity", "sink"], top=1)
        assert rows[0] == ["identity (20 samples)", "", ""]
        assert ["  process (stage.py)", "function", "50.0%"] in rows
        assert len([r for r in rows if r[1] == "function"]) == 1  # top=1; the empty sink is left out


def test_a_run_that_stored_almost_nothing_fails_the_bench() -> None:
    from pipeline.bench_steps import StepFailed
    from pipeline.bench_throughput import check_stored

    check_stored({"events_store": 50_000, "sessions_store": 10}, 50_000)
    check_stored({"events_store": 49_600}, 50_000)
    with pytest.raises(StepFailed, match="stored 0 of 50,000 events"):
        check_stored({"events_store": 0, "sessions_store": 0}, 50_000)
    with pytest.raises(StepFailed, match="stored 40,000 of 50,000"):
        check_stored({"events_store": 40_000}, 50_000)


def test_hop_seconds_are_the_gaps_between_consecutive_points_of_each_event() -> None:
    sent = {"a": 0.0, "b": 1.0, "c": 2.0}
    valid = {"a": 0.5, "b": 1.25}  # c never got there
    identified = {"a": 2.0, "b": 1.5, "c": 3.0, "z": 9.0}  # z was not sent in the window asked for
    assert hop_seconds([sent, valid, identified], ["a", "b", "c"]) == [[0.5, 0.25], [1.5, 0.25]]
    assert hop_seconds([sent], ["a"]) == []
