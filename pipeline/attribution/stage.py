"""The attribution stage: credit every conversion over the person's touchpoints."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from pipeline.attribution.custom import load_rules
from pipeline.attribution.paths import Output, PathAttributor, new_state
from pipeline.config import Settings
from pipeline.kafka import topics
from pipeline.model.rows import ROW_TABLES_BY_NAME
from pipeline.runtime.faust_stage import Emission


class AttributionHandler:
    """Keeps per-person paths in a state table and credits conversions."""

    table_names = ("attribution_paths",)
    inputs = (topics.JOURNEYS,)

    def __init__(self, settings: Settings) -> None:
        custom = load_rules(settings.custom_rules) if settings.custom_rules else None
        self.attributor = PathAttributor(
            settings.models, settings.lookback_days, settings.half_life_days, custom
        )
        self.state: MutableMapping[str, Any] = {}
        self.counts: Counter[str] = Counter()

    def bind(self, tables: Mapping[str, MutableMapping[str, Any]], partitions: int = 1) -> None:
        """Use the given per-person path table."""
        self.state = tables["attribution_paths"]

    def process(self, records: Sequence[dict[str, Any]]) -> list[Emission]:
        """Remember touches, credit conversions."""
        out: list[Output] = []
        for record in records:
            person = record["person_id"]
            state = self.state.get(person) or new_state()
            if record["record"] == "touch":
                state = self.attributor.add_touch(state, record)
            elif record["record"] == "touch_removed":
                state = self.attributor.remove_touch(state, record["session_id"])
            elif record["record"] == "conversion":
                state = self.attributor.convert(state, record, out)
            elif record["record"] == "return":
                self.counts[
                    "returns" if self.attributor.refund(state, record, out) else "unmatched_returns"
                ] += 1
            self.state[person] = state
        return [(ROW_TABLES_BY_NAME[table].topic, _key(table, row), row) for table, row in out]

    def tick(self) -> list[Emission]:
        """Nothing is time-driven in attribution yet."""
        return []

    def flush(self) -> list[Emission]:
        """Attribution holds no pending output."""
        return []


def _key(table: str, row: dict[str, Any]) -> str:
    if table == "attribution_adjustments":
        return str(row["adjustment_id"])
    if table == "attribution":
        return f"{row['conversion_id']}|{row['model']}|{row['session_id']}"
    return str(row["conversion_id"])
