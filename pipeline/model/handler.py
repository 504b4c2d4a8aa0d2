"""The protocol between a stateful stage's rules and the runtime that hosts them.

It sits below both: the rules (identity, journeys, attribution) implement it
without importing any Kafka or faust code, and the runtime drives it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any, Protocol

Emission = tuple[str, str, dict[str, Any]]
"""An output record: (topic without prefix, key, value)."""


class StatefulHandler(Protocol):
    """The pure side of a stateful stage.

    The runtime calls :meth:`process`, :meth:`tick` and :meth:`flush`; each
    returns its outputs and leaves its state changes in the bound tables. The
    runtime then makes the outputs durable, then the state, then acknowledges
    the input; a handler never writes to Kafka itself.
    """

    @property
    def table_names(self) -> Sequence[str]:
        """Names of the state tables the handler needs."""

    @property
    def inputs(self) -> Sequence[str]:
        """Input topics, without the prefix."""

    def bind(self, tables: Mapping[str, MutableMapping[str, Any]], partitions: int = 1) -> None:
        """Receive the state tables (faust tables in a worker, dicts in tests).

        ``partitions`` is the input topics' partition count: a record keyed
        ``k`` came from partition ``murmur2(k) % partitions``.
        """

    def process(self, records: Sequence[dict[str, Any]]) -> list[Emission]:
        """Handle a batch of input records (already decoded)."""

    # Optional: ``trim_state(table, key, value) -> value | None``. A state value
    # too large for a changelog record is handed to it until it fits; it
    # returns a smaller value by the table's documented rule (oldest history
    # first, counted), or None when it cannot (the stage then stops with
    # StateTooLarge). See pipeline/runtime/state.py.

    # Optional: ``partition_keys: Mapping[str, Callable[[str], str]]``. For a
    # table whose keys are not source message keys (identity's one key per
    # held event), the part of a key that decides its partition; the runtime
    # writes each changelog record to that partition.

    # Optional: ``backlog() -> bool``. True when a bounded step left work that
    # needs no new input (identity's held events a watermark freed at once);
    # the runtime then runs ticks, the event loop free between them, until it
    # is False.

    # Optional: ``release_partitions(partitions)``. After a rebalance gave
    # these input partitions to another process of the stage, forget what was
    # derived from them in memory (watermarks, deadline heaps, held events);
    # the runtime has already dropped their keys from the bound tables.

    def tick(self) -> list[Emission]:
        """Periodic work in event or processing time (closing idle sessions)."""

    def flush(self) -> list[Emission]:
        """End of input in drain mode: emit everything still held."""


def trimmed(
    table: str,
    own: str,
    value: Any,
    rule: Callable[[dict[str, Any]], dict[str, Any] | None],
    counts: Counter[str],
) -> Any:
    """``rule(value)`` when ``table`` is the handler's per-person table ``own`` (counted), else None.

    The shared body of the handlers' ``trim_state``: only the per-person
    tables have a rule; anything else is left to the runtime (StateTooLarge).
    """
    if table != own or not isinstance(value, dict):
        return None
    smaller = rule(value)
    if smaller is not None:
        counts["state_trimmed"] += 1
    return smaller
