"""The sink's batching: rows leave the buffer only once ClickHouse took them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.errors import ClickHouseUnavailable
from pipeline.ingest.stage import dead_letter_headers
from pipeline.model.rows import DEAD_LETTERS, IDENTITIES, SESSIONS
from pipeline.sink.writer import RowBatcher


class FlakyInserter:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.inserted: list[tuple[str, list[list[Any]], list[str]]] = []

    def insert(self, table: str, rows: list[list[Any]], column_names: list[str]) -> object:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("connection refused")
        self.inserted.append((table, list(rows), column_names))
        return len(rows)


def identity_row(i: int) -> dict[str, Any]:
    return {"id_type": "user_id", "id_value": f"u{i}", "person_id": "p", "first_seen": 1, "version": 1}


def test_failed_insert_keeps_the_batch_and_reports_a_retryable_error() -> None:
    inserter = FlakyInserter(failures=1)
    batcher = RowBatcher(inserter, batch_rows=10, flush_seconds=60)
    batcher.add(IDENTITIES, orjson.dumps([identity_row(1), identity_row(2)]))
    batcher.add(IDENTITIES, orjson.dumps(identity_row(3)))
    assert batcher.pending == 3 and not batcher.due()
    with pytest.raises(ClickHouseUnavailable):
        batcher.write()
    assert batcher.pending == 3
    batcher.write()
    assert batcher.pending == 0
    ((table, rows, columns),) = inserter.inserted
    assert table == "identities_store" and columns == list(IDENTITIES.columns)
    assert [r[1] for r in rows] == ["u1", "u2", "u3"]


def test_due_when_full() -> None:
    batcher = RowBatcher(FlakyInserter(0), batch_rows=2, flush_seconds=60)
    batcher.add(SESSIONS, orjson.dumps([{"session_id": "a"}, {"session_id": "b"}]))
    assert batcher.due()


def test_rows_inserted_as_they_came_still_make_a_commit_due() -> None:
    # under steady input the sink inserts each full batch at once; the offsets of
    # those rows are committed only at a flush, which must come within flush_seconds
    batcher = RowBatcher(FlakyInserter(0), batch_rows=2, flush_seconds=0)
    batcher.add(SESSIONS, orjson.dumps([{"session_id": "a"}, {"session_id": "b"}]))
    assert batcher.full()
    batcher.write()
    assert batcher.pending == 0 and batcher.due()
    batcher.flush()
    assert not batcher.due()


def test_dead_letter_row_keeps_original_bytes_and_source_position() -> None:
    inserter = FlakyInserter(0)
    batcher = RowBatcher(inserter, batch_rows=10, flush_seconds=60)
    headers = dead_letter_headers("malformed_json", "bad", "o2o.raw.web", 3, 42, 1000)
    batcher.add(DEAD_LETTERS, b"\xff{not json", headers)
    batcher.write()
    ((_table, (row,), _cols),) = inserter.inserted
    assert row[:8] == [
        "o2o.raw.web:3:42",
        "malformed_json",
        "bad",
        b"\xff{not json",
        "o2o.raw.web",
        3,
        42,
        1000,
    ]


def test_a_tombstone_of_a_compacted_topic_is_skipped_but_an_empty_dead_letter_kept() -> None:
    """`o2o forget` tombstones the person's delivery records; the sink must not choke on them."""
    from pipeline.model.rows import ROW_TABLES_BY_NAME

    deliveries = ROW_TABLES_BY_NAME["activation_deliveries"]
    batcher = RowBatcher(FlakyInserter(0), batch_rows=10, flush_seconds=60)
    batcher.add(deliveries, b"")
    assert (batcher.pending, batcher.tombstones) == (0, 1)
    batcher.add(DEAD_LETTERS, b"", dead_letter_headers("malformed_json", "empty", "o2o.raw.web", 0, 7, 1000))
    assert batcher.pending == 1  # an empty raw message is still a dead letter to keep
