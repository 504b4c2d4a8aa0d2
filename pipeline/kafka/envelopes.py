"""Batch envelopes: many records of one partition in one Kafka message.

Between the pipeline's own stages a message carries a JSON array of records
that all belong to the same partition (the partition their keys hash to,
exactly as Kafka's default partitioner would place them one by one). Order
within a partition is kept, and per-message costs -- which dominate in
faust's stream machinery and aiokafka's producer -- are paid once per batch
instead of once per record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import orjson
from aiokafka.partitioner import murmur2

MAX_ENVELOPE_BYTES = 512 * 1024


@lru_cache(maxsize=262_144)
def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives ``key``."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def key_for_partition(prefix: str, partition: int, partitions: int) -> str:
    """The first key ``<prefix>:<i>`` that lands on ``partition``: a per-partition slot in a state table."""
    i = 0
    while partition_for(f"{prefix}:{i}".encode(), partitions) != partition:
        i += 1
    return f"{prefix}:{i}"


def pack(
    records: Iterable[tuple[str, str, dict[str, Any]]],
    partitions: Mapping[str, int],
    max_bytes: int = MAX_ENVELOPE_BYTES,
) -> list[tuple[str, int, bytes]]:
    """Group (topic, key, record) by destination partition into envelopes.

    Returns (topic, partition, value) messages; an envelope is split when it
    would exceed ``max_bytes``.
    """
    groups: dict[tuple[str, int], list[bytes]] = {}
    for topic, key, record in records:
        partition = partition_for(key.encode(), partitions[topic])
        groups.setdefault((topic, partition), []).append(orjson.dumps(record))
    out: list[tuple[str, int, bytes]] = []
    for (topic, partition), encoded in groups.items():
        chunk: list[bytes] = []
        size = 2
        for item in encoded:
            if chunk and size + len(item) + 1 > max_bytes:
                out.append((topic, partition, b"[" + b",".join(chunk) + b"]"))
                chunk, size = [], 2
            chunk.append(item)
            size += len(item) + 1
        out.append((topic, partition, b"[" + b",".join(chunk) + b"]"))
    return out


def unpack(value: bytes) -> list[dict[str, Any]]:
    """The records of a message: an envelope's array, or a single record."""
    doc = orjson.loads(value)
    return doc if isinstance(doc, list) else [doc]
