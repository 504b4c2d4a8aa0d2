"""The identity graph: every identifier -> one canonical person (pure, no Kafka).

Rules (the brief's defaults):

* an event links all its identifiers;
* ``unique`` identifier types (``user_id``, ``loyalty_id``): a person holds at
  most one value of each, so an event that would join two persons with
  different values is not merged, and the conflict is counted;
* when two persons merge, the older one (first seen by event time, ties
  broken by id) survives, so replays give the same ids;
* a coupon code claimed in the app and redeemed at the till links too, as
  the weakest identifier.

State lives in two mappings the caller provides (plain dicts in tests, faust
tables in the stage): ``ids`` maps ``"type:value"`` to ``[person_id,
revision, first_seen]``; ``persons`` maps a person id to its record. Values
are always written back whole, so changelog-backed tables see every change.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.model.contract import ID_PRIORITY, STRONG_ID_TYPES, Event
from pipeline.model.rows import IDENTITIES, IDENTITY_CONFLICTS, PERSON_ALIASES

UNIQUE_ID_TYPES = ("user_id", "loyalty_id")


def person_id_for(id_key: str) -> str:
    """The deterministic id of a person first created from identifier ``id_key``."""
    return "p_" + hashlib.sha256(id_key.encode()).hexdigest()[:20]


def event_id_keys(ids: dict[str, str]) -> list[str]:
    """The identifiers of an event as ``type:value``, strongest first."""
    return [f"{t}:{ids[t]}" for t in ID_PRIORITY if ids.get(t)]


REDEEMING_TYPES = frozenset({"purchase", "order_completed"})


def coupon_code(event: Event) -> str:
    """The coupon code an event claims or redeems, or ``""``."""
    return str((event.get("properties") or {}).get("coupon_code") or "").strip()


@dataclass
class Resolution:
    """The outcome of resolving one event: its person and the rows to emit."""

    person_id: str
    rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    conflicts: int = 0
    merged: list[str] = field(default_factory=list)


class IdentityGraph:
    """Resolves events to canonical persons over caller-provided state mappings."""

    def __init__(
        self,
        ids: MutableMapping[str, Any],
        persons: MutableMapping[str, Any],
        unique_types: tuple[str, ...] = UNIQUE_ID_TYPES,
        max_persons_per_id: int = 5,
    ) -> None:
        self.ids = ids
        self.persons = persons
        self.unique_types = unique_types
        self.max_persons_per_id = max_persons_per_id
        self.counts: Counter[str] = Counter()

    def resolve(self, event: Event) -> Resolution:
        """Link the event's identifiers and return the person it belongs to."""
        at = event["occurred_at"]
        all_keys = event_id_keys(event["ids"]) + self._coupon_keys(event)
        keys = [k for k in all_keys if not self._shared(k)]  # shared identifiers no longer link
        if not keys:
            return Resolution(self.ids[all_keys[0]][0])
        found = [(k, self.ids[k][0]) for k in keys if k in self.ids]
        strongest = keys[0]
        id_type, _, value = strongest.partition(":")
        holdable = bool(found) and (
            id_type not in self.unique_types or self._may_hold(found[0][1], id_type, value)
        )
        if found and (found[0][0] == strongest or holdable):
            anchor = found[0][1]
            result = Resolution(anchor)
        else:
            # no person yet, or the event's strongest identifier is a unique id
            # the found person cannot hold: the event belongs to a person of its own
            anchor = person_id_for(strongest)
            self.persons[anchor] = {"first_seen": at, "unique": {}, "ids": [], "aliases": {}}
            self.counts["persons"] += 1
            result = Resolution(anchor)
            self._link(strongest, anchor, at, result)
        for key, other in found:
            current = result.person_id
            if other == current or other not in self.persons:
                continue
            if not self._compatible(current, other):
                self._conflict(event, key, other, "unique_id", result)
                continue
            result.person_id = self._merge(current, other, at, result)
        for key, other in found:
            unmerged = other != result.person_id and other in self.persons and other not in result.merged
            if unmerged and self._seen_with(key, result.person_id):
                self._conflict(event, key, other, "shared_identifier", result, count=False)
        for key in keys:
            if key in self.ids:
                continue
            id_type, _, value = key.partition(":")
            if not self._may_hold(result.person_id, id_type, value):
                held = self._unique(result.person_id).get(id_type, "")
                self._conflict(event, key, self.ids.get(f"{id_type}:{held}", [""])[0], "unique_id", result)
                continue
            self._link(key, result.person_id, at, result)
        self.counts["conflicts"] += result.conflicts
        return result

    def _coupon_keys(self, event: Event) -> list[str]:
        """A coupon links its claim in the app to its first redemption, weakest of all links.

        Claiming makes ``coupon_code:<code>`` an identifier of the claimer (a code
        many persons claim stops linking like any shared identifier). A purchase
        or order carrying the code joins the claimer's person, once: a code
        nobody claimed (a printed voucher) or one already redeemed links nothing.
        """
        code = coupon_code(event)
        if not code:
            return []
        key = f"coupon_code:{code}"
        if event.get("type") == "coupon_claimed":
            return [key]
        if event.get("type") not in REDEEMING_TYPES or key not in self.ids:
            return []
        redeemed = f"coupon_redeemed:{code}"
        if redeemed in self.ids:
            return []
        self.ids[redeemed] = [self.ids[key][0], 1, event["occurred_at"]]
        self.counts["coupons_redeemed"] += 1
        return [key]

    def _shared(self, key: str) -> bool:
        entry = self.ids.get(key)
        return entry is not None and len(entry) > 3 and len(entry[3]) > self.max_persons_per_id

    def _seen_with(self, key: str, person: str) -> bool:
        """Remember that ``key`` came with another person; past the limit it stops linking.

        Returns True when this made the identifier shared.
        """
        entry = list(self.ids[key])
        seen = list(entry[3]) if len(entry) > 3 else [entry[0]]
        if person in seen or len(seen) > self.max_persons_per_id:
            return False
        seen.append(person)
        self.ids[key] = [*entry[:3], seen]
        if len(seen) > self.max_persons_per_id:
            self.counts["shared_identifiers"] += 1
            return True
        return False

    def _conflict(
        self, event: Event, key: str, other: str, reason: str, result: Resolution, count: bool = True
    ) -> None:
        """Record that ``key`` did not link the event's person to ``other``, and why."""
        if count:
            result.conflicts += 1
        id_type, _, value = key.partition(":")
        digest = hashlib.sha256(f"{event['event_id']}|{key}|{reason}".encode()).hexdigest()[:24]
        row = {
            "conflict_id": "x_" + digest,
            "event_id": event["event_id"],
            "occurred_at": event["occurred_at"],
            "person_id": result.person_id,
            "other_person": other,
            "id_type": id_type,
            "id_value": value,
            "reason": reason,
            "version": 1,
        }
        result.rows.append((IDENTITY_CONFLICTS.name, row))

    def _unique(self, person: str) -> dict[str, str]:
        return dict(self.persons[person].get("unique") or {})

    def _compatible(self, a: str, b: str) -> bool:
        ua, ub = self._unique(a), self._unique(b)
        return all(ua[t] == ub[t] for t in ua.keys() & ub.keys())

    def _may_hold(self, person: str, id_type: str, value: str) -> bool:
        held = self._unique(person).get(id_type)
        return held is None or held == value

    def _link(self, key: str, person: str, at: int, result: Resolution) -> None:
        self.ids[key] = [person, 1, at]
        record = dict(self.persons[person])
        record["ids"] = [*record["ids"], key]
        id_type, _, value = key.partition(":")
        if id_type in self.unique_types:
            record["unique"] = {**record.get("unique", {}), id_type: value}
        self.persons[person] = record
        result.rows.append((IDENTITIES.name, _identity_row(key, person, at, 1)))

    def _merge(self, a: str, b: str, at: int, result: Resolution) -> str:
        """Merge persons a and b; the older survives. Returns the survivor."""
        ra, rb = self.persons[a], self.persons[b]
        if (rb["first_seen"], b) < (ra["first_seen"], a):
            a, b, ra, rb = b, a, rb, ra
        survivor = dict(ra)
        aliases = dict(survivor.get("aliases") or {})
        moved = {b: 0, **(rb.get("aliases") or {})}
        for alias, revision in moved.items():
            aliases[alias] = revision + 1
            row = {"person_id": alias, "canonical_id": a, "merged_at": at, "reason": "shared_identifier"}
            result.rows.append((PERSON_ALIASES.name, {**row, "version": revision + 1}))
        for key in rb["ids"]:
            _person, revision, first_seen, *rest = self.ids[key]
            self.ids[key] = [a, revision + 1, first_seen, *rest]
            result.rows.append((IDENTITIES.name, _identity_row(key, a, first_seen, revision + 1)))
        survivor["aliases"] = aliases
        survivor["ids"] = [*survivor["ids"], *rb["ids"]]
        survivor["unique"] = {**(rb.get("unique") or {}), **(survivor.get("unique") or {})}
        survivor["first_seen"] = min(ra["first_seen"], rb["first_seen"])
        self.persons[a] = survivor
        del self.persons[b]
        result.merged.append(b)
        self.counts["merges"] += 1
        return a


def _identity_row(key: str, person: str, first_seen: int, version: int) -> dict[str, Any]:
    id_type, _, value = key.partition(":")
    return {
        "id_type": id_type,
        "id_value": value,
        "person_id": person,
        "first_seen": first_seen,
        "version": version,
    }


def is_identified(record: dict[str, Any]) -> bool:
    """True when a person holds at least one strong identifier (login, loyalty card, email, phone)."""
    return any(key.partition(":")[0] in STRONG_ID_TYPES for key in record.get("ids", ()))
