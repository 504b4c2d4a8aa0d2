"""The stages' collector policy: survivors of a full collection frozen, a true full collection when due."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from pipeline.runtime.gc_policy import LongLivedObjects
from tests.unit.hand_clock import HandClock


class Node:
    """An object that can sit in a reference cycle."""

    def __init__(self) -> None:
        self.me: Node | None = self


@pytest.fixture
def policy() -> Iterator[tuple[LongLivedObjects, HandClock]]:
    clock = HandClock()
    installed = LongLivedObjects(full_every=600, clock=clock).install()
    try:
        yield installed, clock
    finally:
        installed.uninstall()


def test_what_survives_a_full_collection_is_frozen_and_later_ones_skip_it(
    policy: tuple[LongLivedObjects, HandClock],
) -> None:
    installed, _clock = policy
    frozen_before = gc.get_freeze_count()
    state = [{"held": [Node() for _ in range(100)]}]  # long-lived, tracked objects
    gc.collect()
    assert gc.get_freeze_count() >= frozen_before + 100 and installed.frozen_collections >= 1
    assert state[0]["held"][0].me is state[0]["held"][0]


def test_a_cycle_frozen_while_alive_is_freed_by_the_true_full_collection_when_it_is_due(
    policy: tuple[LongLivedObjects, HandClock],
) -> None:
    installed, clock = policy
    cycle = Node()
    alive = weakref.ref(cycle)
    gc.collect()  # the cycle survives and is frozen
    del cycle
    gc.collect()
    assert alive() is not None  # frozen: later collections do not walk it

    clock.now = 601  # a true full collection is due: this one unfreezes, the next walks everything
    gc.collect()
    assert installed.true_full_collections == 1 and gc.get_freeze_count() == 0
    gc.collect()
    assert alive() is None
    assert gc.get_freeze_count() > 0  # and its survivors are frozen again


def test_uninstall_gives_the_collector_back_its_defaults() -> None:
    installed = LongLivedObjects().install()
    installed.uninstall()
    assert installed.after_collection not in gc.callbacks and gc.get_freeze_count() == 0
