"""Keeping Python's cycle collector off a stage's long-lived objects.

A stage process allocates a burst of short-lived objects per step (decoded
records, rows, encoded messages) next to its long-lived ones (the state
tables, faust's and the clients' objects). CPython runs a full collection
each time the objects that outlived the younger generations have grown by a
quarter, and each full collection walks every tracked object: in the bench
(``o2o bench --events 100000``) the stage processes spent 5.7 s of about 24
CPU seconds in full collections, up to 200 ms each with the event loop held.
The long-lived objects are almost never cyclic garbage (state values are
plain dicts and lists, freed by reference counting when replaced).

So after every full collection its survivors are frozen (``gc.freeze``):
later collections walk only what came after. A frozen object that later
becomes unreachable inside a reference cycle is not freed until the next
true full collection, which this module lets happen every
:data:`FULL_COLLECTION_SECONDS` (unfreezing first, so that collection walks
everything and frees such cycles). In the bench the true full collection
at the end of a stage found 4 to 78 such objects.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

FULL_COLLECTION_SECONDS = 600.0
"""At most this long between full collections that also walk the frozen objects."""


class LongLivedObjects:
    """The collector policy of a stage process: freeze what survived a full collection."""

    def __init__(
        self, full_every: float = FULL_COLLECTION_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.full_every = full_every
        self.clock = clock
        self.last_full = clock()
        self.frozen_collections = 0  # full collections whose survivors were frozen
        self.true_full_collections = 0  # full collections that also walked the frozen objects
        self.frozen = False  # whether objects are frozen now

    def install(self) -> LongLivedObjects:
        """Freeze what start-up made, and freeze the survivors of every later full collection."""
        gc.collect()
        gc.freeze()
        self.frozen = True
        gc.callbacks.append(self.after_collection)
        return self

    def uninstall(self) -> None:
        """Back to the collector's defaults: nothing frozen, no callback."""
        if self.after_collection in gc.callbacks:
            gc.callbacks.remove(self.after_collection)
        gc.unfreeze()
        self.frozen = False

    def after_collection(self, phase: str, info: dict[str, Any]) -> None:
        """The collector's callback: after a full collection, freeze its survivors (or unfreeze, when due).

        Unfreezing puts the frozen objects back in the oldest generation, so
        the next full collection walks all of them; its survivors are then
        frozen again.
        """
        if phase != "stop" or info["generation"] != 2:
            return
        now = self.clock()
        # (not gc.get_freeze_count(): it walks every frozen object)
        if self.frozen and now - self.last_full >= self.full_every:
            gc.unfreeze()
            self.frozen = False
            self.last_full = now
            self.true_full_collections += 1
        else:
            gc.freeze()
            self.frozen = True
            self.frozen_collections += 1
