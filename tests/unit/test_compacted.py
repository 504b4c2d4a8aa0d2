"""Reading a compacted topic whole: a list that cannot be read to its end in time is an error, not a part."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.config import load_settings
from pipeline.errors import KafkaUnavailable
from pipeline.kafka.compacted import CompactedReader


class Message:
    def __init__(self, partition: int, offset: int, key: bytes, value: bytes) -> None:
        self._partition, self._offset, self._key, self._value = partition, offset, key, value

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value


class StalledConsumer:
    """Hands over the first record of partition 0, then nothing (a broker that stopped answering)."""

    def __init__(self) -> None:
        self.messages = [Message(0, 0, b"id:email:x", b'{"kind": "id"}')]

    def consume(self, _n: int, timeout: float = 0) -> list[Any]:
        out, self.messages = self.messages, []
        return out

    def assignment(self) -> list[Any]:
        return []

    def position(self, partitions: list[Any]) -> list[Any]:
        return partitions


def reader(ends: dict[int, int]) -> CompactedReader:
    found = CompactedReader(load_settings(), "identity.suppressions", "test")
    found._consumer = StalledConsumer()
    found._ends = ends
    return found


def test_a_list_read_whole_in_time_is_returned() -> None:
    assert reader({0: 1}).load(timeout=1, whole=True) == [("id:email:x", {"kind": "id"})]


def test_a_list_not_read_to_its_end_in_time_is_an_error_when_it_must_be_whole() -> None:
    with pytest.raises(KafkaUnavailable, match=r"could not read .* \(partition 0 up to offset 2\)"):
        reader({0: 2}).load(timeout=0.6, whole=True)
    assert reader({0: 2}).load(timeout=0.6) == [
        ("id:email:x", {"kind": "id"})
    ]  # the models may start with a part


def test_a_stage_does_not_start_with_part_of_the_suppression_list() -> None:
    """Erased persons would come back in: the suppression list is read whole or the stage stops."""
    from pipeline.identity.erasure import Suppressions

    suppressions = Suppressions(load_settings(), "test")
    suppressions.reader = reader({0: 2})
    with pytest.raises(KafkaUnavailable):
        suppressions.load(timeout=0.6)


def test_the_list_names_restricted_persons_until_the_restriction_is_lifted() -> None:
    from pipeline.identity.erasure import Suppressions

    privacy = Suppressions(load_settings(), "test")
    privacy.reader = reader({})
    privacy.reader._consumer.messages = [  # type: ignore[union-attr]
        Message(0, 0, b"restricted:p1", b'{"kind": "restricted"}'),
        Message(0, 1, b"restricted:p2", b'{"kind": "restricted"}'),
        Message(0, 2, b"person:p3", b'{"kind": "person"}'),
        Message(0, 3, b"restricted:p1", b""),  # lifted: a tombstone
    ]
    privacy._polled = 0.0
    privacy.refresh()
    assert (privacy.restricted, privacy.persons) == ({"p2"}, {"p3"})
