"""Which records of a batch faust's consumer did not hand on, and where to read a partition again."""

from __future__ import annotations

from typing import NamedTuple

from faust.types import TP

from pipeline.runtime.unhanded import unhanded

CHANGELOG = TP("o2o.journeys-journeys_state-changelog", 3)
INPUT = TP("o2o.events.identified", 1)


class Record(NamedTuple):
    offset: int


def batch(*offsets: int) -> list[Record]:
    return [Record(offset) for offset in offsets]


def test_a_batch_handed_on_whole_leaves_nothing() -> None:
    fetched = {CHANGELOG: batch(10, 11, 12), INPUT: batch(4)}
    assert unhanded(fetched, {CHANGELOG: 12, INPUT: 4}) == {}


def test_a_partition_none_of_whose_records_went_on_is_read_again_from_its_first() -> None:
    fetched = {CHANGELOG: batch(10, 11, 12), INPUT: batch(4, 5)}
    assert unhanded(fetched, {INPUT: 5}) == {CHANGELOG: (10, 13, 3)}


def test_a_batch_cut_part_way_is_read_again_from_the_first_record_not_handed_on() -> None:
    # compacted changelogs have gaps between offsets: the span starts at a record, not at last + 1
    fetched = {CHANGELOG: batch(10, 14, 15, 19), INPUT: batch(4, 5)}
    assert unhanded(fetched, {CHANGELOG: 14}) == {CHANGELOG: (15, 20, 2), INPUT: (4, 6, 2)}


def test_empty_partitions_and_an_empty_batch_leave_nothing() -> None:
    assert unhanded({CHANGELOG: []}, {}) == {}
    assert unhanded({}, {INPUT: 3}) == {}
