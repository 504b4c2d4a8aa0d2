"""The arithmetic of ``o2o bench``, pure and unit-tested.

Percentiles of latencies, the steady-state window of a progress series, the
records a consumer group has consumed given its committed offsets, the
figures per input event of every topic, and which events the live mode still
has to look for, and how long events took between the live mode's hops.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from pipeline.runtime.stage_child import command_of

FORK_SERVER = "run all (fork server)"

Partition = tuple[str, int]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolating linearly between closest ranks.

    The same definition as numpy's default: rank ``q/100 * (n-1)`` in the sorted
    values. Raises ValueError for no values or ``q`` outside 0..100.
    """
    if not values:
        raise ValueError("no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not within 0..100")
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Phases:
    """Where a run spent its time, from a progress series of its last stage.

    Times are seconds since launch. ``first_output`` is the first sample that
    showed progress (or ``lo_at``, if earlier); ``lo_at`` and ``hi_at`` are when the progress crossed the
    steady window's bounds (interpolated between samples); ``end`` is when the
    run ended.
    """

    first_output: float
    lo_at: float
    hi_at: float
    end: float
    lo: float
    hi: float

    @property
    def startup_s(self) -> float:
        """Launch until the first output."""
        return self.first_output

    @property
    def ramp_s(self) -> float:
        """First output until the window starts."""
        return self.lo_at - self.first_output

    @property
    def steady_s(self) -> float:
        """Length of the steady window."""
        return self.hi_at - self.lo_at

    @property
    def tail_s(self) -> float:
        """End of the window until the run ended (the last part and the drain)."""
        return self.end - self.hi_at

    def rate(self, amount: float) -> float:
        """``amount`` (the whole input, in any unit) per second over the window; inf if it has no length."""
        if self.steady_s <= 0:
            return math.inf
        return amount * (self.hi - self.lo) / self.steady_s


def crossing_time(series: Sequence[tuple[float, float]], level: float) -> float | None:
    """When a non-decreasing series first reaches ``level``, linear between samples; None if never.

    ``series`` holds (seconds, amount) in time order; a dip is treated as no
    change (the running maximum counts).
    """
    prev_t, prev_v = 0.0, 0.0
    best = -math.inf
    for t, value in series:
        value = max(value, best)
        if value >= level:
            if value == prev_v or t == prev_t or prev_v >= level:
                return t
            return prev_t + (level - prev_v) / (value - prev_v) * (t - prev_t)
        best = value
        prev_t, prev_v = t, value
    return None


def steady_window(
    series: Sequence[tuple[float, float]],
    total: float,
    end: float,
    lo: float = 0.1,
    hi: float = 0.9,
) -> Phases | None:
    """The phases of a run whose last stage consumed ``total`` in all, from its progress series.

    The steady window runs from when ``lo`` of ``total`` was consumed to when
    ``hi`` was. None when the series never shows output or never reaches
    ``hi`` (a run stopped early, or ``total`` is 0).
    """
    if total <= 0 or not 0 <= lo < hi <= 1:
        return None
    first = next((t for t, value in series if value > 0), None)
    lo_at = crossing_time(series, lo * total)
    hi_at = crossing_time(series, hi * total)
    if first is None or lo_at is None or hi_at is None:
        return None
    # between two samples the window's start is interpolated, the first output is not: keep them in order
    first = min(first, lo_at)
    return Phases(first_output=first, lo_at=lo_at, hi_at=hi_at, end=max(end, hi_at), lo=lo, hi=hi)


def cumulative(counts: Sequence[int]) -> list[int]:
    """Running totals with a leading 0: ``result[k]`` is the sum of ``counts[:k]``."""
    out = [0]
    for count in counts:
        out.append(out[-1] + count)
    return out


def records_consumed(
    committed: Mapping[Partition, int], running: Mapping[Partition, tuple[int, Sequence[int]]]
) -> int:
    """Records before the committed offsets, given each partition's running record totals.

    ``running[(topic, partition)]`` is (first offset, :func:`cumulative` of the
    records in each message from that offset). A committed offset is the next
    message to read, so everything before it was consumed. Partitions without
    running totals count nothing.
    """
    total = 0
    for tp, offset in committed.items():
        entry = running.get(tp)
        if entry is None:
            continue
        first, sums = entry
        index = min(max(offset - first, 0), len(sums) - 1)
        total += sums[index]
    return total


@dataclass(frozen=True)
class TopicCount:
    """What one topic holds after a run.

    ``messages``: written (end offsets minus start offsets); ``read``: messages
    a consumer got back (fewer on a compacted topic); ``records``: records in
    those (an envelope holds many); ``payload_bytes``: keys plus values as
    read; ``disk_bytes``: the broker's log segments, None when unknown.
    """

    topic: str
    messages: int
    read: int
    records: int
    payload_bytes: int
    disk_bytes: int | None = None


@dataclass(frozen=True)
class PerEvent:
    """A topic's figures divided by the run's input events."""

    topic: str
    messages: float
    records: float
    payload_bytes: float
    disk_bytes: float | None


def per_event(counts: Iterable[TopicCount], events: int, prefix: str = "") -> list[PerEvent]:
    """Each topic's messages, records and bytes per input event, named without ``prefix``, by name.

    Topics that hold nothing are left out. Raises ValueError when ``events`` is not positive.
    """
    if events <= 0:
        raise ValueError("the run had no input events")
    rows = [
        PerEvent(
            topic=count.topic.removeprefix(prefix),
            messages=count.messages / events,
            records=count.records / events,
            payload_bytes=count.payload_bytes / events,
            disk_bytes=None if count.disk_bytes is None else count.disk_bytes / events,
        )
        for count in counts
        if count.messages or count.records
    ]
    return sorted(rows, key=lambda row: row.topic)


def stage_label(cmdline: Sequence[str]) -> str:
    """The name a bench report gives a process: the stage of ``o2o run <stage>``, else its program."""
    args = command_of(cmdline)
    if "from multiprocessing." in " ".join(args):  # its fork server and resource tracker
        return FORK_SERVER
    for i, arg in enumerate(args[:-1]):
        if arg == "run" and ("pipeline.cli" in args[:i] or any(a.endswith("o2o") for a in args[:i])):
            stage = args[i + 1]
            return "run all (supervisor)" if stage == "all" else stage
    return args[0].rsplit("/", 1)[-1] if args else "?"


def hop_seconds(chain: Sequence[Mapping[str, float]], event_ids: Iterable[str]) -> list[list[float]]:
    """Seconds between consecutive points of ``chain`` for each of ``event_ids``.

    ``chain`` holds, in pipeline order, when each event reached a point (event
    id to seconds); hop ``i`` runs from point ``i`` to point ``i + 1`` and
    counts only the events both points know.
    """
    hops: list[list[float]] = [[] for _ in range(max(len(chain) - 1, 0))]
    for event_id in event_ids:
        for i, (start, end) in enumerate(pairwise(chain)):
            a, b = start.get(event_id), end.get(event_id)
            if a is not None and b is not None:
                hops[i].append(b - a)
    return hops
