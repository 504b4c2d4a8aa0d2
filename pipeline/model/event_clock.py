"""Event time per input partition, and the persons waiting on it (pure).

A partition's watermark is the newest event time seen on it; after
``idle_seconds`` without input it moves on with the clock, so a quiet
partition still reaches its deadlines -- but only over time the stage
upstream vouched for. A quiet input and a stalled one look alike from
here (no records either way), so identity, whenever it has passed on
everything it was given and ingest says it has read everything there was,
writes a ``progress`` record to every partition of ``events.identified``
(:func:`progress_records`, at every timer tick, every few seconds). An idle
partition's watermark moves on with the clock up to the last such record:
while identity or ingest is down, or behind, it stands still, so the events
they pass on when they are back are not very late. Watermarks are kept in a state table
(one key per partition). Persons wait in a per-partition heap ordered by the
watermark at which they are due, so a watermark step touches only the persons
it concerns; the heap is rebuilt from the state the first time a partition is
seen (after a start or a partition move).
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, MutableMapping
from typing import Any

from pipeline.kafka.envelopes import key_for_partition

PROGRESS = "progress"
"""The control record that vouches for a partition: everything upstream had for it was sent."""


def watermark_key(partition: int, partitions: int) -> str:
    """A state-table key that lands on ``partition``, to keep that partition's watermark."""
    return key_for_partition("watermark", partition, partitions)


def progress_records(partitions: int) -> list[tuple[str, dict[str, Any]]]:
    """(key, record) of a ``progress`` record for every partition of a person-keyed topic."""
    out = []
    for partition in range(partitions):
        key = key_for_partition(PROGRESS, partition, partitions)
        out.append((key, {"record": PROGRESS, "person_id": key, "partition": partition}))
    return out


class PartitionClock:
    """Watermarks of the input partitions a stage has seen, and deadlines per partition."""

    def __init__(self, idle_seconds: float, clock: Callable[[], float]) -> None:
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._vouched_at: dict[int, float] = {}  # partition -> when its last progress record came
        self.partitions = 1
        self.marks: MutableMapping[str, Any] = {}
        self.watermarks: dict[int, int] = {}
        self._last_input: dict[int, float] = {}
        self._clock_mark: dict[int, float] = {}
        self._due: dict[int, list[tuple[int, str]]] = defaultdict(list)

    def bind(self, marks: MutableMapping[str, Any], partitions: int) -> None:
        """Keep the watermarks in ``marks`` (a state table) for inputs of ``partitions`` partitions."""
        self.marks, self.partitions = marks, partitions

    def watch(self, partition: int, deadlines: Callable[[], Iterable[tuple[int, str]]]) -> int:
        """Load a partition's watermark and its ``deadlines`` (deadline, person) the first time it is seen."""
        if partition in self.watermarks:
            return partition
        self.watermarks[partition] = int(self.marks.get(watermark_key(partition, self.partitions)) or 0)
        self._last_input[partition] = self._clock_mark[partition] = self.clock()
        for deadline, person in deadlines():
            heapq.heappush(self._due[partition], (deadline, person))
        return partition

    def release(self, partitions: Collection[int]) -> None:
        """Forget what is known of ``partitions`` (another process holds them now).

        Their watermarks stay in the state table for the new owner; should
        they come back here, :meth:`watch` loads them and rebuilds their
        deadlines from the restored state, as after a start.
        """
        for partition in partitions:
            for known in (self.watermarks, self._due, self._last_input, self._clock_mark, self._vouched_at):
                known.pop(partition, None)

    def schedule(self, partition: int, deadline: int, person: str) -> None:
        """Have ``person`` come out of :meth:`due` once the partition's watermark reaches ``deadline``."""
        heapq.heappush(self._due[partition], (deadline, person))

    def observed(self, newest: dict[int, int]) -> None:
        """Input arrived: partition -> newest event time of it in the batch (watched partitions)."""
        now = self.clock()
        for partition, latest in newest.items():
            self._last_input[partition] = self._clock_mark[partition] = now
            if latest > self.watermarks[partition]:
                self.set(partition, latest)

    def vouch(self, partition: int) -> None:
        """A ``progress`` record came on ``partition``: upstream had sent everything it had for it."""
        self._vouched_at[partition] = self.clock()

    def idle_steps(self) -> list[int]:
        """Move the watermarks of partitions idle for ``idle_seconds`` on with the clock; those moved.

        A watermark moves up to the last time upstream vouched for its partition
        (every ``progress`` record), never over time it was silent.
        """
        moved, now = [], self.clock()
        for partition in list(self.watermarks):
            if now - self._last_input[partition] < self.idle_seconds:
                continue
            until = self._vouched_at.get(partition, -float("inf"))
            if until <= self._clock_mark[partition]:
                continue
            step = int((until - self._clock_mark[partition]) * 1000)
            self._clock_mark[partition] = until
            if step > 0:
                self.set(partition, self.watermarks[partition] + step)
                moved.append(partition)
        return moved

    def set(self, partition: int, value: int) -> None:
        """Set a partition's watermark (kept in the state table)."""
        self.watermarks[partition] = value
        self.marks[watermark_key(partition, self.partitions)] = value

    def due(self, partition: int) -> Iterator[tuple[int, str]]:
        """Pop (deadline, person) entries the partition's watermark has reached, earliest first.

        Entries may be stale (the person was rescheduled since): the caller checks.
        """
        heap, watermark = self._due[partition], self.watermarks[partition]
        while heap and heap[0][0] <= watermark:
            yield heapq.heappop(heap)
