"""Progress marks: ingest tells identity which raw partitions it has read to the end (pure, no Kafka).

Identity's reorder buffer (pipeline/identity/reorder.py) holds events until
every stream ``<origin>><valid partition>`` has passed their time. A stream
that has nothing to say would hold the others back until it goes idle
(``O2O_REORDER_IDLE_SECONDS``), which at low rates is most of the time. Ingest knows better: it knows when it
has read a raw partition (an origin) to its end. It writes that, as a
``progress`` record, to every ``events.valid`` partition, after the events it
describes, so the record reaches identity in order with them:

    {"record": "progress", "partition": 3, "marks": {"web/0": true, "app/1": false, ...},
     "times": {"web/0": 1764000000000, "app/1": 1764000001000, ...}}

``true``: read to the end, so the origin's streams hold nothing back until
their next event; ``false``: reading again. ``times``: the newest event time
passed on from each origin so far. The marks also go out once a
second unchanged: a restarted identity learns them at once, and a stream
whose origin ingest is still reading stays active however slowly its events
come (only a silent ingest lets a stream go idle). A process forgets the
origins of partitions it no longer reads (a rebalance gave them to another).

Identity uses an origin's time only for a stream of it that has not sent
yet (``app/1>0``, say: app and geofence events keep their partition through
ingest, so that stream never sends): it holds back only up to that time
instead of holding everything. A stream that has sent holds at its own
newest time: an origin's newest time says nothing about its other streams
unless its events come in event-time order, and when they do not (devices
that upload late) moving every stream up to it would release held events
early and turn more of them late.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

NO_TIME = -(2**62)


class ProgressMarks:
    """Which origins ingest has read to the end, and when to tell."""

    def __init__(
        self,
        interval_seconds: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        refresh_seconds: float = 1.0,
    ) -> None:
        self.interval_seconds = interval_seconds
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.at_end: dict[str, bool] = {}
        self.newest: dict[str, int] = {}  # the newest event time passed on, per origin
        self._changed = False
        self._sent_at = -float("inf")

    def passed(self, origin: str, occurred_at: int) -> None:
        """An event of ``origin`` that occurred at ``occurred_at`` was passed on: it is being read."""
        if self.at_end.get(origin) is not False:
            self.at_end[origin] = False
            self._changed = True
        if occurred_at > self.newest.get(origin, NO_TIME):
            self.newest[origin] = occurred_at
            self._changed = True

    def reached_end(self, origin: str) -> None:
        """Everything ``origin`` held has been read."""
        if not self.at_end.get(origin):
            self.at_end[origin] = True
            self._changed = True

    def forget(self, origin: str) -> None:
        """``origin`` is no longer read here: its marks are for its new reader to send."""
        self.at_end.pop(origin, None)
        self.newest.pop(origin, None)

    def due(self) -> bool:
        """True when the marks changed an interval after the last ones, or a refresh is due."""
        elapsed = self.clock() - self._sent_at
        if self._changed:
            return elapsed >= self.interval_seconds
        return bool(self.at_end) and elapsed >= self.refresh_seconds

    def records(self, partitions: int) -> list[dict[str, Any]]:
        """One progress record per ``events.valid`` partition; the marks count as sent."""
        self._changed = False
        self._sent_at = self.clock()
        marks = dict(sorted(self.at_end.items()))
        times = dict(sorted(self.newest.items()))
        return [
            {"record": "progress", "partition": p, "marks": marks, "times": times} for p in range(partitions)
        ]
