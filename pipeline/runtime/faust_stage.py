"""Thin faust-streaming wiring around a stateful stage's pure logic.

A :class:`StatefulHandler` names the tables it needs and turns batches of
decoded input records into outputs; this module builds a faust app (no global
app: one per call), gives the handler its changelog-backed tables, runs the
agent, sends the outputs, and in drain mode stops once everything upstream is
done and this stage's group has committed up to the end of its inputs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from functools import partial
from typing import Any, Protocol

import faust
import orjson
from faust.serializers import codecs

from pipeline.config import Settings
from pipeline.errors import FatalError
from pipeline.kafka.admin import group_lag, partition_counts
from pipeline.kafka.envelopes import pack, partition_for, unpack
from pipeline.kafka.topics import COMPACTED
from pipeline.runtime.drain import DrainGate

log = logging.getLogger(__name__)

Emission = tuple[str, str, dict[str, Any]]  # (topic without prefix, key, value)


class StatefulHandler(Protocol):
    """The pure side of a faust stage."""

    @property
    def table_names(self) -> Sequence[str]:
        """Names of the state tables the handler needs."""

    @property
    def inputs(self) -> Sequence[str]:
        """Input topics, without the prefix."""

    def bind(self, tables: Mapping[str, MutableMapping[str, Any]], partitions: int = 1) -> None:
        """Receive the state tables (faust tables in a worker, dicts in tests).

        ``partitions`` is the input topics' partition count: a record keyed
        ``k`` came from partition ``murmur2(k) % partitions``.
        """

    def process(self, records: Sequence[dict[str, Any]]) -> list[Emission]:
        """Handle a batch of input records (already decoded)."""

    def tick(self) -> list[Emission]:
        """Periodic work in event or processing time (closing idle sessions)."""

    def flush(self) -> list[Emission]:
        """End of input in drain mode: emit everything still held."""


class _Utf8KeyCodec(codecs.Codec):
    """Table keys as plain UTF-8, the same bytes as the source topic's keys.

    With the default JSON codec a key ``p_1`` is written as ``"p_1"``, which
    hashes to another partition than the source message keyed ``p_1``; plain
    bytes keep a table's changelog partition equal to its source partition.
    """

    def _dumps(self, obj: Any) -> bytes:
        return obj.encode() if isinstance(obj, str) else bytes(obj)

    def _loads(self, s: bytes) -> Any:
        return s.decode()


class _OrjsonCodec(codecs.Codec):
    """State values as orjson: several times faster than faust's json codec."""

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def _loads(self, s: bytes) -> Any:
        # a deleted key's changelog record (tombstone) has an empty value
        return orjson.loads(s) if s else None


def _key_partition(key: Any, partitions: int) -> int:
    return partition_for(key.encode() if isinstance(key, str) else bytes(key), partitions)


def register_codecs() -> None:
    """Make the pipeline's faust codecs known (idempotent)."""
    codecs.register("o2o_utf8", _Utf8KeyCodec())
    codecs.register("o2o_orjson", _OrjsonCodec())


_DELETED = object()


