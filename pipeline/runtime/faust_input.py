"""How a faust stage reads its input: in offset order, with no hole, and without long fetch waits.

The rules are :class:`~pipeline.runtime.input_order.InputOrder`'s; this module
applies them to faust's consumer: records held past a hole are left
unacknowledged, the partition is sought back to the hole, and faust's own
filling of holes (which would commit past them) is switched off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import faust
from faust.exceptions import ConsumerNotStarted
from faust.types import TP

from pipeline.config import Settings
from pipeline.kafka.admin import committed_offsets
from pipeline.runtime.faults import FaultPlan
from pipeline.runtime.input_order import InputOrder, Verdict

log = logging.getLogger(__name__)

T = TypeVar("T")

FETCH_MAX_WAIT_MS = 100
"""How long the broker may hold a fetch of a stateful stage's consumer for data to arrive."""

ATTEMPTS = 6
FIRST_RETRY_SECONDS = 0.25
"""A broker call of the input's bookkeeping is tried 6 times, 0.25 s apart at first, doubling (about 8 s)."""

REREAD_CHECK_SECONDS = 0.5
"""How often the stage looks for holes still waiting to be read again."""


class OrderedInput:
    """Hands a faust stage its input records in offset order, each partition without a hole."""

    def __init__(
        self, app: faust.App, settings: Settings, stage: str, topics: Sequence[str], faults: FaultPlan
    ) -> None:
        self.app = app
        self.settings = settings
        self.group = settings.group(stage)
        self.stage = stage
        self.topics = frozenset(topics)  # the stage's inputs; the consumer also holds the tables' changelogs
        self.faults = faults
        self.order: InputOrder[TP] = InputOrder(stage)
        self.moved_away = 0  # records fetched before a rebalance moved their partition away, not handled
        self._assigned: set[TP] | None = None  # the last completed assignment (None: none yet)
        self._start_of: dict[TP, int] = {}  # where reading started on partitions held now
        self._shorten_fetch_wait()
        self._keep_holes_open()
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]  # mode types it too narrowly
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        app.timer(REREAD_CHECK_SECONDS)(self._check)

    async def admit(self, events: Sequence[Any]) -> list[bytes]:
        """The values of ``events`` the stage must handle now, in order; holds the rest unacknowledged.

        Records of a partition this process no longer holds (fetched before a
        rebalance moved it) are left to its new owner: handled here, they would
        meet state this process has let go of and write over the owner's.
        """
        events = self._moved_away(self._misread(events))
        starts = await self._starts({event.message.tp for event in events})
        admitted = []
        for event in events:
            message = event.message
            verdict = self.order.sort(message.tp, message.offset, starts.get(message.tp, 0))
            if verdict is Verdict.HANDLE:
                admitted.append(event)
            elif verdict is Verdict.HOLD:
                self._hold(message)
        if self.order.open_holes:
            await self.reread_holes()
        # a rebalance may have come during the awaits: the caller handles what
        # this returns without awaiting again, so this is the last look
        return [event.value for event in self._moved_away(admitted)]

    async def _starts(self, partitions: set[TP]) -> dict[TP, int]:
        """Where reading starts on partitions new here: the group's committed offset, else the log's first.

        Asked of the broker once per partition and assignment: faust's own
        record of committed offsets is not always filled in when the first
        records come, and starting from the log's first offset would handle
        committed input again.
        """
        new = [tp for tp in partitions if not self.order.knows(tp)]
        missing = [tp for tp in new if tp not in self._start_of]
        if missing:
            loop = asyncio.get_running_loop()
            topics = sorted({tp.topic for tp in missing})
            committed = await self._retrying(
                "reading the committed offsets", loop.run_in_executor, None, committed_offsets, self.settings,
                self.group, topics,
            )  # fmt: skip
            never = [tp for tp in missing if (tp.topic, tp.partition) not in committed]
            earliest = (
                await self._retrying("reading the first offsets", self.app.consumer.earliest_offsets, *never)
                if never
                else {}
            )
            for tp in missing:
                start = committed.get((tp.topic, tp.partition))
                self._start_of[tp] = start if start is not None else earliest.get(tp) or 0
        return {tp: self._start_of[tp] for tp in new}

    async def _check(self) -> None:
        """Look for records fetched and never handed over, then re-read every hole that is due.

        A failure (the broker away, a rebalance under way) is logged; the next
        check, half a second later, tries again.
        """
        consumer = self.app.consumer
        try:
            owned = self.owned()
            positions = {tp: await consumer.position(tp) for tp in owned}
            starts = await self._starts(set(owned))
            self.order.watch({tp: p for tp, p in positions.items() if p is not None}, starts)
            await self.reread_holes()
        except ConsumerNotStarted:
            return
        except Exception as exc:
            log.warning("%s: checking the input's fetch positions failed: %r", self.stage, exc)

    async def reread_holes(self) -> None:
        """Seek every partition whose hole is due for another read back to the hole."""
        due = self.order.seeks_due()
        if not due:
            return
        consumer = self.app.consumer
        owned = self.owned()
        due = {tp: offset for tp, offset in due.items() if tp in owned}
        if not due:
            return
        earliest = await self._retrying("reading the first offsets", consumer.earliest_offsets, *due)
        for tp, offset in list(due.items()):
            start = earliest.get(tp) or 0
            if start > offset:
                self.order.restart_at(tp, start)
                due[tp] = start
        await self._retrying("seeking back to a hole", consumer.seek_wait, due)

    async def _retrying(self, what: str, call: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``call(*args)``, tried again with growing pauses while it fails; raises the last failure."""
        delay = FIRST_RETRY_SECONDS
        for _attempt in range(1, ATTEMPTS):
            try:
                return await call(*args)
            except Exception as exc:
                log.warning("%s: %s failed (%r); trying again in %.1f s", self.stage, what, exc, delay)
                await asyncio.sleep(delay)
                delay *= 2
        return await call(*args)

    async def describe(self) -> str:
        """Where reading stands on each owned partition, for a stage that waits too long."""
        consumer = self.app.consumer
        committed = consumer._committed_offset  # type: ignore[attr-defined]
        read = consumer._read_offset  # type: ignore[attr-defined]
        parts = []
        for tp in sorted(self.owned()):
            parts.append(f"{tp.topic}:{tp.partition} next={self.order.next_offset(tp)} "
                         f"committed={committed.get(tp)} faust_read={read.get(tp)} "
                         f"fetch_position={await consumer.position(tp)}")  # fmt: skip
        return "; ".join(parts) + f"; holes open={self.order.open_holes}"

    def owned(self) -> set[TP]:
        """The input partitions this process holds (forwarded topics included)."""
        return {tp for tp in self.app.consumer.assignment() if tp.topic in self.topics}

    def _hold(self, message: Any) -> None:
        # Marked as acknowledged, the message is left out of faust's offsets to
        # commit when take_events() acknowledges its batch; out of the unacked
        # set, a clean stop does not wait for it.
        message.acked = True
        self.app.consumer._unacked_messages.discard(message)  # type: ignore[attr-defined]

    def _moved_away(self, events: Sequence[Any]) -> Sequence[Any]:
        # the last completed assignment, not the consumer's own: during a rebalance
        # that one is empty for a moment, and a partition kept throughout would
        # lose records to a hole read again later (identity then resolves late)
        held = self._assigned
        if held is None:
            return events
        kept = [event for event in events if event.message.tp in held]
        if len(kept) < len(events):
            for event in events:
                if event.message.tp not in held:
                    self._hold(event.message)
            self.moved_away += len(events) - len(kept)
            log.info("%s: %d records of partitions moved to another process left to it", self.stage,
                     len(events) - len(kept))  # fmt: skip
        return kept

    def _misread(self, events: Sequence[Any]) -> Sequence[Any]:
        """The ``misread`` fault point: the batch's first record is not handed over, nor acknowledged."""
        if not events or "misread" not in self.faults.plan or not self.faults.due("misread"):
            return events
        message = events[0].message
        log.warning("%s: fault injected at misread: offset %d of %s not handed over", self.stage,
                    message.offset, message.tp)  # fmt: skip
        self._hold(message)
        return events[1:]

    def _on_assigned(self, _sender: Any, *args: Any, **_kwargs: Any) -> None:
        self._assigned = set(args[0])

    def _on_revoked(self, sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked: set[TP] = args[0]
        self.order.forget(revoked)
        for tp in revoked:
            self._start_of.pop(tp, None)

    def _keep_holes_open(self) -> None:
        """Stop faust from counting offsets it never handed over as done.

        faust takes a jump in offsets for transaction markers or compacted
        records and commits past it; a stage's inputs have neither, so the
        records in the jump were skipped, and :meth:`admit` has them read again.
        """
        consumer = self.app.consumer

        async def leave_open(tp: Any, offset_from: int, offset_to: int) -> None:
            log.debug("%s: faust jumped from offset %d to %d of %s", self.stage, offset_from - 1, offset_to,
                      tp)  # fmt: skip

        consumer._add_gap = leave_open  # type: ignore[attr-defined]

    def _shorten_fetch_wait(self) -> None:
        """Let the broker hold a fetch at most :data:`FETCH_MAX_WAIT_MS` (faust fixes 1,500 ms).

        aiokafka sends no new fetch to a broker while records of one of its
        partitions wait to be processed, and leaves out of a pending fetch
        the partitions it was processing: their next records wait until that
        fetch returns, which with faust's setting can be 1.5 s when the other
        partitions are quiet.
        """
        thread = self.app.consumer._thread  # type: ignore[attr-defined]
        create = thread._create_worker_consumer

        def create_consumer(transport: Any) -> Any:
            consumer = create(transport)
            consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
            return consumer

        thread._create_worker_consumer = create_consumer
