"""State tables of the faust stages: codecs, and the write-behind cache a batch works on.

faust hosts the tables (assignment, changelog recovery into memory); writing
them is the runtime's job (:mod:`pipeline.runtime.durable`): a batch's
changes are applied to the in-memory store and returned as changelog records,
which the runtime makes durable after the batch's outputs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson
from faust.serializers import codecs

from pipeline.errors import StateTooLarge
from pipeline.kafka.envelopes import partition_for

log = logging.getLogger(__name__)

Trim = Callable[[str, Any], Any]
"""``trim(key, value)``: a smaller value by the table's rule, or None when there is nothing left to drop."""

PartitionKey = Callable[[str], str]
"""``partition_key(key)``: the part of a table's key that decides its partition (the source message's key)."""


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


def register_codecs() -> None:
    """Make the pipeline's faust codecs known (idempotent)."""
    codecs.register("o2o_utf8", _Utf8KeyCodec())
    codecs.register("o2o_orjson", _OrjsonCodec())


def key_partition(key: Any, partitions: int) -> int:
    """The changelog (and source) partition of a state key: murmur2, like the producers'."""
    return partition_for(key.encode() if isinstance(key, str) else bytes(key), partitions)


@dataclass(frozen=True)
class ChangelogRecord:
    """One state change to make durable: a key's new value, or None for a deletion (tombstone)."""

    topic: str
    partition: int
    key: bytes
    value: bytes | None


_DELETED = object()


class BatchCache(MutableMapping[str, Any]):
    """A write-behind view of a state table for one batch.

    Handlers read and write it like a dict; :meth:`write_back` then applies
    each changed key once to the table's in-memory store and returns the
    changelog records for them. A person touched by many events of a batch
    costs one changelog record instead of one per change, and an event held
    and released within one batch none.
    """

    def __init__(
        self,
        store: MutableMapping[str, Any],
        changelog: str = "",
        partitions: int = 1,
        max_bytes: int = 0,
        trim: Trim | None = None,
        partition_key: PartitionKey | None = None,
    ) -> None:
        self.table = store
        self.changelog = changelog
        self.partitions = partitions
        self.partition_key = partition_key  # None: the whole key, like a source message's
        self.max_bytes = max_bytes  # 0: unbounded; else the largest value a changelog record may hold
        self.trim = trim
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

    def release(self, partitions: Collection[int]) -> int:
        """Drop the keys of ``partitions`` from memory (another process holds them now); how many.

        Nothing is written: the changelog keeps them for their new owner.
        """
        gone = [key for key in self.table if self.partition_of(key) in partitions]
        for key in gone:
            del self.table[key]
        for key in [key for key in self.dirty if self.partition_of(key) in partitions]:
            del self.dirty[key]
        return len(gone)

    def partition_of(self, key: str) -> int:
        """The changelog (and source) partition of ``key``."""
        return key_partition(self.partition_key(key) if self.partition_key else key, self.partitions)

    def discard(self) -> None:
        """Forget the batch's changes (nothing of them was applied)."""
        self.dirty.clear()

    def write_back(self) -> list[ChangelogRecord]:
        """Apply every changed key to the store, once; the changelog records of those changes."""
        records: list[ChangelogRecord] = []
        for key, value in self.dirty.items():
            encoded_key = key.encode()
            partition = self.partition_of(key)
            if value is _DELETED:
                if key not in self.table:
                    continue  # written and deleted within the batch: the changelog never held it
                del self.table[key]
                records.append(ChangelogRecord(self.changelog, partition, encoded_key, None))
            else:
                value, encoded = self._bounded(key, value)
                self.table[key] = value
                records.append(ChangelogRecord(self.changelog, partition, encoded_key, encoded))
        self.dirty.clear()
        return records

    def _bounded(self, key: str, value: Any) -> tuple[Any, bytes]:
        """``value`` and its encoding, trimmed by the table's rule until it fits ``max_bytes``.

        A hot key (a store kiosk's device id, a bot) can grow one person's state
        past what Kafka accepts in a record; without this, the changelog send
        would fail and the stage would stop at every restart.
        """
        encoded = orjson.dumps(value)
        size = len(encoded)
        while self.max_bytes and len(encoded) > self.max_bytes:
            smaller = self.trim(key, value) if self.trim is not None else None
            if smaller is None:
                raise StateTooLarge(
                    f"the state of {key!r} in {self.changelog} is {len(encoded)} bytes, over the "
                    f"{self.max_bytes} a changelog record may hold, and its table has no rule to trim it"
                )
            value = smaller
            encoded = orjson.dumps(value)
        if len(encoded) < size:
            log.warning("%s: trimmed the state of %r from %d to %d bytes (limit %d)",
                        self.changelog, key, size, len(encoded), self.max_bytes)  # fmt: skip
        return value, encoded
