"""The identity graph: every identifier -> one canonical person (pure, no Kafka).

Rules (the brief's defaults):

* an event links all its identifiers;
* ``unique`` identifier types (``user_id``, ``loyalty_id``): a person holds at
  most one value of each, so an event that would join two persons with
  different values is not merged, and the conflict is counted;
* a person's id derives from its *root*: of all its identifiers, the one
  first seen in event time (ties: the stronger type, then the value). When
  two persons merge, the one with the older root survives; when an earlier
  event makes another identifier the root, the person is renamed (an alias
  to the new id, like a merge). So the ids are a function of the events, not
  of the order they arrive in (docs/identity.md);
* a person holds at most ``max_ids_per_person`` identifiers (a bot or a store
  kiosk's device can bring thousands): an identifier that would be one more,
  or a merge that would go past it, links nothing; the event goes to its
  strongest identifier's person and the refusal is recorded
  (``too_many_identifiers``). Nothing already linked is dropped, so every
  identifier keeps pointing at a person that exists, merges stay whole and
  ``o2o forget`` finds all of a person's identifiers;
* a coupon code claimed in the app, or sent to the person by the activation
  stage (``coupon_issued``), and redeemed at the till links too, as the
  weakest identifier.

State lives in two mappings the caller provides (plain dicts in tests, faust
tables in the stage): ``ids`` maps ``"type:value"`` to ``[person_id,
revision, first_seen]``; ``persons`` maps a person id to its record. Values
are always written back whole, so changelog-backed tables see every change.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.identity.consent import merged_history
from pipeline.model.contract import COUPON_CLAIM_TYPES, ID_PRIORITY, STRONG_ID_TYPES, Event
from pipeline.model.rows import IDENTITIES, IDENTITY_CONFLICTS, PERSON_ALIASES

UNIQUE_ID_TYPES = ("user_id", "loyalty_id")


def id_rank(key: str) -> int:
    """Strength of an identifier type: 0 for ``user_id`` ... (coupon codes weakest)."""
    id_type = key.partition(":")[0]
    return ID_PRIORITY.index(id_type) if id_type in ID_PRIORITY else len(ID_PRIORITY)


def root_of(key: str, first_seen: int) -> list[Any]:
    """How an identifier ranks as a person's root: first seen, then strength, then text."""
    return [first_seen, id_rank(key), key]


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


def identified_by(since: int | None, at: int) -> bool:
    """Whether a person identified from ``since`` (:meth:`IdentityGraph.identified_since`) was at ``at``."""
    return since is not None and since <= at


MERGE_SEQUENCE_KEY = "~merge_sequence"  # in ``persons``; no person id starts with "~"


