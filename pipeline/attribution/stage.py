"""The attribution stage: credit every conversion over the person's touchpoints."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, Protocol

from pipeline.attribution.custom import load_rules
from pipeline.attribution.datadriven import FittedModel
from pipeline.attribution.paths import DATA_DRIVEN, Output, PathAttributor, drop_oldest_touches
from pipeline.config import Settings
from pipeline.identity.forwarding import follow, record_merge, settle_handoff
from pipeline.kafka import topics
from pipeline.model.handler import Emission, trimmed
from pipeline.model.rows import ROW_TABLES_BY_NAME


class ModelFeed(Protocol):
    """Where the newest fits of the data-driven models come from."""

    latest: dict[str, FittedModel]

    def load(self, timeout: float = 10.0) -> dict[str, FittedModel]:
        """Read what is there now."""

    def poll(self) -> bool:
        """Take newer fits; True when one changed."""


class AttributionHandler:
    """Keeps per-person paths in a state table and credits conversions."""

    table_names = topics.STATE_TABLES["attribution"]
    inputs = (topics.JOURNEYS,)

    def __init__(self, settings: Settings, feed: ModelFeed | None = None) -> None:
        custom = load_rules(settings.custom_rules) if settings.custom_rules else None
        self.attributor = PathAttributor(
            settings.models,
            settings.lookback_days,
            settings.half_life_days,
            custom,
            reset_after_conversion=settings.path_reset_after_conversion,
        )
        self.feed = feed if any(m in DATA_DRIVEN for m in settings.models) else None
        self.state: MutableMapping[str, Any] = {}
        self.forward: MutableMapping[str, Any] = {}  # merged person -> survivor, for late hand-overs
        self.counts: Counter[str] = Counter()

    def bind(self, tables: Mapping[str, MutableMapping[str, Any]], partitions: int = 1) -> None:
        """Use the given per-person path table; read the newest fitted models."""
        self.state = tables["attribution_paths"]
        self.forward = tables.get("attribution_forward", {})
        if self.feed is not None:
            self.attributor.fitted = self.feed.load()

    def set_version_floor(self, floor: int) -> None:
        """Credit at versions of at least ``floor`` (the runtime's epoch after a restart)."""
        self.attributor.version_floor = floor

    def process(self, records: Sequence[dict[str, Any]]) -> list[Emission]:
        """Remember touches, credit conversions, re-credit those a touch change concerns."""
        out: list[Output] = []
        handoffs: list[Emission] = []
        dirty: set[str] = set()
        self.attributor.deferred = True  # one re-credit per person and batch, at the end
        for record in records:
            person = record["person_id"]
            state = self.state.get(person)
            kind = record["record"]
            if kind == "touch" and record.get("kind") == "message" and person in self.forward:
                # a message activation sent to a person merged since (it can come after
                # journeys' merge record): it belongs to the survivor. Journeys' own
                # touches of a merged person are not: they are re-cut under the survivor,
                # and one replayed after a crash would add a session that no longer exists
                survivor = follow(self.forward, person)
                handoffs.append((topics.JOURNEYS, survivor, {**record, "person_id": survivor}))
                continue
            if kind == "touch":
                state = self.attributor.add_touch(state, record, out)
            elif kind == "touch_removed":
                state = self.attributor.remove_touch(state, record, out)
            elif kind == "conversion":
                state = self.attributor.convert(state, record, out)
                if not any(m in self.attributor.fitted for m in DATA_DRIVEN) and self.feed is not None:
                    self.counts["conversions_without_fit"] += 1
            elif kind == "return":
                state, matched = self.attributor.refund(state, record, out)
                self.counts["returns" if matched else "unmatched_returns"] += 1
            elif kind == "merge":
                # the merged person's touches and conversions go to the survivor's partition
                survivor = record["to_person"]
                if not record_merge(
                    self.forward, person, survivor, self.counts, "attribution", record.get("seq")
                ):
                    continue  # a self-merge or a stale one: nothing moves
                if person in self.state:
                    del self.state[person]
                # sessions journeys still held come back re-cut under the survivor
                held = set(record.get("held_sessions") or ())
                moved = dict(state or {})
                moved["touches"] = {k: v for k, v in (moved.get("touches") or {}).items() if k not in held}
                handoff = {"record": "handoff", "person_id": survivor, "from_person": person, "state": moved}
                handoffs.append((topics.JOURNEYS, survivor, handoff))
                continue
            elif kind == "forget":  # o2o forget: the person is erased
                for table in (self.state, self.forward):
                    if person in table:
                        del table[person]
                self.counts["forgotten"] += 1
                continue
            elif kind == "handoff":
                # never round a cycle of the forward table (pipeline/identity/forwarding.py)
                sender = record.get("from_person", "")
                target = settle_handoff(self.forward, person, sender, self.counts, "attribution")
                if target != person:  # this person merged on since: pass the state on
                    handoffs.append((topics.JOURNEYS, target, {**record, "person_id": target}))
                    continue
                state = self.attributor.absorb(state, record["state"], person, out)
                self.counts["handoffs"] += 1
            else:
                self.counts["unknown_records"] += 1
                continue
            self.state[person] = state
            if state.get("dirty"):
                dirty.add(person)
        self.attributor.deferred = False
        for person in dirty:
            state = self.state.get(person)
            if state and state.get("dirty"):
                self.state[person] = self.attributor.recredit(dict(state), out)
        self.counts["rows"] += len(out)
        return [*handoffs, *((ROW_TABLES_BY_NAME[table].topic, _key(table, row), row) for table, row in out)]

    def trim_state(self, table: str, _key: str, value: Any) -> Any:
        """A person's path too large for a changelog record loses its oldest touches (counted)."""
        return trimmed(table, "attribution_paths", value, drop_oldest_touches, self.counts)

    def tick(self) -> list[Emission]:
        """Take newly published fits (new conversions are credited with them)."""
        if self.feed is not None and self.feed.poll():
            self.attributor.fitted = dict(self.feed.latest)
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
