"""Batch envelopes keep each key on the partition Kafka's default partitioner picks."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from pipeline.kafka.envelopes import pack, partition_for, unpack


def test_partition_matches_the_java_and_aiokafka_default_partitioner() -> None:
    partitioner = DefaultPartitioner()
    partitions = list(range(6))
    for key in (b"p_1", b"user_id:u1", b"s_abc", "é".encode()):
        assert partition_for(key, 6) == partitioner(key, partitions, partitions)


def test_pack_groups_by_partition_in_order_and_unpacks() -> None:
    records = [("t", f"k{i % 3}", {"i": i}) for i in range(30)]
    messages = pack(records, {"t": 4})
    seen: dict[str, list[int]] = {}
    for topic, partition, value in messages:
        assert topic == "t"
        for record in unpack(value):
            key = f"k{record['i'] % 3}"
            assert partition_for(key.encode(), 4) == partition
            seen.setdefault(key, []).append(record["i"])
    assert seen == {f"k{j}": list(range(j, 30, 3)) for j in range(3)}


def test_pack_splits_large_envelopes_and_unpack_accepts_single_records() -> None:
    records = [("t", "same", {"blob": "x" * 100}) for _ in range(50)]
    messages = pack(records, {"t": 1}, max_bytes=1000)
    assert len(messages) > 1
    assert all(len(value) <= 1000 for _t, _p, value in messages)
    assert sum(len(unpack(value)) for _t, _p, value in messages) == 50
    assert unpack(b'{"a": 1}') == [{"a": 1}]
