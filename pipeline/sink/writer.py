"""The sink's batching: row messages -> column lists -> ClickHouse inserts (no Kafka here)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Container, Iterable
from typing import Any, Protocol

from pipeline.errors import ClickHouseUnavailable, PipelineError
from pipeline.kafka.envelopes import unpack
from pipeline.model.rows import DEAD_LETTERS, RowTable

log = logging.getLogger(__name__)


class Inserter(Protocol):
    """What the batcher needs of a ClickHouse connection."""

    def insert(self, table: str, rows: list[list[Any]], column_names: list[str]) -> object:
        """Insert rows into ``table`` (storage table name, database implied)."""


def dead_letter_row(value: bytes, headers: Iterable[tuple[str, bytes | None]]) -> list[Any]:
    """The dead_letters row of a message of the dead-letter topic."""
    meta = {k: (v or b"").decode("utf-8", "replace") for k, v in headers}
    topic = meta.get("o2o.topic", "")
    partition = int(meta.get("o2o.partition") or 0)
    offset = int(meta.get("o2o.offset") or 0)
    return [
        f"{topic}:{partition}:{offset}",
        meta.get("o2o.reason", "unknown"),
        meta.get("o2o.detail", ""),
        value,
        topic,
        partition,
        offset,
        int(meta.get("o2o.received_at") or time.time() * 1000),
        1,
    ]


class RowBatcher:
    """Buffers rows per table and writes them in batches."""

    def __init__(
        self,
        inserter: Inserter,
        batch_rows: int,
        flush_seconds: float,
        after_table: Callable[[], None] = lambda: None,
        observe: Callable[[str, float], None] = lambda _table, _seconds: None,
    ) -> None:
        self.inserter = inserter
        self.after_table = after_table  # called after each table's insert (a fault-injection point)
        self.observe = observe  # told each insert's storage table and seconds (the sink's metrics)
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.buffers: dict[RowTable, list[list[Any]]] = {}
        self.pending = 0
        self.written: Counter[str] = Counter()
        self.tombstones = 0  # empty messages of compacted topics, skipped
        # when the first message since the last flush() was added (None: none was; their
        # offsets are committed only after a flush)
        self._first_at: float | None = None

    def add(
        self,
        table: RowTable,
        value: bytes,
        headers: Iterable[tuple[str, bytes | None]] = (),
        erased: Container[str] = (),
    ) -> None:
        """Buffer the rows of one message of ``table`` (an envelope, one row, or a dead letter).

        Rows of an ``erased`` person (``o2o forget``) still in flight are dropped.
        """
        if table is DEAD_LETTERS:
            rows = [dead_letter_row(value, headers)]
        elif not value:
            # a tombstone on a compacted topic (`o2o forget` deleting a person's delivery
            # records): the rows are gone from ClickHouse too; nothing to insert
            self.tombstones += 1
            return
        else:
            columns = table.columns
            docs = unpack(value)
            if erased:
                docs = [doc for doc in docs if doc.get("person_id") not in erased]
            for fallback_column, source in table.fallbacks:
                for doc in docs:
                    if doc.get(fallback_column) is None:
                        doc[fallback_column] = doc.get(source)
            for default_column, default in table.defaults:
                for doc in docs:
                    if doc.get(default_column) is None:
                        doc[default_column] = default
            rows = [[doc.get(column) for column in columns] for doc in docs]
        if self._first_at is None:
            self._first_at = time.monotonic()
        self.buffers.setdefault(table, []).extend(rows)
        self.pending += len(rows)

    def full(self) -> bool:
        """True when the buffer holds a whole batch of rows."""
        return self.pending >= self.batch_rows

    def due(self) -> bool:
        """True when the buffer is full, or the first row added since the last flush waited long enough.

        Rows inserted early (a full batch as it came) count too: their offsets
        are committed only after a flush, and under steady input the sink would
        otherwise insert for ever without committing.
        """
        return self.pending >= self.batch_rows or (
            self._first_at is not None and time.monotonic() - self._first_at >= self.flush_seconds
        )

    def flush(self) -> None:
        """Insert what is buffered: everything added so far is in ClickHouse (the sink commits next)."""
        if self.pending:
            self.write()
        self._first_at = None

    def write(self) -> None:
        """Insert every buffered table; a table leaves the buffer only once inserted."""
        for table in list(self.buffers):
            rows = self.buffers[table]
            started = time.monotonic()
            try:
                self.inserter.insert(table.storage, rows, list(table.columns))
            except PipelineError:
                raise
            except Exception as exc:
                raise ClickHouseUnavailable(f"insert into {table.storage} failed: {exc}") from exc
            self.observe(table.storage, time.monotonic() - started)
            self.written[table.name] += len(rows)
            self.pending -= len(rows)
            del self.buffers[table]
            self.after_table()
