"""The identity stage: resolve each event's person and re-key it by person_id."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from pipeline.identity.graph import IdentityGraph, is_identified
from pipeline.kafka import topics
from pipeline.model.rows import ROW_TABLES_BY_NAME
from pipeline.runtime.faust_stage import Emission


class IdentityHandler:
    """Resolves events with an :class:`IdentityGraph` over the stage's tables."""

    table_names = ("identity_ids", "identity_persons")
    inputs = (topics.VALID,)

    def __init__(self) -> None:
        self.graph: IdentityGraph | None = None

    def bind(self, tables: Mapping[str, MutableMapping[str, Any]]) -> None:
        """Build the graph over the given state tables."""
        self.graph = IdentityGraph(tables["identity_ids"], tables["identity_persons"])

    def process(self, records: Sequence[dict[str, Any]]) -> list[Emission]:
        """Resolve a batch of validated events."""
        assert self.graph is not None, "bind() first"
        out: list[Emission] = []
        for event in records:
            result = self.graph.resolve(event)  # type: ignore[arg-type]
            person = result.person_id
            event["person_id"] = person
            event["identified"] = is_identified(self.graph.persons[person])
            for table, row in result.rows:
                key = (
                    row.get("person_id", "")
                    if table != "identities"
                    else f"{row['id_type']}:{row['id_value']}"
                )
                out.append((ROW_TABLES_BY_NAME[table].topic, key, row))
            for merged in result.merged:
                merge = {"from_person": merged, "to_person": person, "merged_at": event["occurred_at"]}
                out.append((topics.MERGES, merged, merge))
            out.append((topics.IDENTIFIED, person, event))
        return out

    def tick(self) -> list[Emission]:
        """Nothing is time-driven in identity."""
        return []

    def flush(self) -> list[Emission]:
        """Identity holds no pending output."""
        return []