class BatchCache(MutableMapping[str, Any]):
    """A write-behind view of a state table for one batch.

    Handlers read and write it like a dict; :meth:`write_back` then writes
    each changed key once. An event held and released within one batch, or a
    person touched by many events of a batch, costs one changelog record
    instead of one per change.
    """

    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self.table = table
        self.dirty: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        value = self.dirty[key] if key in self.dirty else self.table[key]
        if value is _DELETED or value is None:  # None: a deleted key restored from the changelog
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self.dirty[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self.dirty[key] = _DELETED

    def __contains__(self, key: object) -> bool:
        if key in self.dirty:
            return self.dirty[key] is not _DELETED  # type: ignore[index]
        return key in self.table and self.table[key] is not None  # type: ignore[index]

    def __iter__(self) -> Iterator[str]:
        for key in self.table:
            if key not in self.dirty and self.table[key] is not None:
                yield key
        for key, value in self.dirty.items():
            if value is not _DELETED:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        try:
            return self[key]
        except KeyError:
            return default

    def write_back(self) -> None:
        """Write every changed key to the table, once."""
        for key, value in self.dirty.items():
            if value is _DELETED:
                if key in self.table:
                    del self.table[key]
            else:
                self.table[key] = value
        self.dirty.clear()


def faust_broker_url(bootstrap_servers: str) -> str:
    """faust's broker URL for a Kafka bootstrap list."""
    return ";".join(f"kafka://{server.strip()}" for server in bootstrap_servers.split(","))


class FaustStage:
    """Runs a :class:`StatefulHandler` as a faust worker."""

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
        self._worker: faust.Worker | None = None
        self._outputs: dict[str, Any] = {}
        self._finished = False
        self._warned_alone = False
        self._consumed: list[str] = []
        # keyed by the name without prefix, as handlers emit them
        prefix = settings.topic_prefix
        self._partitions = {
            name.removeprefix(prefix): count for name, count in partition_counts(settings).items()
        }
        self.app = self._build_app()

    def _build_app(self) -> faust.App:
        settings = self.settings
        register_codecs()
        datadir = settings.state_dir / "faust" / settings.group(self.stage)
        datadir.parent.mkdir(parents=True, exist_ok=True)
        app = faust.App(
            settings.group(self.stage),
            broker=faust_broker_url(settings.bootstrap_servers),
            store="memory://",
            datadir=str(datadir),
            autodiscover=False,
            web_enabled=False,
            topic_partitions=settings.partitions,
            topic_replication_factor=settings.replication_factor,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            producer_compression_type="lz4",
            producer_linger=0.02,  # batch outputs; aiokafka sends one request per message otherwise
            producer_max_batch_size=1 << 20,
            broker_commit_interval=0.5 if self.drain else 2.0,
            broker_commit_every=self.batch_size,
            table_standby_replicas=0,
            broker_session_timeout=10.0,  # faust's default of 60 s delays every restart after a crash
            broker_heartbeat_interval=3.0,
            stream_buffer_maxsize=8192,
        )
        tables = {}
        source_partitions = max(
            self._partitions.get(name, settings.partitions) for name in self.handler.inputs
        )
        for name in self.handler.table_names:
            table = app.Table(name, default=None, partitions=source_partitions)
            # A key's changelog partition is the partition its source messages
            # hash to (murmur2, like the producers'), computed here: faust's
            # default needs the current event (no timers, no drain flush) and
            # its use_partitioner mode needs producer metadata that may not be
            # loaded yet on the first write.
            table.partition_for_key = partial(_key_partition, partitions=source_partitions)  # type: ignore[method-assign]
            table.key_serializer = "o2o_utf8"  # type: ignore[attr-defined]
            table.value_serializer = "o2o_orjson"  # type: ignore[attr-defined]
            # the changelog topic was already made (with JSON codecs) when the
            # table registered itself; make it again with these codecs
            table.changelog_topic = table._new_changelog_topic()  # type: ignore[attr-defined]
            tables[name] = BatchCache(table)
        self._caches = list(tables.values())
        self.handler.bind(tables, partitions=source_partitions)
        source = app.topic(*self.inputs, key_serializer="raw", value_serializer="raw")

        async def agent(stream: Any) -> None:
            async for batch in stream.take(self.batch_size, within=0.2):
                records = [record for value in batch for record in unpack(value)]
                emitted = self.handler.process(records)
                self._write_back()
                await self._send(emitted)
                self.processed += len(records)

        app.agent(source, name=f"{self.stage}_agent")(agent)
        forward_from = [settings.topic(name) for name in getattr(self.handler, "forward_from", ())]
        if forward_from:
            # several processes of this stage: each passes its share of these topics on
            # to the handler's own (one-partition) input, whose owner does the work
            upstream = app.topic(*forward_from, key_serializer="raw", value_serializer="raw")

            async def forwarder(stream: Any) -> None:
                async for batch in stream.take(self.batch_size, within=0.2):
                    await self._send(self.handler.forward([r for value in batch for r in unpack(value)]))  # type: ignore[attr-defined]

            app.agent(upstream, name=f"{self.stage}_forwarder")(forwarder)
        self._consumed = [*self.inputs, *forward_from]
        app.timer(self.tick_seconds)(self._tick)
        if self.drain is not None:
            app.timer(0.5)(self._check_drained)
        return app

    def _topic(self, name: str) -> Any:
        topic = self._outputs.get(name)
        if topic is None:
            topic = self.app.topic(
                self.settings.topic(name),
                key_serializer="raw",
                value_serializer="raw",
                partitions=self._partitions.get(name, self.settings.partitions),
            )
            self._outputs[name] = topic
        return topic

    async def _send(self, emissions: Sequence[Emission], force: bool = False) -> None:
        if not emissions:
            return
        missing = {name for name, _k, _v in emissions} - self._partitions.keys()
        if missing:
            raise FatalError(f"topics {sorted(missing)} do not exist; run `o2o init`")
        batched = [e for e in emissions if e[0] not in COMPACTED]
        for name, partition, value in pack(batched, self._partitions):
            self._watch(await self._topic(name).send(value=value, partition=partition, force=force))
        for name, key, record in emissions:
            if name in COMPACTED:  # compaction needs one keyed message per record
                self._watch(
                    await self._topic(name).send(key=key.encode(), value=orjson.dumps(record), force=force)
                )

    def _watch(self, future: Any) -> None:
        """Stop the worker when Kafka refuses an output, so nothing after it is committed."""

        def check(done: Any) -> None:
            if not done.cancelled() and done.exception() is not None:
                # Exit at once: a clean faust stop commits the acked offsets,
                # which could include the input of the lost output.
                log.critical("%s: output not delivered: %r; exiting", self.stage, done.exception())
                logging.shutdown()
                os._exit(70)

        future.add_done_callback(check)

    def _write_back(self) -> None:
        for cache in self._caches:
            cache.write_back()

    async def _tick(self) -> None:
        if getattr(self.handler, "needs_every_partition", False):
            self._check_alone()
        if not self._finished:
            emitted = self.handler.tick()
            self._write_back()
            await self._send(emitted, force=True)

    async def _check_drained(self) -> None:
        assert self.drain is not None
        if self._finished or not self.drain.upstream_done():
            return
        if not self.app.consumer.assignment():
            return
        loop = asyncio.get_running_loop()
        lag = await loop.run_in_executor(
            None, group_lag, self.settings, self.settings.group(self.stage), self._consumed
        )
        if lag:
            return
        self._finished = True
        if not self._owns_input():
            # another process of this stage owns the input that does the work: it
            # flushes and leaves the marker; this one only forwarded
            log.info("%s: drained (forwarding only) after %d records", self.stage, self.processed)
            if self._worker is not None:
                self._worker._schedule_shutdown(signal.SIGTERM)
            return
        emitted = self.handler.flush()
        self._write_back()
        await self._send(emitted, force=True)
        await self.app.producer.flush()
        self.drain.mark_done()
        log.info("%s: drained after %d records", self.stage, self.processed)
        if self._worker is not None:
            self._worker._schedule_shutdown(signal.SIGTERM)

    def _check_alone(self) -> None:
        """Warn when another process of a single-process stage took some of its partitions."""
        own = set(self.inputs)
        held = {tp.partition for tp in self.app.consumer.assignment() if tp.topic in own}
        total = max(self._partitions.get(name, self.settings.partitions) for name in self.handler.inputs)
        if held and len(held) < total and not self._warned_alone:
            self._warned_alone = True
            log.error(
                "%s: this process holds %d of %d input partitions: another process of the stage runs; "
                "set O2O_IDENTITY_WORKERS to the number of processes (graph updates then go through "
                "one partition)", self.stage, len(held), total,
            )  # fmt: skip

    def _owns_input(self) -> bool:
        """True when this process holds a partition of the handler's own input."""
        own = set(self.inputs)
        return any(tp.topic in own for tp in self.app.consumer.assignment())

    def run(self) -> None:
        """Run the worker until stopped (a signal) or drained."""
        # faust stalls a stream whenever more than 100 changelog records wait
        # to be sent; batches write far more than that at once.
        self.app.producer.buffer.max_messages = 50_000
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        self._worker = faust.Worker(
            self.app, loglevel=level.lower() if level != "WARNING" else "warn", quiet=True,
            redirect_stdouts=False, override_logging=False,
        )  # fmt: skip
        try:
            self._worker.execute_from_commandline()
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise
