"""Putting events back in event-time order before sessionising (pure, no Kafka).

Each source (web, app, geofence, pos) arrives on its own raw topic, so after
ingest one source can run hours ahead of another in event time. The buffer
holds events until every active source has passed their time (the watermark
is the minimum over sources of the newest event time seen), then releases
them sorted. A source that sent nothing for ``idle_seconds`` of processing
time stops holding the others back. Events older than what was already
released are let through at once and counted as late.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from typing import Any


class ReorderBuffer:
    """Releases events in event-time order, up to the slowest active source."""

    def __init__(self, idle_seconds: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._heap: list[tuple[int, int, str, dict[str, Any]]] = []
        self._seq = 0
        self._newest: dict[str, int] = {}
        self._last_seen: dict[str, float] = {}
        self.released_up_to = 0
        self.late = 0

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """Buffer one event; returns the late event itself when it is older than what was released."""
        at = event["occurred_at"]
        source = event["source"]
        self._newest[source] = max(self._newest.get(source, at), at)
        self._last_seen[source] = self.clock()
        if at < self.released_up_to:
            self.late += 1
            return [event]
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, event["event_id"], event))
        return []

    def watermark(self) -> int | None:
        """The event time up to which every active source has arrived."""
        now = self.clock()
        active = [t for s, t in self._newest.items() if now - self._last_seen[s] < self.idle_seconds]
        if not active:
            return max(self._newest.values()) if self._newest else None
        return min(active)

    def release(self, everything: bool = False) -> list[dict[str, Any]]:
        """Events at or before the watermark (all of them with ``everything``), oldest first."""
        limit = None if everything else self.watermark()
        out: list[dict[str, Any]] = []
        heap = self._heap
        while heap and (limit is None or heap[0][0] <= limit):
            at, _seq, _eid, event = heapq.heappop(heap)
            self.released_up_to = max(self.released_up_to, at)
            out.append(event)
        return out


class DurableReorder:
    """A :class:`ReorderBuffer` whose held events are also kept in a state table.

    The input offsets of held events are committed like any other, so the
    events themselves must survive a restart: they are written to ``table``
    under ``key_of(event)`` (the key of their source message, so the table's
    changelog partition matches) and put back in the buffer on the first call
    after a restart.
    """

    def __init__(self, key_of: Callable[[dict[str, Any]], str], idle_seconds: float = 5.0) -> None:
        self.buffer = ReorderBuffer(idle_seconds=idle_seconds)
        self.key_of = key_of
        self.table: Any = {}
        self._restored = False

    def bind(self, table: Any) -> None:
        """Keep held events in ``table`` (a faust table or a dict)."""
        self.table = table

    def add_all(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Hold a batch; returns the events that may be processed now, oldest first."""
        self._restore()
        ready: list[dict[str, Any]] = []
        for event in events:
            late = self.buffer.add(event)
            if late:
                ready.extend(late)
            else:
                key = self.key_of(event)
                self.table[key] = [*(self.table.get(key) or ()), event]
        return self._forget(ready + self.buffer.release())

    def release(self, everything: bool = False) -> list[dict[str, Any]]:
        """Events the watermark (or the end of input) lets through."""
        self._restore()
        return self._forget(self.buffer.release(everything=everything))

    def _restore(self) -> None:
        """After a restart, put the events held before it back in the buffer (once)."""
        if self._restored:
            return
        self._restored = True
        for held in list(self.table.values()):
            for event in held or ():
                self.buffer.add(event)

    def _forget(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        by_key: dict[str, set[str]] = {}
        for event in events:
            by_key.setdefault(self.key_of(event), set()).add(event["event_id"])
        for key, ids in by_key.items():
            left = [e for e in self.table.get(key) or () if e["event_id"] not in ids]
            if left:
                self.table[key] = left
            elif key in self.table:
                del self.table[key]
        return events
