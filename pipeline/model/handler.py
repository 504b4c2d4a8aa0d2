"""The protocol between a stateful stage's rules and the runtime that hosts them.

It sits below both: the rules (identity, journeys, attribution) implement it
without importing any Kafka or faust code, and the runtime drives it.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
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

    def tick(self) -> list[Emission]:
        """Periodic work in event or processing time (closing idle sessions)."""

    def flush(self) -> list[Emission]:
        """End of input in drain mode: emit everything still held."""