class IdentityGraph:
    """Resolves events to canonical persons over caller-provided state mappings."""

    def __init__(
        self,
        ids: MutableMapping[str, Any],
        persons: MutableMapping[str, Any],
        unique_types: tuple[str, ...] = UNIQUE_ID_TYPES,
        max_persons_per_id: int = 5,
        max_ids_per_person: int = 1000,
    ) -> None:
        self.ids = ids
        self.persons = persons
        self.unique_types = unique_types
        self.max_persons_per_id = max_persons_per_id
        self.max_ids_per_person = max_ids_per_person
        self.counts: Counter[str] = Counter()

    def next_merge_sequence(self) -> int:
        """The number of the next merge or rename, one more than the last (kept in the state).

        Identity's merge records go out on the partitions of the merged persons,
        so the stages downstream read them in another order than identity wrote
        them; this number tells them which of two records is identity's newer word.
        """
        sequence = int(self.persons.get(MERGE_SEQUENCE_KEY) or 0) + 1
        self.persons[MERGE_SEQUENCE_KEY] = sequence
        return sequence

    def resolve(self, event: Event) -> Resolution:
        """Link the event's identifiers and return the person it belongs to."""
        at = event["occurred_at"]
        all_keys = event_id_keys(event["ids"]) + self._coupon_keys(event)
        keys = [k for k in all_keys if not self._shared(k)]  # shared identifiers no longer link
        if not keys:
            return Resolution(self.ids[all_keys[0]][0])
        joins = self._late_claim(event)
        found = [(k, self.ids[k][0]) for k in [*keys, *joins] if k in self.ids]
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
            root = root_of(strongest, at)
            self.persons[anchor] = {"first_seen": at, "unique": {}, "ids": [], "aliases": {}, "root": root}
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
            if self._too_many(current, len(self.persons[other].get("ids") or ())):
                self._conflict(event, key, other, "too_many_identifiers", result)
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
            if self._too_many(result.person_id, 1):
                self._conflict(event, key, result.person_id, "too_many_identifiers", result)
                continue
            self._link(key, result.person_id, at, result)
        self._refresh_root(result.person_id, keys, at, result)
        self.counts["conflicts"] += result.conflicts
        return result

    def identified_since(self, person: str) -> int | None:
        """The event time from which the person is identified: its strong identifiers' first sighting.

        None while it has none. It only moves earlier as identity learns more
        (a late event, a merge), so the stages downstream keep the earliest
        they were told and end where an in-order run ends.
        """
        since = None
        for key in self.persons[person].get("ids", ()):
            entry = self.ids.get(key)
            if entry is not None and key.partition(":")[0] in STRONG_ID_TYPES:
                since = entry[2] if since is None else min(since, entry[2])
        return since

    def identified_at(self, person: str, at: int) -> bool:
        """True when the person held a strong identifier first seen at or before event time ``at``.

        Judged in event time, so an event that reaches identity late gets the
        same answer as in order.
        """
        return identified_by(self.identified_since(person), at)

    def person_of(self, event: Event) -> str | None:
        """The person the event's strongest known identifier belongs to, without linking anything."""
        for key in event_id_keys(event["ids"]):
            entry = self.ids.get(key)
            if entry is not None and not self._shared(key) and entry[0] in self.persons:
                return str(entry[0])
        return None

    def forget(self, keys: Iterable[str], persons: Iterable[str]) -> None:
        """Drop erased identifiers and persons (``o2o forget``) from the state."""
        for key in keys:
            if key in self.ids:
                del self.ids[key]
        for person in persons:
            if person in self.persons:
                del self.persons[person]

    def _root(self, person: str) -> list[Any]:
        record = self.persons[person]
        if "root" in record:
            return list(record["root"])
        first = record["ids"][0] if record.get("ids") else ""
        return root_of(first, record["first_seen"])  # a record written before roots existed

    def _refresh_root(self, person: str, keys: list[str], at: int, result: Resolution) -> None:
        """Note earlier sightings of the event's identifiers; rename the person if its root changed."""
        root = self._root(person)
        best = root
        for key in keys:
            entry = self.ids.get(key)
            if entry is None or entry[0] != person:
                continue
            if at < entry[2]:
                entry = [entry[0], entry[1] + 1, at, *entry[3:]]
                self.ids[key] = entry
                result.rows.append((IDENTITIES.name, _identity_row(key, person, at, entry[1])))
            best = min(best, root_of(key, entry[2]))
        if best == root:
            return
        new = person_id_for(best[2])
        record = dict(self.persons[person])
        record["root"], record["first_seen"] = best, best[0]
        if new == person:
            self.persons[person] = record
            return
        self.persons[new] = record
        self._move(person, new, at, "older_identifier", result)
        del self.persons[person]
        result.person_id = new
        self.counts["renames"] += 1

    def _move(self, old: str, new: str, at: int, reason: str, result: Resolution) -> None:
        """Point ``old``, its aliases and its identifiers at ``new`` (whose record exists)."""
        moving = self.persons[old]
        target = dict(self.persons[new])
        aliases = dict(target.get("aliases") or {})
        for alias, revision in {old: 0, **(moving.get("aliases") or {})}.items():
            aliases[alias] = revision + 1
            row = {"person_id": alias, "canonical_id": new, "merged_at": at, "reason": reason}
            result.rows.append((PERSON_ALIASES.name, {**row, "version": revision + 1}))
        for key in moving["ids"]:
            _person, revision, first_seen, *rest = self.ids[key]
            self.ids[key] = [new, revision + 1, first_seen, *rest]
            result.rows.append((IDENTITIES.name, _identity_row(key, new, first_seen, revision + 1)))
        target["aliases"] = aliases
        if old != new and moving is not target:
            target["ids"] = list(dict.fromkeys([*target["ids"], *moving["ids"]]))
        self.persons[new] = target
        result.merged.append(old)

    def _coupon_keys(self, event: Event) -> list[str]:
        """A coupon links its claim in the app to its first redemption, weakest of all links.

        A coupon the activation stage sent (``coupon_issued``) counts as claimed by
        the person it was sent to. Claiming makes ``coupon_code:<code>`` an identifier of the claimer (a code
        many persons claim stops linking like any shared identifier). A purchase
        or order carrying the code joins the claimer's person, once: a code
        nobody claimed (a printed voucher) or one already redeemed links nothing.
        """
        code = coupon_code(event)
        if not code:
            return []
        key, at = f"coupon_code:{code}", event["occurred_at"]
        if event.get("type") in COUPON_CLAIM_TYPES:
            return [key]
        redeemed = f"coupon_redeemed:{code}"
        if event.get("type") not in REDEEMING_TYPES or redeemed in self.ids:
            return []
        if key not in self.ids:
            # nobody claimed it yet: a printed voucher, or a claim that arrives later;
            # the earliest such redemption waits for it (see _late_claim)
            strongest = event_id_keys(event["ids"])
            waiting = self.ids.get(f"coupon_unclaimed:{code}")
            if strongest and (waiting is None or at < waiting[2]):
                self.ids[f"coupon_unclaimed:{code}"] = [strongest[0], 1, at]
            return []
        self.ids[redeemed] = [self.ids[key][0], 1, at]
        self.counts["coupons_redeemed"] += 1
        return [key]

    def _late_claim(self, event: Event) -> list[str]:
        """A claim whose redemption arrived first: the redeemer's identifier, to join it.

        The redemption must be at or after the claim in event time, so the
        outcome is the same as if the claim had arrived first.
        """
        if event.get("type") not in COUPON_CLAIM_TYPES:
            return []
        code = coupon_code(event)
        if not code or f"coupon_code:{code}" in self.ids:
            return []
        waiting = self.ids.get(f"coupon_unclaimed:{code}")
        if waiting is None or waiting[2] < event["occurred_at"] or waiting[0] not in self.ids:
            return []
        self.ids[f"coupon_redeemed:{code}"] = [self.ids[waiting[0]][0], 1, waiting[2]]
        del self.ids[f"coupon_unclaimed:{code}"]
        self.counts["coupons_redeemed"] += 1
        return [waiting[0]]

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

    def _too_many(self, person: str, adding: int) -> bool:
        """True (counted) when ``adding`` more identifiers would take the person past the cap."""
        if len(self.persons[person].get("ids") or ()) + adding <= self.max_ids_per_person:
            return False
        self.counts["too_many_identifiers"] += 1
        return True

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
        """Merge persons a and b; the one with the older root survives. Returns the survivor."""
        if self._root(b) < self._root(a):
            a, b = b, a
        ra, rb = self.persons[a], self.persons[b]
        survivor = dict(ra)
        survivor["unique"] = {**(rb.get("unique") or {}), **(ra.get("unique") or {})}
        survivor["root"] = self._root(a)
        survivor["first_seen"] = min(ra["first_seen"], rb["first_seen"])
        if ra.get("consent") or rb.get("consent"):
            survivor["consent"] = merged_history(ra.get("consent"), rb.get("consent"))
        self.persons[a] = survivor
        self._move(b, a, at, "shared_identifier", result)
        del self.persons[b]
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
