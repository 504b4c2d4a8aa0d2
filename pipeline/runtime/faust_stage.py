"""Thin faust-streaming wiring around a stateful stage's pure logic.

A :class:`~pipeline.model.handler.StatefulHandler` names the tables it needs
and turns batches of decoded input records into outputs; this module builds
a faust app (no global app: one per call) that hosts the tables (group
membership, assignment, changelog recovery) and the timers, and runs every
step of the handler through the commit protocol of
:mod:`pipeline.runtime.durable`: outputs durable, then state, then the input
acknowledged. In drain mode it stops once everything upstream is done and
this stage's group has committed up to the end of its inputs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NoReturn, TypeVar

import faust

from pipeline.config import Settings
from pipeline.errors import DrainInterrupted
from pipeline.kafka.admin import partition_counts
from pipeline.kafka.clients import process_client_id
from pipeline.kafka.envelopes import key_for_partition, record_steps, unpack
from pipeline.kafka.layout import check_layout
from pipeline.kafka.security import faust_credentials
from pipeline.kafka.topics import epoch_table
from pipeline.model.handler import StatefulHandler
from pipeline.model.limits import message_bytes
from pipeline.private_files import private_dir
from pipeline.runtime.drain import DrainGate
from pipeline.runtime.durable import DurableWriter
from pipeline.runtime.faults import FaultPlan
from pipeline.runtime.faust_drain import FaustDrain
from pipeline.runtime.faust_input import OrderedInput
from pipeline.runtime.faust_tables import state_tables
from pipeline.runtime.recovery_watch import RecoveryGuard
from pipeline.runtime.state import BatchCache, ChangelogRecord, register_codecs
from pipeline.runtime.unhanded import UnhandedRecords

log = logging.getLogger(__name__)

T = TypeVar("T")

EPOCH_SHIFT = 32
"""Versions a stage emits after its partitions' n-th start are at least ``n << EPOCH_SHIFT``."""

HANDOVER_RECORDS = frozenset({"merge", "handoff"})

TAKE_WITHIN_SECONDS = 0.05
"""How long ``take()`` waits to fill a batch: at low rates each hop adds up to this much latency."""

STEP_BYTES = 16 << 20
"""A step also ends once its messages reach this many bytes (a few records near the size limit)."""

LONG_STEP_SECONDS = 1.0
"""A step that held the event loop longer is logged, with how long handling and committing took."""

STEP_RECORDS = 2000
"""Records decoded and handled per step; outputs and state are made durable once per step.

A message may be an envelope of a thousand records, and a batch of a backlog
a hundred envelopes: decoded at once, journeys peaked at 666-828 MiB in the
bench, against about 210 MiB in steps of this size.
"""


class _Worker(faust.Worker):
    """faust's worker, leaving the process title alone (``o2o run <stage>``, see stage_child.py)."""

    def _setproctitle(self, info: str, *, ident: str = "") -> None:
        pass


def faust_broker_url(bootstrap_servers: str) -> str:
    """faust's broker URL for a Kafka bootstrap list."""
    return ";".join(f"kafka://{server.strip()}" for server in bootstrap_servers.split(","))


