"""Progress marks: ingest tells identity how far each raw partition has got (pure, no Kafka).

Identity's reorder buffer (pipeline/identity/reorder.py) holds events until
every stream ``<origin>>[valid partition]`` has passed their time. A stream
that carries few events would hold the others back until it goes idle, which
at low rates is most of the time. Ingest knows better: it has read each raw
partition (an origin) up to some event time, and it knows when it has read a
partition to its end. It writes that, as a ``progress`` record, to every
``events.valid`` partition, after the events it describes, so the record
reaches identity in order with them:

    {"record": "progress", "partition": 3, "marks": {"web/0": [1733000000000, true], ...}}

A mark is ``[newest event time passed on, or null; read to the end]``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class ProgressMarks:
    """The newest event time and end-of-partition state of each origin, and when to tell."""

    def __init__(self, interval_seconds: float = 0.1, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_seconds = interval_seconds
        self.clock = clock
        self.newest: dict[str, int] = {}
        self.at_end: set[str] = set()
        self._changed = False
        self._sent_at = -float("inf")

    def passed(self, origin: str, occurred_at: int) -> None:
        """An event of ``origin`` was passed on."""
        if occurred_at > self.newest.get(origin, -(2**62)):
            self.newest[origin] = occurred_at
            self._changed = True
        if origin in self.at_end:
            self.at_end.discard(origin)
            self._changed = True

    def reached_end(self, origin: str) -> None:
        """Everything ``origin`` held has been read."""
        if origin not in self.at_end:
            self.at_end.add(origin)
            self._changed = True

    def due(self) -> bool:
        """True when something changed and the last marks went out at least an interval ago."""
        return self._changed and self.clock() - self._sent_at >= self.interval_seconds

    def records(self, partitions: int) -> list[dict[str, Any]]:
        """One progress record per ``events.valid`` partition; the marks count as sent."""
        self._changed = False
        self._sent_at = self.clock()
        origins = sorted(self.newest.keys() | self.at_end)
        marks = {origin: [self.newest.get(origin), origin in self.at_end] for origin in origins}
        return [{"record": "progress", "partition": p, "marks": marks} for p in range(partitions)]
