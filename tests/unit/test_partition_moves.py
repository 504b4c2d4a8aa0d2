"""Partition moves between processes of a stage: what a process lets go of, and what it rebuilds.

A rebalance that gives some of a process's input partitions to another
process of the stage leaves their keys in this process's memory (faust
restores what a process is given, never clears what it loses). The runtime
drops them (:meth:`BatchCache.release`) and the handler forgets what it
derived from them; these tests show each piece does, and that a drain
flush afterwards acts only on the partitions still held.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from pipeline.config import Settings, load_settings
from pipeline.identity.reorder import DurableReorder
from pipeline.journeys.stage import JourneysHandler
from pipeline.model.event_clock import PartitionClock, watermark_key
from pipeline.runtime.drain import DrainGate, drain_figures, marker
from pipeline.runtime.faults import FaultPlan
from pipeline.runtime.faust_input import OrderedInput
from pipeline.runtime.state import BatchCache, key_partition

MIN = 60_000


def ev(at: int, person: str, n: int) -> dict[str, Any]:
    return {"event_id": f"{person}-{n}", "person_id": person, "source": "web", "type": "page_view",
            "occurred_at": at}  # fmt: skip


def journeys_over_caches(partitions: int = 4) -> tuple[JourneysHandler, dict[str, BatchCache]]:
    handler = JourneysHandler(Settings(idle_partition_seconds=60))  # type: ignore[call-arg]
    names = ("journeys_state", "journeys_watermarks", "journeys_forward")
    caches = {name: BatchCache({}, f"{name}-changelog", partitions) for name in names}
    handler.bind(caches, partitions=partitions)  # type: ignore[arg-type]
    return handler, caches


def test_release_drops_only_the_moved_partitions_keys() -> None:
    cache = BatchCache({}, "t-changelog", partitions=4)
    keys = [f"p{i}" for i in range(40)]
    for key in keys:
        cache[key] = {"n": 1}
    cache.write_back()
    cache["p-pending"] = {"n": 2}  # a change not written back yet goes too, when its partition moved
    moved = {key_partition("p0", 4), key_partition("p1", 4)}

    dropped = cache.release(moved)

    kept = [key for key in keys if key_partition(key, 4) not in moved]
    assert dropped == len(keys) - len(kept) > 0
    assert sorted(cache) == sorted(kept + ([] if key_partition("p-pending", 4) in moved else ["p-pending"]))
    assert all(record.key.decode() not in keys for record in cache.write_back())


def test_a_flush_after_a_move_acts_only_on_the_persons_still_held() -> None:
    """Left in memory, a moved person's state would be finalised here too, and written to the
    changelog over what the process holding it now wrote there."""
    handler, caches = journeys_over_caches()
    names = (f"p{i}" for i in itertools.count())
    here = next(names)
    gone = next(name for name in names if handler.partition_of(name) != handler.partition_of(here))
    handler.process([ev(0, here, 1), ev(0, gone, 1), ev(5 * MIN, here, 2), ev(5 * MIN, gone, 2)])
    for cache in caches.values():
        cache.write_back()
    moved = {handler.partition_of(gone)}

    for cache in caches.values():
        cache.release(moved)
    handler.release_partitions(moved)
    handler.flush()
    written = {record.key.decode() for cache in caches.values() for record in cache.write_back()}

    assert here in written and gone not in written
    assert handler.partition_of(gone) not in handler.watermarks


def test_a_partition_that_comes_back_takes_its_watermark_from_the_restored_state() -> None:
    clock = PartitionClock(idle_seconds=60, clock=lambda: 0.0)
    marks: dict[str, Any] = {}
    clock.bind(marks, partitions=4)
    clock.watch(2, list)
    clock.set(2, 5 * MIN)
    clock.release({2})
    marks[watermark_key(2, 4)] = 9 * MIN  # the process that held it meanwhile moved it on
    clock.watch(2, lambda: [(12 * MIN, "p")])
    assert clock.watermarks[2] == 9 * MIN
    clock.set(2, 12 * MIN)
    assert list(clock.due(2)) == [(12 * MIN, "p")]  # its deadlines rebuilt from the state


def test_identity_reset_reads_its_held_events_back_once() -> None:
    reorder = DurableReorder(key_of=lambda e: e["event_id"], idle_seconds=60, stream_of=lambda e: e["source"])
    table: dict[str, Any] = {}
    reorder.bind(table)
    reorder.buffer.expect(["web", "app"])  # app has not sent yet: web's events are held
    assert reorder.add_all([ev(1, "a", 1), ev(2, "a", 2)]) == []

    reorder.reset()

    released = reorder.release(everything=True)
    assert [e["event_id"] for e in released] == ["a-1", "a-2"]
    assert reorder.release(everything=True) == [] and table == {}


def test_a_stage_drains_once_its_processes_together_drained_every_partition(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path, topic_prefix="moves.")
    first = DrainGate(settings, "journeys", [], process_name="first")
    second = DrainGate(settings, "journeys", [], process_name="second")
    every = [str(p) for p in range(4)]

    assert not first.mark_copy_done(["0", "1"], every, {"longest_step_seconds": 0.5})
    assert not marker(settings, "journeys").exists() and not second.stage_done()
    assert second.mark_copy_done(["2", "3"], every, {"longest_step_seconds": 0.2})
    assert first.stage_done()
    assert drain_figures(settings, "journeys")["longest_step_seconds"] == 0.5  # the largest of the copies


class _Signal:
    def connect(self, receiver: Any) -> None:
        self.receiver = receiver


class _Consumer:
    def __init__(self, held: set[Any]) -> None:
        self.held = held
        self._thread = SimpleNamespace(_create_worker_consumer=lambda transport: transport)
        self._unacked_messages: set[Any] = set()

    def assignment(self) -> set[Any]:
        return self.held


class _Message:
    def __init__(self, tp: Any) -> None:
        self.tp, self.offset, self.acked = tp, 0, False


def test_records_fetched_before_their_partition_moved_are_left_to_its_new_owner() -> None:
    """Handled here, they would meet state this process let go of and write over the new owner's."""
    kept, moved = TP("t.journeys", 0), TP("t.journeys", 1)
    app = SimpleNamespace(
        consumer=_Consumer(set()),  # empty, as for a moment during a rebalance
        on_partitions_revoked=_Signal(),
        on_partitions_assigned=_Signal(),
        timer=lambda _s: lambda f: f,
    )
    settings = load_settings(topic_prefix="t.")
    ordered = OrderedInput(app, settings, "attribution", ["t.journeys"], FaultPlan("attribution", ""))  # type: ignore[arg-type]
    app.on_partitions_assigned.receiver(None, {kept})  # the rebalance that moved partition 1 away
    ordered._start_of.update({kept: 0, moved: 0})  # where reading starts, without asking a broker
    events = [SimpleNamespace(message=_Message(tp), value=tp.partition) for tp in (kept, moved)]

    values = asyncio.run(ordered.admit(events))

    assert values == [0]
    assert events[1].message.acked and ordered.moved_away == 1  # out of faust's offsets to commit
