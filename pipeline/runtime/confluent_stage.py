"""A consume-process-commit loop on confluent-kafka, for stages without shared state.

The stage logic is a :class:`BatchHandler`; this module only moves messages.
Offsets are committed only after :meth:`BatchHandler.make_durable` returned,
that is after outputs were acknowledged by Kafka or written to ClickHouse.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.config import Settings
from pipeline.errors import CommitNotMade, DrainInterrupted, RetryableError
from pipeline.kafka.admin import (
    admin_client,
    broker_away,
    group_offsets,
    partition_counts,
    partition_offsets,
)
from pipeline.kafka.clients import make_consumer, process_client_id
from pipeline.runtime.drain import DrainGate
from pipeline.runtime.faults import FaultPlan

log = logging.getLogger(__name__)


class BatchHandler(Protocol):
    """What a confluent-kafka stage does with its messages."""

    def handle(self, messages: Sequence[Message]) -> None:
        """Process a batch of consumed messages (outputs may stay buffered)."""

    def due(self) -> bool:
        """True when buffered work should be made durable now."""

    def progress(self, at_end: Sequence[tuple[str, int]], final: bool = False) -> None:
        """Called once per poll: the partitions that reached their end in it (may be empty).

        ``final``: the stage drained; ``at_end`` is every partition it holds,
        each read to its end and committed, and nothing is consumed after it.
        """

    def revoked(self, partitions: Sequence[tuple[str, int]]) -> None:
        """A rebalance took these partitions away from this process."""

    def make_durable(self) -> None:
        """Make every output of the handled messages durable; raise RetryableError if not now."""

    def close(self) -> None:
        """Release resources."""


COMMIT_RETRY_SECONDS = 60.0
"""How long a commit is retried through retriable errors other than the broker being away."""

LEFT_GROUP = frozenset(
    {
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.FENCED_INSTANCE_ID,
        KafkaError.STALE_MEMBER_EPOCH,
        KafkaError._ASSIGNMENT_LOST,
        KafkaError._MAX_POLL_EXCEEDED,
    }
)
"""Commit errors meaning this process no longer owns the partitions it worked on."""


@dataclass
class LoopStats:
    """Counters of one run of a loop."""

    consumed: int = 0
    batches: int = 0
    commits: int = 0
    retries: int = 0
    seconds: float = 0.0
    lost_to_retention: int = 0
    commits_refused: int = 0
    drained: bool = False


class ConfluentStageLoop:
    """Runs a :class:`BatchHandler` over input topics until stopped or drained."""

    def __init__(
        self,
        settings: Settings,
        stage: str,
        topics: Sequence[str],
        handler: BatchHandler,
        drain: DrainGate | None = None,
        batch_size: int = 2000,
        poll_seconds: float = 0.05,
        report_ends: bool = False,
        consumer_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.stage = stage
        self.topics = list(topics)
        self.handler = handler
        self.drain = drain
        self.batch_size = batch_size
        # consume() waits this long for a full batch: at low rates it is latency
        self.poll_seconds = poll_seconds
        self.stats = LoopStats()
        self._stop = False
        extra: dict[str, Any] = {"enable.partition.eof": True} if report_ends else {}
        extra.update(consumer_options or {})
        extra.setdefault("client.id", process_client_id(settings, stage))
        self._consumer: Consumer = make_consumer(settings, settings.group(stage), **extra)
        self._uncommitted: dict[tuple[str, int], int] = {}
        self.faults = FaultPlan(stage, settings.fault_at)
        self._admin: AdminClient | None = None  # made on the first drain check
        self._every: list[str] = []  # every input partition, as the drain markers name them

    def stop(self, *_args: object) -> None:
        """Ask the loop to finish its batch, commit and return."""
        self._stop = True

    def install_signal_handlers(self) -> None:
        """Stop cleanly on SIGTERM and SIGINT."""

        def handler(_sig: int, _frame: FrameType | None) -> None:
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> LoopStats:
        """Consume, handle and commit until stopped (or drained in drain mode)."""
        start = time.monotonic()
        self._consumer.subscribe(
            self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        log.info("%s: consuming %s", self.stage, ", ".join(self.topics))
        try:
            while not self._stop:
                messages = self._consumer.consume(self.batch_size, timeout=self.poll_seconds)
                batch = [m for m in messages if not self._is_error(m)]
                at_end = [(m.topic() or "", m.partition() or 0) for m in messages if _is_end(m)]
                if batch:
                    self.handler.handle(batch)
                    for m in batch:
                        self._uncommitted[(m.topic() or "", m.partition() or 0)] = (m.offset() or 0) + 1
                    self.stats.consumed += len(batch)
                    self.stats.batches += 1
                self.handler.progress(at_end)
                if self._uncommitted and (self.handler.due() or not batch):
                    self._checkpoint()
                if not batch and self.drain is not None and self._drained():
                    # a drain can end before the consumer reported every end (an empty
                    # partition's comes when its first fetch does): say them all, last
                    held = [(tp.topic, tp.partition) for tp in self._consumer.assignment()]
                    self.handler.progress(held, final=True)
                    self.stats.drained = True
                    break
            self._checkpoint()
        finally:
            self.handler.close()
            self._consumer.close()
            self.stats.seconds = time.monotonic() - start
        log.info(
            "%s: stopped after %d messages in %.1f s", self.stage, self.stats.consumed, self.stats.seconds
        )
        if self.drain is not None and not self.stats.drained:
            raise DrainInterrupted(f"{self.stage}: stopped before it drained")
        return self.stats

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Say so when retention deleted records this group never acknowledged.

        The consumer then starts at the log's first offset (``auto.offset.reset``):
        without this check the hole would pass unnoticed. The loss is then
        acknowledged: the log's first offset is committed with the next
        checkpoint, so a partition retention emptied does not count as
        behind (and alerting) for good.
        """
        if not partitions:
            return
        owned = [(tp.topic, tp.partition) for tp in partitions]
        try:
            committed = group_offsets(self.settings, self.settings.group(self.stage), owned, timeout=10)
            starts = partition_offsets(self._admin_client(), list(committed), earliest=True)
        except KafkaException as exc:
            log.warning("%s: could not compare committed offsets with the logs' start: %s", self.stage, exc)
            return
        for key, offset in sorted(committed.items()):
            if offset < starts[key]:
                self.stats.lost_to_retention += starts[key] - offset
                log.error("%s: offsets %d to %d of %s[%d] were deleted by retention before this stage "
                          "acknowledged them; they are lost to it", self.stage, offset, starts[key] - 1,
                          *key)  # fmt: skip
                self._uncommitted.setdefault(key, starts[key])

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = admin_client(self.settings)
        return self._admin

    def _on_revoke(self, _consumer: Consumer | None, partitions: list[TopicPartition]) -> None:
        """Forget the offsets handled on partitions taken away, and tell the handler.

        Their next owner starts from the committed offset and handles those
        records again (every output is keyed, so repeats are the same rows).
        Committing them from here after the hand-over could move that owner's
        committed offset back.
        """
        gone = [(p.topic, p.partition) for p in partitions]
        for key in gone:
            self._uncommitted.pop(key, None)
        self.handler.revoked(gone)

    def _checkpoint(self) -> None:
        delay = 0.5
        while True:
            try:
                self.handler.make_durable()
                break
            except RetryableError as exc:
                self.stats.retries += 1
                log.warning("%s: %s; retrying in %.1f s (nothing committed)", self.stage, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
                if self._stop and self.drain is None:
                    raise
        if self._uncommitted:
            self.faults.reach("after_insert")
            offsets = [TopicPartition(t, p, o) for (t, p), o in self._uncommitted.items()]
            if self._commit(offsets):
                self.stats.commits += 1
                self._uncommitted.clear()
            else:  # refused: what this process still owns is committed at the next checkpoint
                owned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
                self._uncommitted = {key: o for key, o in self._uncommitted.items() if key in owned}

    def _commit(self, offsets: list[TopicPartition]) -> bool:
        """Commit; False when this process left the group.

        Retried for as long as the broker is away or its group coordinator
        loading (a restart takes what it takes; the outputs are durable, so
        waiting loses nothing), unless the process is asked to stop
        (:class:`~pipeline.errors.CommitNotMade`); other retriable errors for
        up to ``COMMIT_RETRY_SECONDS``.

        A process that spent longer than ``max.poll.interval.ms`` on one step
        (the sink waiting for ClickHouse) is out of the group, and the broker
        refuses its commit. Its outputs are durable already; the partitions'
        next owner reads those records again, as after a crash, and the
        stages downstream and the sink take repeats as the same rows. Offsets
        of partitions this process still owns after the refusal (a commit
        caught in a cooperative rebalance) stay for the next checkpoint.
        """
        delay = 0.2
        deadline = time.monotonic() + COMMIT_RETRY_SECONDS
        while True:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
                return True
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() in LEFT_GROUP:
                    self.stats.commits_refused += 1
                    log.warning("%s: commit refused (%s): this process was out of its group while it "
                                "worked; the partitions' next owner reads those records again",
                                self.stage, err.str())  # fmt: skip
                    return False
                away = broker_away(err)
                if self._stop and away:
                    raise CommitNotMade(f"{self.stage}: stopped while the broker was away; the offsets "
                                        "of its last records are not committed, the next run reads "
                                        "them again") from exc  # fmt: skip
                if not (away or err.retriable()) or (not away and time.monotonic() > deadline):
                    raise
                self.stats.retries += 1
                log.warning("%s: commit failed (%s); retrying in %.1f s", self.stage, err.str(), delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _drained(self) -> bool:
        """True once this stage has drained: every input partition read to its end and committed.

        With several processes of the stage, each says which partitions it
        drained (:meth:`DrainGate.mark_copy_done`) and stays until together
        they drained all of them.
        """
        assert self.drain is not None
        if not self.drain.upstream_done() or self._uncommitted:
            return False
        if self.drain.stage_done():
            return True  # the other processes drained the rest; nothing is pending here
        assignment = self._consumer.assignment()
        if not assignment:
            return False
        positions = {(tp.topic, tp.partition): tp.offset for tp in self._consumer.position(assignment)}
        # Nothing consumed yet on a partition (a restart after everything was
        # committed): its position is unknown, the committed offset tells;
        # with nothing committed either, reading would start at the first offset.
        unknown = [TopicPartition(t, p) for (t, p), offset in positions.items() if offset < 0]
        for tp in self._consumer.committed(unknown, timeout=10) if unknown else []:
            positions[(tp.topic, tp.partition)] = tp.offset
        admin = self._admin_client()
        untouched = [key for key, offset in positions.items() if offset < 0]
        positions.update(partition_offsets(admin, untouched, earliest=True) if untouched else {})
        ends = partition_offsets(admin, positions)
        if not all(positions[key] >= end for key, end in ends.items()):
            return False
        if not self._every:
            counts = partition_counts(self.settings, every=True)
            self._every = [f"{t}/{p}" for t in self.topics for p in range(counts.get(t, 0))]
        return self.drain.mark_copy_done((f"{t}/{p}" for t, p in positions), self._every)

    def _is_error(self, message: Message) -> bool:
        err = message.error()
        if err is None:
            return False
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("%s: consumer error %s", self.stage, err)
        return True


def _is_end(message: Message) -> bool:
    """True for the event saying a partition has been read to its end (``enable.partition.eof``)."""
    err = message.error()
    return err is not None and err.code() == KafkaError._PARTITION_EOF
