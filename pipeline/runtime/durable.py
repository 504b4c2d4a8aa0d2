"""The commit protocol of the stateful stages: outputs durable, then state, then the input.

Every step of a stateful stage -- a batch of input, a timer tick, the drain's
final flush, a hand-over -- ends with :meth:`DurableWriter.commit_step`:

1. the step's outputs are produced and flushed; every one must be
   acknowledged by the broker (acks=all, idempotent producer);
2. then the step's state changes are produced to the tables' changelog
   topics and flushed the same way -- within a batch, by the next step's
   flush of its outputs (a flush waits for everything produced before it),
   and after the batch's last step by :meth:`DurableWriter.settle`: one
   round trip per step instead of two;
3. only then does the caller return to faust, which acknowledges the input
   and commits it later.

A failure at any step raises :class:`~pipeline.errors.DeliveryFailed`; the
caller stops the process at once (``os._exit``), so nothing after the failed
step is acknowledged or committed. A crash anywhere in between is safe:

* before 1 completes: nothing of the step is durable; the input is replayed;
* between 1 and 2: outputs are durable, state is not; the input is replayed
  on the old state and produces the outputs again (same ids; a replay's
  versions win, see ``docs/architecture.md``);
* between 2 and 3: outputs and state are durable; the replayed input finds
  its effects in the state and produces nothing new;
* in a later step of the batch before its flush: a step's outputs and part
  of the step before's state are durable, as a crash in the middle of one
  step's state flush leaves it; the replay finds what the state holds and
  produces the rest again (under a newer epoch, see ``faust_stage.py``).

Why not Kafka transactions: faust's changelog recovery reads each partition
up to its high watermark minus one, which a transaction's closing marker
never lets it reach (it waits for two 5-second timeouts, and only when faust
itself runs transactions). The ordered protocol needs no change to faust.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import orjson
from confluent_kafka import Producer

from pipeline.config import Settings
from pipeline.errors import DeliveryFailed, FatalError
from pipeline.kafka.clients import DeliveryTracker, make_producer, produce
from pipeline.kafka.envelopes import pack
from pipeline.kafka.topics import ONE_RECORD_PER_MESSAGE
from pipeline.model.handler import Emission
from pipeline.model.rows import ROW_TOPICS
from pipeline.runtime.faults import FaultPlan
from pipeline.runtime.state import ChangelogRecord

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_SECONDS = 60.0


class DurableWriter:
    """Makes a step's outputs and then its state durable through one confluent-kafka producer.

    confluent-kafka rather than faust's aiokafka producer: librdkafka batches
    and compresses in C, reports every delivery, and ``flush()`` tells
    exactly when all of a step is acknowledged; faust's own changelog sends
    are fire-and-forget (a failure is only logged) and its flush before a
    commit gives up after a timeout.
    """

    def __init__(
        self,
        settings: Settings,
        stage: str,
        partitions: Mapping[str, int],
        faults: FaultPlan,
        producer: Producer | None = None,
    ) -> None:
        self.settings = settings
        self.stage = stage
        self.partitions = partitions
        self.faults = faults
        self.tracker = DeliveryTracker()
        # linger only matters between flushes; a flush sends at once
        self.producer = producer or make_producer(settings, on_delivery=self.tracker, **{"linger.ms": 5})
        self.steps = 0
        self.records_out = 0
        self.state_records = 0
        self._unsettled = False  # state records produced and not yet known acknowledged

    def send_outputs(self, emissions: Sequence[Emission]) -> None:
        """Produce the outputs of a step and wait until every one is acknowledged."""
        if not emissions:
            return
        missing = {name for name, _k, _v in emissions} - self.partitions.keys()
        if missing:
            raise FatalError(f"topics {sorted(missing)} do not exist; run `o2o init`")
        topic = self.settings.topic
        batched = [e for e in emissions if e[0] not in ONE_RECORD_PER_MESSAGE]
        for name, partition, value in pack(batched, self.partitions, spread=ROW_TOPICS):
            produce(self.producer, topic(name), value, partition=partition)
        for name, key, record in emissions:
            if name in ONE_RECORD_PER_MESSAGE:
                produce(self.producer, topic(name), orjson.dumps(record), key.encode())
        self.records_out += len(emissions)
        self._flush("outputs")

    def write_state(self, changes: Iterable[ChangelogRecord], settle: bool = True) -> None:
        """Produce a step's changelog records; with ``settle``, wait until every one is acknowledged.

        Without ``settle`` the records are acknowledged by the next flush: the
        next step's outputs or :meth:`settle`.
        """
        count = 0
        for change in changes:
            produce(self.producer, change.topic, change.value, change.key, partition=change.partition)  # type: ignore[arg-type]
            count += 1
        if count:
            self.state_records += count
            self._unsettled = True
            if settle:
                self._flush("state")

    def commit_step(
        self,
        emissions: Sequence[Emission],
        changes: Iterable[ChangelogRecord],
        points: Sequence[str],
        settle: bool = True,
    ) -> None:
        """Outputs durable, then state produced, and durable too unless ``settle`` is False.

        The named fault ``points`` lie between the two. ``settle=False`` (the
        steps of a batch): the state is acknowledged together with the next
        step's outputs, whose flush waits for everything produced before them;
        the caller calls :meth:`settle` before the batch's input is acknowledged.
        """
        self.send_outputs(emissions)
        for point in points:
            self.faults.reach(point)
        self.write_state(changes, settle=settle)
        self.steps += 1

    def settle(self) -> None:
        """Wait until every record produced so far is acknowledged (state left unsettled included)."""
        if self._unsettled:
            self._flush("state")

    def _flush(self, what: str) -> None:
        left = self.producer.flush(FLUSH_TIMEOUT_SECONDS)
        self._unsettled = False  # a flush waits for everything produced before it
        if left:
            raise DeliveryFailed(f"{self.stage}: {left} {what} records not acknowledged within "
                                 f"{FLUSH_TIMEOUT_SECONDS:.0f} s")  # fmt: skip
        self.tracker.raise_if_failed()
