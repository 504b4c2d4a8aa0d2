"""The faust tables of a stateful stage: in-memory stores that faust restores, the runtime writes.

Each table name a handler (and the runtime's epochs) uses becomes a faust
table whose changelog faust reads back on a restore, with this project's
codecs; the runtime writes the changelog itself through a
:class:`~pipeline.runtime.state.BatchCache`, never through faust's sends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import faust

from pipeline.config import Settings
from pipeline.model.handler import StatefulHandler
from pipeline.model.limits import record_bytes
from pipeline.runtime.faults import FaultPlan
from pipeline.runtime.state import BatchCache


def state_tables(
    app: faust.App,
    names: Iterable[str],
    handler: StatefulHandler,
    settings: Settings,
    partitions: int,
    faults: FaultPlan,
) -> dict[str, BatchCache]:
    """Make a faust table per name on ``app``; the caches the stage reads and writes them through."""
    partition_keys = getattr(handler, "partition_keys", {})
    trim_state = getattr(handler, "trim_state", None)
    caches = {}
    for name in names:
        table = app.Table(name, default=None, partitions=partitions)
        table.key_serializer = "o2o_utf8"  # type: ignore[attr-defined]
        table.value_serializer = "o2o_orjson"  # type: ignore[attr-defined]
        # the changelog topic was already made (with JSON codecs) when the
        # table registered itself; make it again with these codecs
        table.changelog_topic = table._new_changelog_topic()  # type: ignore[attr-defined]
        table.apply_changelog_batch = _restoring(table.apply_changelog_batch, faults)  # type: ignore[method-assign]
        changelog = table.changelog_topic.get_topic_name()
        # reads and writes go to the in-memory store, never through faust's changelog sends;
        # a value too large for a record is trimmed by the handler's rule for the table
        trim = partial(trim_state, name) if trim_state is not None else None
        # A key's changelog partition is the partition its source messages
        # hash to (murmur2, like the producers'; of the part of the key the
        # handler's partition_keys name): the runtime writes the
        # changelog itself (state.BatchCache), faust only reads it back.
        cache = BatchCache(
            table.data, changelog, partitions, record_bytes(settings), trim, partition_keys.get(name)
        )
        table.partition_for_key = cache.partition_of  # type: ignore[method-assign]
        caches[name] = cache
    return caches


def _restoring(apply: Callable[..., Any], faults: FaultPlan) -> Callable[..., Any]:
    """Wrap a table's changelog apply with the ``during_restore`` fault point."""

    def apply_batch(*args: Any, **kwargs: Any) -> Any:
        faults.reach("during_restore")
        return apply(*args, **kwargs)

    return apply_batch
