"""Identity's held events in state: one key per event, on its source message's partition.

The reorder buffer keeps every event it holds in ``identity_pending`` so a
restart finds it again. Each held event has a key of its own, so holding one
more event of a source key, or releasing one, writes that event alone to the
changelog, never the source key's whole list again; the key's changelog
partition stays that of the source message, which is what faust restores
for the process that owns the input partition.
"""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.identity.reorder import DurableReorder, held_key, held_partition_key
from pipeline.runtime.state import BatchCache, key_partition

PARTITIONS = 8


def ev(at: int, cookie: str, source: str = "web") -> dict[str, Any]:
    return {"event_id": f"{cookie}-{at}", "source": source, "occurred_at": at, "cookie": cookie}


def reorder_over(store: dict[str, Any]) -> tuple[DurableReorder, BatchCache]:
    reorder = DurableReorder(key_of=lambda e: f"cookie:{e['cookie']}", idle_seconds=60)
    cache = BatchCache(store, "pending-changelog", PARTITIONS, partition_key=held_partition_key)
    reorder.bind(cache)
    reorder.buffer.expect(["web", "app"])  # app has not sent: web's events are held
    return reorder, cache


def test_each_held_event_is_written_once_on_its_source_keys_partition() -> None:
    reorder, cache = reorder_over({})
    written = []
    for at in (1, 2, 3):  # three steps, one more event of one cookie each
        assert reorder.add_all([ev(at, "c1")]) == []
        written.append(cache.write_back())

    assert [[orjson.loads(r.value or b"")["event_id"] for r in step] for step in written] == [
        ["c1-1"], ["c1-2"], ["c1-3"]
    ]  # fmt: skip
    source_partition = key_partition("cookie:c1", PARTITIONS)
    assert {r.partition for step in written for r in step} == {source_partition}

    released = reorder.add_all([ev(5, "c2", source="app")])  # app passes 3: c1's events go, c2's is held
    changes = {r.key.decode(): r for r in cache.write_back()}
    assert [e["event_id"] for e in released] == ["c1-1", "c1-2", "c1-3"]
    assert {key: r.value for key, r in changes.items() if r.value is None} == {
        held_key("cookie:c1", f"c1-{at}"): None for at in (1, 2, 3)
    }  # fmt: skip
    held = changes[held_key("cookie:c2", "c2-5")]
    assert held.value == orjson.dumps(ev(5, "c2", source="app"))
    assert held.partition == key_partition("cookie:c2", PARTITIONS) and len(changes) == 4


def test_an_event_held_and_released_in_one_step_writes_nothing() -> None:
    reorder, cache = reorder_over({})
    released = reorder.add_all(
        [ev(5, "c2", source="app"), ev(1, "c1")]
    )  # web's 1 goes at once, app's 5 waits
    assert [e["event_id"] for e in released] == ["c1-1"]
    assert [r.key.decode() for r in cache.write_back()] == [held_key("cookie:c2", "c2-5")]


def test_lists_written_by_the_older_layout_are_read_back_and_rewritten_one_key_per_event() -> None:
    old = [ev(1, "c1"), ev(2, "c1")]
    store: dict[str, Any] = {"cookie:c1": old}
    reorder, cache = reorder_over(store)

    assert reorder.add_all([]) == []  # restored, still held
    rewritten = {r.key.decode(): r.value for r in cache.write_back()}
    assert rewritten == {
        "cookie:c1": None,
        held_key("cookie:c1", "c1-1"): orjson.dumps(old[0]),
        held_key("cookie:c1", "c1-2"): orjson.dumps(old[1]),
    }
    assert [e["event_id"] for e in reorder.release(everything=True)] == ["c1-1", "c1-2"]
    cache.write_back()
    assert store == {}


def test_a_partition_move_drops_the_held_events_of_that_partition_by_their_source_key() -> None:
    reorder, cache = reorder_over({})
    cookies = [f"c{n}" for n in range(40)]
    reorder.add_all([ev(1, cookie) for cookie in cookies])
    cache.write_back()
    moved = {key_partition(f"cookie:{cookies[0]}", PARTITIONS)}

    dropped = cache.release(moved)

    kept = {held_partition_key(key) for key in cache.table}
    assert dropped == sum(1 for c in cookies if key_partition(f"cookie:{c}", PARTITIONS) in moved) > 0
    assert kept and all(key_partition(key, PARTITIONS) not in moved for key in kept)


def test_the_partition_key_of_a_held_key_is_its_source_key_whatever_the_ids_hold() -> None:
    for source_key, event_id in [("cookie:a", "e1"), ('["x"', '"],'), ("", "e"), ("k\x1fj", "\n")]:
        assert held_partition_key(held_key(source_key, event_id)) == source_key
    assert held_partition_key("cookie:a") == "cookie:a"  # a key of the older layout
    assert held_partition_key('["not json') == '["not json'


def test_events_kept_from_before_a_restart_wait_for_their_streams_older_events_read_again() -> None:
    # before the restart: web had passed 100 (held, kept in state); offsets from 60 on were
    # not committed, and the partition is read again from a hole after app's newer events
    store: dict[str, Any] = {held_key("cookie:c1", "c1-100"): ev(100, "c1")}
    reorder, _cache = reorder_over(store)
    released = reorder.add_all([ev(at, "a1", source="app") for at in (70, 110, 150)])
    assert released == []  # web, read again from its hole, has not sent yet: it holds everything
    released += reorder.add_all([ev(60, "c1"), ev(80, "c1"), ev(100, "c1"), ev(160, "c1")])
    assert [e["occurred_at"] for e in released] == [60, 70, 80, 100, 100, 110, 150]
    assert reorder.buffer.late == 0


def test_events_kept_from_before_a_restart_go_once_every_stream_says_it_is_caught_up() -> None:
    reorder, _cache = reorder_over({held_key("cookie:c1", "c1-100"): ev(100, "c1")})
    assert reorder.add_all([]) == []
    reorder.buffer.progress("web", caught_up=True)
    reorder.buffer.progress("app", caught_up=True)
    assert [e["event_id"] for e in reorder.release()] == ["c1-100"]
