"""Batch envelopes keep each key on the partition Kafka's default partitioner picks."""

from __future__ import annotations

import random
import zlib

import orjson
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as reference_murmur2

from pipeline.kafka.envelopes import murmur2, pack, partition_for, record_steps, unpack


def test_partition_matches_the_java_and_aiokafka_default_partitioner() -> None:
    partitioner = DefaultPartitioner()
    partitions = list(range(6))
    for key in (b"p_1", b"user_id:u1", b"s_abc", "é".encode()):
        assert partition_for(key, 6) == partitioner(key, partitions, partitions)


def test_murmur2_equals_the_reference_for_every_length_and_tail() -> None:
    rng = random.Random(5)
    keys = [b"", *(bytes(rng.randrange(256) for _ in range(n)) for n in range(1, 70) for _ in range(20))]
    for key in keys:
        assert murmur2(key) == reference_murmur2(key) & 0xFFFFFFFF, key


def test_row_topics_are_spread_by_crc32_and_keep_each_key_on_one_partition() -> None:
    records = [("rows.x", f"row{i}", {"i": i}) for i in range(40)] + [("t", "k", {"i": -1})]
    messages = pack(records, {"rows.x": 4, "t": 4}, spread={"rows.x"})
    for topic, partition, value in messages:
        for record in unpack(value):
            key = f"row{record['i']}".encode() if topic == "rows.x" else b"k"
            expected = zlib.crc32(key) % 4 if topic == "rows.x" else partition_for(key, 4)
            assert partition == expected
    assert len({p for t, p, _v in messages if t == "rows.x"}) > 1


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


def test_record_steps_keep_order_bound_each_step_and_never_split_an_envelope() -> None:
    envelopes = [
        orjson.dumps([{"n": n, "of": m} for n in range(size)]) for m, size in enumerate([3, 1, 4, 2, 5])
    ]
    values = [*envelopes, orjson.dumps({"n": 0, "of": 5})]  # a single record, not an envelope
    steps = list(record_steps(values, 4))
    assert [len(step) for step in steps] == [4, 4, 7, 1]  # a step ends after the envelope that filled it
    flat = [record for step in steps for record in step]
    assert flat == [record for value in values for record in unpack(value)]
    assert list(record_steps([], 4)) == []
    # bounded by bytes too: each large message its own step, whatever the record count
    large = [orjson.dumps({"n": n, "pad": "x" * 1000}) for n in range(3)]
    assert [len(step) for step in record_steps(large, 5000, max_bytes=1000)] == [1, 1, 1]
    assert [len(step) for step in record_steps(large, 5000, max_bytes=2000)] == [2, 1]
