"""Each input partition handled in offset order, with no hole, whatever the consumer delivers.

faust's fetcher can hand a stage a partition's records with a hole in them:
after it seeks back to the committed offsets (at every start and after every
rebalance), records fetched before the seek may still come through; it then
counts the offsets it jumped over as done (it takes them for transaction
markers or compacted records) and drops the records that the seek brings back.
A stage's inputs have neither markers nor compaction, so a hole there always
means records that were never handled, and committing past them loses them.

:class:`InputOrder` decides, record by record, what the stage does with what
it was handed: handle it (the next offset of its partition), let it pass as a
repeat (an offset already handled or committed), or hold it (past a hole: not
handled, not acknowledged) and have the consumer read the partition again from
the hole. Pure bookkeeping; the faust wiring acts on its verdicts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from enum import Enum
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Partition = TypeVar("Partition", bound=Hashable)

RESEEK_SECONDS = 1.0
"""How long a hole may stay open before the partition is read again from it once more.

A seek back does not stop records fetched before it from coming through
first, and faust drops the records the seek brings back when one of those
came later; the next seek, once they are gone, brings the hole's records.
"""


class Verdict(Enum):
    """What the stage does with one record it was handed."""

    HANDLE = "handle"
    """The next offset of its partition: handle it and acknowledge it."""
    REPEAT = "repeat"
    """Already handled here, or committed: acknowledge it without handling it again."""
    HOLD = "hold"
    """Past a hole: neither handle nor acknowledge it; the partition is read again from the hole."""


class InputOrder(Generic[Partition]):
    """Tracks, per input partition, the next offset the stage must handle, and the holes to re-read."""

    def __init__(
        self, stage: str, reseek_seconds: float = RESEEK_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stage = stage
        self.reseek_seconds = reseek_seconds
        self.clock = clock
        self._next: dict[Partition, int] = {}
        self._holes: dict[Partition, float | None] = {}  # when last read again; None: not yet
        self._fetched: dict[Partition, tuple[int, int, float]] = {}  # (position, next, since when)
        self.holes_found = 0

    def sort(self, partition: Partition, offset: int, start: int) -> Verdict:
        """The verdict on the record at ``offset``.

        ``start`` is where the partition's reading starts: the group's
        committed offset, or the log's first offset if nothing is committed.
        """
        expected = self._next.get(partition, start)
        if offset == expected:
            self._next[partition] = offset + 1
            self._holes.pop(partition, None)
            return Verdict.HANDLE
        self._next[partition] = expected
        if offset < expected:
            return Verdict.REPEAT
        if partition not in self._holes:
            self._open_hole(partition, expected, offset, f"were not handed over before offset {offset}")
        return Verdict.HOLD

    def watch(self, positions: Mapping[Partition, int], starts: Mapping[Partition, int]) -> None:
        """Open a hole where the consumer fetched past the next offset and nothing came since.

        ``positions`` are the consumer's fetch positions (the next offset it
        will fetch); ``starts`` where reading starts on the partitions that
        have brought no record yet. Records it fetched reach the stage within
        a batch window; a position past the next offset that stays as it is
        for :attr:`reseek_seconds` while the stage handles nothing of the
        partition means fetched records were never handed over, at the tail
        where no later record shows the hole (or all of them, so far).
        """
        now = self.clock()
        for partition, position in positions.items():
            expected = self._next.get(partition, starts.get(partition))
            if expected is None or position <= expected or partition in self._holes:
                self._fetched.pop(partition, None)
                continue
            seen = self._fetched.get(partition)
            if seen is None or seen[:2] != (position, expected):
                self._fetched[partition] = (position, expected, now)
            elif now - seen[2] >= self.reseek_seconds:
                del self._fetched[partition]
                self._next[partition] = expected
                self._open_hole(partition, expected, position, "were fetched but not handed over")

    def _open_hole(self, partition: Partition, first: int, end: int, how: str) -> None:
        """Count and log a hole of offsets ``first`` to ``end - 1``, to be read again."""
        self.holes_found += 1
        self._holes[partition] = None
        log.warning("%s: offsets %d to %d of %s %s; reading them again", self.stage, first, end - 1,
                    partition, how)  # fmt: skip

    def seeks_due(self) -> dict[Partition, int]:
        """Partitions to read again from their hole now, with the offset to seek to."""
        now = self.clock()
        due: dict[Partition, int] = {}
        for partition, last in self._holes.items():
            if last is None or now - last >= self.reseek_seconds:
                self._holes[partition] = now
                due[partition] = self._next[partition]
        return due

    def next_offset(self, partition: Partition) -> int | None:
        """The offset the stage must handle next on ``partition``, once a record of it was sorted."""
        return self._next.get(partition)

    def knows(self, partition: Partition) -> bool:
        """True once a record of ``partition`` was sorted since it came here."""
        return partition in self._next

    def restart_at(self, partition: Partition, offset: int) -> None:
        """The log no longer holds the records before ``offset`` (retention): carry on from there."""
        expected = self._next.get(partition)
        if expected is not None and offset > expected:
            log.error("%s: offsets %d to %d of %s were deleted from the log before this stage read "
                      "them; they are lost to it", self.stage, expected, offset - 1, partition)  # fmt: skip
            self._next[partition] = offset

    def forget(self, partitions: Iterable[Partition]) -> None:
        """The partitions went away (a rebalance): start again from the committed offset if they return."""
        for partition in partitions:
            self._next.pop(partition, None)
            self._holes.pop(partition, None)
            self._fetched.pop(partition, None)

    @property
    def open_holes(self) -> int:
        """How many partitions are waiting for the records of a hole."""
        return len(self._holes)
