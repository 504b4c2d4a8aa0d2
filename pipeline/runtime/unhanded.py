"""Putting back the records faust's consumer took from the Kafka client and did not hand on.

faust's consumer takes a batch of records from aiokafka and hands them on
one by one, but drops some of them on the way: the whole batch when it comes
back in the moment a rebalance has stopped the flow, the records of
partitions it holds paused (aiokafka reads every assigned partition when the
set of wanted ones is empty for a moment), the rest of a batch when a
rebalance begins part-way, and a record whose delivery a rebalance cancels.
The client's position has already moved past them, so they are never read
unless something seeks the partition back. A table whose changelog lost its
last records that way while it was being restored waits for ever
(docs/operations.md), and an input partition gets a hole (which
:class:`~pipeline.runtime.faust_input.OrderedInput` reads again, later).

:class:`UnhandedRecords` watches each batch go through and seeks a partition
back to its first record not handed on, provided the client still stands at
or past the batch's end (a position before it means somebody sought it
since: faust's recovery, or a rebalance). Two fault points (``fetch_in_rebalance``,
``lost_fetch``, pipeline/runtime/faults.py) let tests cause the drop.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, NamedTuple

import faust
from aiokafka import TopicPartition

from pipeline.runtime.faults import FaultPlan
from pipeline.runtime.recovery_watch import name

log = logging.getLogger(__name__)


class Span(NamedTuple):
    """The records of one partition of a batch that were not handed on."""

    first: int  # the offset of the first
    after: int  # the offset after the batch's last record
    records: int  # how many


def unhanded(fetched: Mapping[Any, Sequence[Any]], handed: Mapping[Any, int]) -> dict[Any, Span]:
    """The partitions of a fetched batch whose records were not all handed on, with the span left.

    ``fetched``: the batch, records per partition in offset order;
    ``handed``: per partition, the offset of the last record handed on.
    """
    spans = {}
    for tp, records in fetched.items():
        if not records:
            continue
        last = handed.get(tp)
        left = [record.offset for record in records if last is None or record.offset > last]
        if left:
            spans[tp] = Span(left[0], records[-1].offset + 1, len(left))
    return spans


async def _seek_back(client: Any, spans: Mapping[Any, Span]) -> dict[Any, int]:
    """In the consumer's thread: seek each partition to its span's start if it still stands past the span."""
    moved = {}
    assignment = client._subscription.subscription.assignment
    for tp, (first, after, _records) in spans.items():
        part = TopicPartition(tp.topic, tp.partition)
        if assignment is None or not client._subscription.is_assigned(part):
            continue
        state = assignment.state_value(part)
        if state.has_valid_position and state.position >= after:
            client.seek(part, first)
            moved[tp] = first
    return moved


async def _seek_to_end(client: Any, tps: Sequence[Any]) -> None:
    """In the consumer's thread: move past everything the partitions hold (the ``lost_fetch`` fault)."""
    await client.seek_to_end(*(TopicPartition(tp.topic, tp.partition) for tp in tps))


class UnhandedRecords:
    """Wraps a faust consumer's batches so that records it does not hand on are read again."""

    def __init__(self, app: faust.App, stage: str, faults: FaultPlan) -> None:
        self.app = app
        self.stage = stage
        self.faults = faults
        self.put_back = 0  # records the client was sought back to since start
        self._fetched: Mapping[Any, Sequence[Any]] = {}  # the batch going through
        self._restarted_flow = False  # the fetch_in_rebalance fault stopped the flow for this batch
        consumer = app.consumer
        self._wait_next = consumer._wait_next_records  # type: ignore[attr-defined]
        self._getmany = consumer.getmany
        # the consumer's fetch loop looks these up on the instance when it starts
        consumer._wait_next_records = self._wait_next_records  # type: ignore[attr-defined]
        consumer.getmany = self._handing_over  # type: ignore[assignment,method-assign]

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        records, active = await self._wait_next(timeout)
        self._fetched = records or {}
        if records and self.faults.plan:
            await self._inject(records)
        return records, active

    async def _handing_over(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        consumer: Any = self.app.consumer
        handed: dict[Any, int] = {}
        async for tp, message in self._getmany(timeout=timeout):
            yield tp, message
            # Back here once the fetch loop has delivered the message, or given up
            # on it: a rebalance that stops the flow meanwhile cancels the delivery
            # (faust waits for the first of the two). Then it counts as not handed
            # on; if it was, it comes twice, which the stage takes (repeats of
            # input are acknowledged unhandled, a changelog record is written again).
            if consumer.flow_active:
                handed[tp] = message.offset
        fetched, self._fetched = self._fetched, {}
        if self._restarted_flow:
            self._restarted_flow = False
            self.app.consumer.resume_flow()
        spans = unhanded(fetched, handed)
        if spans:
            await self._put_back(spans)

    async def _put_back(self, spans: Mapping[Any, Span]) -> None:
        thread = self.app.consumer._thread  # type: ignore[attr-defined]
        try:
            moved = await thread.call_thread(_seek_back, thread._ensure_consumer(), spans)
        except Exception as exc:  # the next rebalance or hole check seeks again
            log.warning("%s: putting back records not handed on failed: %r", self.stage, exc)
            return
        if moved:
            count = sum(spans[tp].records for tp in moved)
            self.put_back += count
            log.info("%s: faust's consumer took %d records it did not hand on; reading them again from %s",
                     self.stage, count, {name(tp): off for tp, off in moved.items()})  # fmt: skip

    async def _inject(self, records: dict[Any, Any]) -> None:
        """The fault points: a batch holding changelog records while a table is being restored."""
        recovery = getattr(self.app.tables, "recovery", None)
        changelogs = self.app.tables.changelog_topics
        restoring = [tp for tp in records if tp.topic in changelogs]
        if not restoring or recovery is None or not recovery.in_recovery:
            return
        if "fetch_in_rebalance" in self.faults.plan and self.faults.due("fetch_in_rebalance"):
            # faust finds its flow stopped when the batch comes back, and drops it
            log.warning("%s: fault injected at fetch_in_rebalance: the flow stopped as %d records come back",
                        self.stage, sum(map(len, records.values())))  # fmt: skip
            self.app.consumer.stop_flow()
            self._restarted_flow = True
        elif "lost_fetch" in self.faults.plan and self.faults.due("lost_fetch"):
            # gone without a trace: left out of the batch, and the client moved to the partitions' ends
            lost = sum(len(records.pop(tp)) for tp in restoring)
            self._fetched = records
            thread = self.app.consumer._thread  # type: ignore[attr-defined]
            await thread.call_thread(_seek_to_end, thread._ensure_consumer(), restoring)
            log.warning("%s: fault injected at lost_fetch: %d changelog records of %s lost",
                        self.stage, lost, sorted(map(name, restoring)))  # fmt: skip
