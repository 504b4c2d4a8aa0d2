"""Putting events back in event-time order before identity resolution (pure, no Kafka).

Each source (web, app, geofence, pos) arrives on its own raw topic, so after
ingest one source can run hours ahead of another in event time, and one
input partition ahead of another (a consumer fetches partitions in chunks).
The buffer tracks *streams* (by default the source; the identity stage uses
source and input partition) and holds events until every active stream has
passed their time (the watermark is the minimum over streams of the newest
event time seen), then releases them sorted. A stream that sent nothing for
``idle_seconds`` of processing time stops holding the others back, and so,
at once, does a stream whose source said it has read everything there was
(:meth:`ReorderBuffer.progress`: ingest's progress marks; a mark that says
ingest is still reading keeps the stream active). A stream that has not
sent yet, while its source is being read, holds back only up to the
newest event time the source's mark reports: app and geofence events
keep their partition through ingest, so most ``app/1>p`` streams never
send, and without this they would hold everything until ingest has read
``app/1`` to its end. Events older than
what was already released are let through at once and counted as late; the
journeys stage then places them (see docs/journeys.md).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

NEVER = -(2**62)  # the time of a stream that has not sent yet


class ReorderBuffer:
    """Releases events in event-time order, up to the slowest active stream."""

    def __init__(
        self,
        idle_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        stream_of: Callable[[dict[str, Any]], str] | None = None,
        stall_seconds: float = 3.0,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.stall_seconds = stall_seconds  # a source that spoke before and not since this long has stalled
        self.clock = clock
        self.stream_of = stream_of or (lambda event: str(event["source"]))
        self._heap: list[tuple[int, str, int, dict[str, Any]]] = []
        self._seq = 0
        self._newest: dict[str, int] = {}
        self._last_seen: dict[str, float] = {}
        self.released_up_to = 0
        self.late = 0
        self.last_late: tuple[str, int] = ("", 0)  # the stream of the last late event, and by how much (ms)
        self._waiting: set[str] = set()
        self._caught_up: set[str] = set()
        self._quiet: dict[str, int] = {}  # not sent yet, source being read: up to the source's mark
        self._marked_at: dict[str, float] = {}  # when the source last said where a stream stands
        self._last_mark: float | None = None  # when the source last said anything

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """Buffer one event; returns the late event itself when it is older than what was released."""
        at = event["occurred_at"]
        stream = self.stream_of(event)
        self._seen(stream, at)
        self._quiet.pop(stream, None)
        if at < self.released_up_to:
            self.late += 1
            self.last_late = (stream, self.released_up_to - at)
            return [event]
        self.put_back(event)
        return []

    def put_back(self, event: dict[str, Any]) -> None:
        """Hold an event, without taking it as news of its stream (:meth:`add` notes that first).

        Events kept from before a restart are held through this alone: their
        stream's input is read again from the committed offset, which can come
        after the events kept in state (a partition read again from a hole).
        Counted as arrived, a kept event would let the other streams' newer
        events go first, and its stream's older ones would then come late.
        """
        self._seq += 1
        # equal times go out by event id, not by arrival: the same order in every run
        heapq.heappush(self._heap, (event["occurred_at"], event["event_id"], self._seq, event))

    def progress(self, stream: str, caught_up: bool, source_at: int | None = None) -> None:
        """What the source of ``stream`` says about it, in order with the stream's events.

        ``caught_up``: the source has read everything there was, so the stream
        holds nothing back until its next event. Otherwise it is reading
        again: a stream known here stays active (its idle clock restarts).
        ``source_at``: the newest event time the source had passed on when it
        said so. A stream that has not sent yet holds back only up to it: the
        mark follows everything sent its way, and the source is read in event-time order.
        """
        self._marked_at[stream] = self._last_mark = self.clock()
        if caught_up:
            self._caught_up.add(stream)
        elif stream in self._newest:
            if source_at is not None and self._newest[stream] == NEVER:
                self._quiet[stream] = max(self._quiet.get(stream, NEVER), source_at)
            self._seen(stream, self._newest[stream])
        else:
            self._caught_up.discard(stream)

    def _seen(self, stream: str, at: int) -> None:
        """``stream`` is active, at ``at`` or later."""
        now = self.clock()
        if self._waiting:
            # expected streams start their idle clock with the first input, not
            # at start-up: a worker may take longer to join its group than that
            for waiting in self._waiting:
                self._last_seen.setdefault(waiting, now)
            self._waiting.clear()
        self._newest[stream] = max(self._newest.get(stream, at), at)
        self._last_seen[stream] = now
        self._caught_up.discard(stream)

    def expect(self, streams: Sequence[str]) -> None:
        """Streams known to exist: each holds everything back until it sends or goes idle.

        Without this, a stream that has not sent yet (its partition not
        fetched yet, at start-up or in a backfill) could not hold back the
        ones that have, and its first events would all come late.
        """
        for stream in streams:
            if stream not in self._newest:
                self._newest[stream] = NEVER
                self._waiting.add(stream)

    def caught_up(self, fresh_seconds: float) -> bool:
        """True when nothing is held and the source said of every stream, within ``fresh_seconds``,
        that it had passed on everything there was: whatever came in has gone out.

        False while the source is silent (stopped, or not started): then the
        stages downstream cannot tell a quiet input from a stalled one.
        """
        if self._heap or not self._newest:
            return False
        now = self.clock()
        marked = self._marked_at
        return all(
            s in self._caught_up and now - marked.get(s, -float("inf")) < fresh_seconds for s in self._newest
        )

    def watermark(self) -> int | None:
        """The event time up to which every active stream has arrived."""
        now = self.clock()
        quiet = self._quiet
        # A quiet stream stops holding back only while its source keeps saying where it stands:
        # when the source has fallen silent (the broker away, the source stopped) the quiet
        # is a stall, and events still on their way would all come late.
        stalled = self._last_mark is not None and now - self._last_mark >= self.stall_seconds
        active = [
            quiet.get(s, t) if quiet else t
            for s, t in self._newest.items()
            if s not in self._caught_up and (stalled or now - self._last_seen.get(s, now) < self.idle_seconds)
        ]
        if not active:
            if not self._newest:
                return None
            # nothing holds back: every held event may go (events put back after a restart
            # can be newer than anything their streams have sent since)
            return max(max(self._newest.values()), max((held[0] for held in self._heap), default=NEVER))
        return min(active)

    def release(self, everything: bool = False, at_most: int = 0) -> list[dict[str, Any]]:
        """Events at or before the watermark (all of them with ``everything``), oldest first.

        ``at_most`` (0: no bound) caps how many go in one call; the rest stay held,
        in order, for the next call (:meth:`releasable` says whether any is left).
        """
        limit = None if everything else self.watermark()
        cap = 0 if everything else at_most
        out: list[dict[str, Any]] = []
        heap = self._heap
        while heap and (limit is None or heap[0][0] <= limit) and not (cap and len(out) >= cap):
            at, _eid, _seq, event = heapq.heappop(heap)
            self.released_up_to = max(self.released_up_to, at)
            out.append(event)
        return out

    def releasable(self) -> bool:
        """True when a held event is at or before the watermark (a bounded release left it)."""
        limit = self.watermark()
        return bool(self._heap) and limit is not None and self._heap[0][0] <= limit


def held_key(source_key: str, event_id: str) -> str:
    """The state key of one held event: its source message's key and its id, as a JSON pair.

    One key per event, so holding or releasing an event writes that event
    alone, not the whole list of its source key's held events again. The
    table's changelog partition is the source key's (:func:`held_partition_key`).
    """
    return orjson.dumps([source_key, event_id]).decode()


def held_partition_key(key: str) -> str:
    """The part of a held event's state key that decides its partition: the source message's key.

    Keys written before held events had keys of their own (a source key
    holding a list of events) are their own partition key.
    """
    if key.startswith('["'):
        try:
            pair = orjson.loads(key)
        except orjson.JSONDecodeError:
            return key
        if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str):
            return pair[0]
    return key


class DurableReorder:
    """A :class:`ReorderBuffer` whose held events are also kept in a state table.

    The input offsets of held events are committed like any other, so the
    events themselves must survive a restart: each is written to ``table``
    under its own key (:func:`held_key`; its changelog partition is that of
    its source message, :func:`held_partition_key`), deleted when released,
    and put back in the buffer on the first call after a restart.
    """

    def __init__(
        self,
        key_of: Callable[[dict[str, Any]], str],
        idle_seconds: float = 5.0,
        stream_of: Callable[[dict[str, Any]], str] | None = None,
        at_most: int = 0,
    ) -> None:
        self.buffer = ReorderBuffer(idle_seconds=idle_seconds, stream_of=stream_of)
        self.at_most = at_most  # events released per call (0: all that may go); the rest next call
        self.key_of = key_of
        self.table: Any = {}
        self._restored = False

    def bind(self, table: Any) -> None:
        """Keep held events in ``table`` (a faust table or a dict)."""
        self.table = table

    def reset(self) -> None:
        """Empty the buffer as at a start: the table's events are read back on the next call."""
        old = self.buffer
        self.buffer = ReorderBuffer(
            idle_seconds=old.idle_seconds, clock=old.clock, stream_of=old.stream_of,
            stall_seconds=old.stall_seconds,
        )  # fmt: skip
        self._restored = False

    def add_all(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Hold a batch; returns the events that may be processed now, oldest first."""
        self._restore()
        ready: list[dict[str, Any]] = []
        for event in events:
            late = self.buffer.add(event)
            if late:
                ready.extend(late)
            else:
                self.table[held_key(self.key_of(event), event["event_id"])] = event
        return self._forget(ready + self.buffer.release(at_most=self.at_most))

    def release(self, everything: bool = False) -> list[dict[str, Any]]:
        """Events the watermark (or the end of input) lets through, at most ``at_most`` unless everything."""
        self._restore()
        return self._forget(self.buffer.release(everything=everything, at_most=self.at_most))

    def _restore(self) -> None:
        """After a restart, put the events held before it back in the buffer (once)."""
        if self._restored:
            return
        self._restored = True
        table = self.table
        for key, held in list(table.items()):
            if isinstance(held, list):
                # written by a version that kept a list per source key: one key per event from now on
                del table[key]
                for event in held:
                    table[held_key(self.key_of(event), event["event_id"])] = event
                    self.buffer.put_back(event)
            elif held is not None:
                self.buffer.put_back(held)

    def _forget(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        table = self.table
        for event in events:
            key = held_key(self.key_of(event), event["event_id"])
            if key in table:
                del table[key]
        return events