class FaustStage:
    """Runs a :class:`StatefulHandler` as a faust worker, every step through the commit protocol."""

    def __init__(
        self,
        settings: Settings,
        stage: str,
        inputs: Sequence[str],
        handler: StatefulHandler,
        drain: DrainGate | None = None,
        tick_seconds: float = 5.0,
        batch_size: int = 1000,
    ) -> None:
        self.settings = settings
        self.stage = stage
        self.inputs = [settings.topic(name) for name in inputs]
        self.handler = handler
        self.drain = drain
        self.tick_seconds = tick_seconds
        self.batch_size = batch_size
        self.processed = 0
        self.longest_step = (0.0, 0)  # seconds a step held the event loop (handling and commit), its records
        self._worker: faust.Worker | None = None
        self._finished = False
        self._held: set[int] = set()  # input partitions assigned here at the last rebalance
        self._warned_alone = False
        self._caches: dict[str, BatchCache] = {}
        self.epochs: dict[int, int] = {}  # owned source partition -> the epoch it runs under here
        # keyed by the name without prefix, as handlers emit them
        prefix = settings.topic_prefix
        counts = partition_counts(settings, every=True)
        check_layout(settings, stage, counts)
        self._partitions = {
            name.removeprefix(prefix): count for name, count in counts.items() if name.startswith(prefix)
        }
        self.faults = FaultPlan(stage, settings.fault_at)
        self.writer = DurableWriter(settings, stage, self._partitions, self.faults)
        self.source_partitions = max(
            self._partitions.get(name, settings.partitions) for name in self.handler.inputs
        )
        self.app = self._build_app()

    def _build_app(self) -> faust.App:
        settings = self.settings
        register_codecs()
        datadir = settings.state_dir / "faust" / settings.group(self.stage)
        private_dir(datadir.parent)
        app = faust.App(
            settings.group(self.stage),
            broker=faust_broker_url(settings.bootstrap_servers),
            broker_credentials=faust_credentials(settings),  # TLS and SASL, as every other client
            store="memory://",
            datadir=str(datadir),
            autodiscover=False,
            web_enabled=False,
            topic_partitions=settings.partitions,
            topic_replication_factor=settings.replication_factor,
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=0.5 if self.drain else 2.0,
            broker_commit_every=self.batch_size,
            table_standby_replicas=0,
            # faust's default of 60 s would delay every restart after a crash
            broker_session_timeout=settings.group_session_timeout_seconds,
            broker_max_poll_interval=settings.max_poll_interval_seconds,
            broker_heartbeat_interval=settings.group_session_timeout_seconds / 3,
            stream_buffer_maxsize=8192,
            broker_client_id=process_client_id(settings, self.stage),
            consumer_max_fetch_size=message_bytes(settings),  # one whole message of any allowed size
        )
        partitions = self.source_partitions
        names = (*self.handler.table_names, epoch_table(self.stage))
        self._caches = state_tables(app, names, self.handler, settings, partitions, self.faults)
        self.handler.bind(
            {name: self._caches[name] for name in self.handler.table_names}, partitions=partitions
        )
        source = app.topic(*self.inputs, key_serializer="raw", value_serializer="raw")
        forward_from = [settings.topic(name) for name in getattr(self.handler, "forward_from", ())]
        self.input = OrderedInput(app, settings, self.stage, [*self.inputs, *forward_from], self.faults)
        self.unhanded = UnhandedRecords(app, self.stage, self.faults)
        self.recovery_guard = RecoveryGuard(app, self.stage)

        async def agent(stream: Any) -> None:
            async for events in stream.take_events(self.batch_size, within=TAKE_WITHIN_SECONDS):
                batch = await self._admitted(events)
                if batch:
                    # Each step runs without an await (nothing interrupts it half way);
                    # take_events() acknowledges the batch only after the last one.
                    await self._run_batch(batch)
                    await self._work_off_backlog()
                    # each step's state went with the next step's outputs; the last one's now
                    self._guarded(self.writer.settle)
                    self.faults.reach("before_ack")

        app.agent(source, name=f"{self.stage}_agent")(agent)
        if forward_from:
            # several processes of this stage: each passes its share of these topics on
            # to the handler's own (one-partition) input, whose owner does the work
            upstream = app.topic(*forward_from, key_serializer="raw", value_serializer="raw")

            async def forwarder(stream: Any) -> None:
                async for events in stream.take_events(self.batch_size, within=TAKE_WITHIN_SECONDS):
                    batch = await self._admitted(events)
                    records = [r for value in batch for r in unpack(value)]
                    if records:
                        self._guarded(self.writer.send_outputs, self.handler.forward(records))  # type: ignore[attr-defined]

            app.agent(upstream, name=f"{self.stage}_forwarder")(forwarder)
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        app.timer(self.tick_seconds)(self._tick)
        if self.drain is not None:
            self.drain_check = FaustDrain(
                settings, self.stage, self.drain, app.consumer, self._owned,
                partial(self._guarded, self._run_flush), self._finish, self.input.describe,
            )  # fmt: skip
            self.drain_check.consumed = [*self.inputs, *forward_from]
            app.timer(0.5)(self._check_drained)
        return app

    def _guarded(self, step: Callable[..., T], *args: Any) -> T:
        """Run (or read) one step; on any failure stop the process before anything more is acknowledged."""
        try:
            return step(*args)
        except BaseException as exc:
            self._exit_unacknowledged(exc)

    async def _admitted(self, events: Sequence[Any]) -> list[bytes]:
        """The batch's values to handle, in input order; a failure stops the process unacknowledged."""
        try:
            return await self.input.admit(events)
        except Exception as exc:
            self._exit_unacknowledged(exc)

    def _exit_unacknowledged(self, exc: BaseException) -> NoReturn:
        # A clean faust stop would acknowledge and commit the batch that failed.
        log.critical("%s: step failed, exiting without acknowledging it: %r", self.stage, exc,
                     exc_info=not isinstance(exc, KeyboardInterrupt))  # fmt: skip
        logging.shutdown()
        os._exit(70)

    def _changes(self) -> list[ChangelogRecord]:
        return [record for cache in self._caches.values() for record in cache.write_back()]

    async def _run_batch(self, batch: Sequence[bytes]) -> None:
        """The batch's records in steps, the event loop free between them (heartbeats, timers).

        Between two steps the state in memory is whole (each step's outputs are
        durable, its state produced and flushed with the next step's outputs,
        the last one's by ``settle`` before the batch is acknowledged), so a
        timer's tick may run there (it flushes everything); a rebalance waits for the
        batch to be acknowledged (faust's ``stream_wait_empty``), and a drain
        for it to be committed. A failure anywhere stops the process unacknowledged.
        """
        steps = record_steps(batch, STEP_RECORDS, STEP_BYTES)
        while True:
            records = self._guarded(next, steps, None)  # decoding happens here: a bad record fails here
            if records is None:
                return
            self._guarded(self._run_step, len(batch), records)
            await asyncio.sleep(0)

    def _run_step(self, messages: int, records: list[dict[str, Any]]) -> None:
        started = time.monotonic()
        self._open_epochs()
        emitted = self.handler.process(records)
        points = ["after_outputs"]
        if any(record.get("record") in HANDOVER_RECORDS for record in records):
            points.append("mid_handover")
        processed = time.monotonic()
        self.writer.commit_step(emitted, self._changes(), points, settle=False)
        self.faults.reach("after_state")
        self.processed += len(records)
        took = time.monotonic() - started
        if took > self.longest_step[0]:
            self.longest_step = (took, len(records))
        if took > LONG_STEP_SECONDS:  # heartbeats and timers waited behind it
            log.warning("%s: a step of %d records held the event loop %.1f s (%.1f s handling, %.1f s "
                        "making outputs and state durable, %d outputs)", self.stage, len(records), took,
                        processed - started, took - (processed - started), len(emitted))  # fmt: skip
        if log.isEnabledFor(logging.DEBUG):
            now = time.monotonic()
            log.debug("%s: step of %d records (from a batch of %d messages): %.0f ms processing, "
                      "%.0f ms committing (outputs and state durable), %d outputs",
                      self.stage, len(records), messages, (processed - started) * 1000,
                      (now - processed) * 1000, len(emitted))  # fmt: skip

    def _run_tick(self, settle: bool = True) -> None:
        self._open_epochs()
        self.writer.commit_step(self.handler.tick(), self._changes(), ["mid_tick"], settle=settle)

    def _run_flush(self) -> None:
        self._open_epochs()
        self.writer.commit_step(self.handler.flush(), self._changes(), ["mid_flush"])

    def _owned(self) -> set[int]:
        """The partitions of the handler's own input that this process holds."""
        own = set(self.inputs)
        return {tp.partition for tp in self.input.owned() if tp.topic in own}

    def _open_epochs(self) -> None:
        """Start a new epoch on partitions this process has just been given, durably, before any output.

        A replay after a crash may compute another version of a row than the
        one the crashed process had already sent (its state was not durable
        yet). Versions emitted under epoch n are at least ``n << EPOCH_SHIFT``,
        so the replay's rows outrank whatever the crashed run sent.
        """
        owned = self._owned()
        for partition in [p for p in self.epochs if p not in owned]:
            del self.epochs[partition]
        new = sorted(owned - self.epochs.keys())
        if not new:
            return
        cache = self._caches[epoch_table(self.stage)]
        for partition in new:
            key = key_for_partition("epoch", partition, self.source_partitions)
            self.epochs[partition] = int(cache.get(key) or 0)
            cache[key] = self.epochs[partition] + 1  # the next start of this partition runs above
        self.writer.write_state(self._changes())
        set_floor = getattr(self.handler, "set_version_floor", None)
        if set_floor is not None:
            set_floor(max(self.epochs.values()) << EPOCH_SHIFT)
        log.info("%s: epochs %s", self.stage, self.epochs)

    def _on_assigned(self, _sender: Any, *args: Any, **_kwargs: Any) -> None:
        """After a rebalance: let go of the partitions another process of this stage holds now.

        faust restores the partitions given to this process from their
        changelogs, but keeps in memory whatever this process wrote for the
        ones it lost. Left there, a drain flush or a timer would act on them
        (another process's persons) and, should they come back, stale keys
        would outlive their tombstones. So their keys go, and the handler
        drops what it derived from them (watermarks, deadline heaps, held
        events); it rebuilds that from the restored state when they are back.
        Runs between two steps (a step never awaits), before any restore.
        """
        assigned: set[Any] = args[0]
        own = set(self.inputs)
        held = {tp.partition for tp in assigned if tp.topic in own}
        lost, self._held = self._held - held, held
        if not lost:
            return
        dropped = sum(cache.release(lost) for cache in self._caches.values())
        release = getattr(self.handler, "release_partitions", None)
        if release is not None:
            release(lost)
        log.info("%s: partitions %s moved to another process; %d state keys dropped here, %s kept",
                 self.stage, sorted(lost), dropped, sorted(held))  # fmt: skip

    async def _work_off_backlog(self) -> None:
        """Run ticks, one step each and the event loop free between them, while the handler holds
        work its bounded steps left (``backlog()``: identity's events a watermark freed all at once)."""
        backlog = getattr(self.handler, "backlog", None)
        while backlog is not None and backlog() and not self._finished and self._ready():
            await asyncio.sleep(0)  # heartbeats and timers run between the steps
            self._guarded(self._run_tick, False)  # settled with the batch, before its input is acknowledged

    async def _tick(self) -> None:
        if getattr(self.handler, "needs_every_partition", False):
            self._check_alone()
        if self._finished or not self._ready():
            return
        self._guarded(self._run_tick)

    def _ready(self) -> bool:
        """True when this process owns input partitions and their state is fully restored."""
        recovery = getattr(self.app.tables, "recovery", None)
        if recovery is not None and getattr(recovery, "in_recovery", False):
            return False
        return bool(self._owned())

    async def _check_drained(self) -> None:
        """Drain mode: flush the partitions held here once the group committed all input (faust_drain.py)."""
        if not self._finished:
            await self.drain_check.check(self.source_partitions, self._step_figures)

    def _step_figures(self) -> dict[str, float]:
        took, records = self.longest_step
        return {"longest_step_seconds": took, "longest_step_records": records}

    def _finish(self, how: str) -> None:
        self._finished = True
        took, records = self.longest_step
        log.info("%s: %s after %d records here; longest step %.0f ms (%d records)",
                 self.stage, how, self.processed, took * 1000, records)  # fmt: skip
        if self._worker is not None:
            self._worker._schedule_shutdown(signal.SIGTERM)

    def _check_alone(self) -> None:
        """Warn when another process of a single-process stage took some of its partitions."""
        held, total = self._owned(), self.source_partitions
        if held and len(held) < total and not self._warned_alone:
            self._warned_alone = True
            log.error(
                "%s: this process holds %d of %d input partitions: another process of the stage runs; "
                "set O2O_IDENTITY_WORKERS to the number of processes (graph updates then go through "
                "one partition)", self.stage, len(held), total,
            )  # fmt: skip

    def run(self) -> None:
        """Run the worker until stopped (a signal) or drained."""
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        self._worker = _Worker(
            self.app, loglevel=level.lower() if level != "WARNING" else "warn", quiet=True,
            redirect_stdouts=False, override_logging=False,
        )  # fmt: skip
        try:
            self._worker.execute_from_commandline()
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise
        if self.drain is not None and not self._finished:
            raise DrainInterrupted(f"{self.stage}: stopped before it drained")
