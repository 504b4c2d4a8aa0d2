"""The sink stage: row topics -> ClickHouse, committing offsets only after the insert."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Message

from pipeline.config import Settings
from pipeline.errors import RetryableError
from pipeline.identity.erasure import Suppressions
from pipeline.model.rows import ROW_TABLES
from pipeline.runtime.faults import FaultPlan
from pipeline.sink.writer import Inserter, RowBatcher

log = logging.getLogger(__name__)


class SinkHandler:
    """Buffers row messages and writes them to ClickHouse in batches."""

    def __init__(
        self,
        settings: Settings,
        inserter: Inserter,
        observe: Callable[[str, float], None] = lambda _table, _seconds: None,
    ) -> None:
        self.tables = {settings.topic(table.topic): table for table in ROW_TABLES}
        faults = FaultPlan("sink", settings.fault_at)
        rows, seconds = settings.sink_batch_rows, settings.sink_flush_seconds
        self.batcher = RowBatcher(inserter, rows, seconds, lambda: faults.reach("mid_insert"), observe)
        self.suppressions = Suppressions(settings, "sink-suppressions").load()

    @property
    def topics(self) -> list[str]:
        """The topics the sink reads."""
        return list(self.tables)

    def handle(self, messages: Sequence[Message]) -> None:
        """Buffer a batch of row messages, inserting each time a whole batch of rows is buffered.

        A batch of messages can hold millions of rows (each message is an
        envelope of up to thousands): inserting as the rows come keeps the
        buffer near ``O2O_SINK_BATCH_ROWS``. The offsets are committed only
        after the whole batch is written (:meth:`make_durable`). When an insert
        fails here, the rows stay buffered and :meth:`make_durable` retries.
        """
        self.suppressions.refresh()
        erased = self.suppressions.persons
        insert_early = True
        for message in messages:
            table = self.tables[message.topic() or ""]
            raw_headers: list[tuple[str, Any]] = list(message.headers() or [])  # type: ignore[arg-type]
            headers = [(k, v if isinstance(v, bytes | None) else str(v).encode()) for k, v in raw_headers]
            self.batcher.add(table, message.value() or b"", headers, erased)
            if insert_early and self.batcher.full():
                try:
                    self.batcher.write()
                except RetryableError as exc:
                    log.warning("sink: %s; keeping the rows for the commit's retries", exc)
                    insert_early = False

    def due(self) -> bool:
        """Write when the batch is full or old enough."""
        return self.batcher.due()

    def progress(self, at_end: Sequence[tuple[str, int]], final: bool = False) -> None:
        """Called at every poll, input or not: read new suppressions (``o2o forget`` waits for it)."""
        self.suppressions.refresh()

    def revoked(self, partitions: Sequence[tuple[str, int]]) -> None:
        """The sink keeps nothing per partition."""

    def make_durable(self) -> None:
        """Insert everything buffered (raises ClickHouseUnavailable to retry)."""
        self.batcher.flush()

    def close(self) -> None:
        """Report what was written."""
        self.suppressions.close()
        log.info("sink wrote %s", dict(self.batcher.written))
