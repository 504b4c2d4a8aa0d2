"""Forward chains of merged persons: where a late hand-over goes, never round in a circle.

Journeys and attribution keep a ``forward`` table (merged person -> the
person its state was handed to). A ``handoff`` that reaches a person who has
merged on since is re-sent, on the stage's own input topic, to the end of
that person's chain. A cycle in the table (A -> B and B -> A) would send such
a hand-over round for ever, so this module keeps the table free of cycles and
cuts any it meets (pure: plain mappings, no Kafka).

Where a cycle comes from: identity renames a person back to an id it merged
away before (B merged into A, then an earlier sighting of B's identifier makes
B the root again: A -> B follows B -> A), merge records of two partitions
processed in the other order than identity wrote them, a replayed merge
record, or a table written before this module existed.

How it is cut, and why:

* a merge ``A -> B`` whose survivor's chain already leads back to ``A`` (so
  that ``forward[A] = B`` would close a circle) drops the survivor's own
  forward entry: the merge record is identity's newest word, and it says B is
  alive now. B's old link is the stale one; dropping it keeps every hand-over
  of the component ending at B, so nothing is left behind. Within a partition
  records come in identity's order, so a replay of the input redoes the same
  sequence and ends in the same table;
* a merge ``A -> A`` (a person merged into itself) is no merge: nothing is
  linked or handed over, the person keeps its state;
* a hand-over addressed to a person standing on a cycle (a table that got one
  anyway: written by an older version, or by two processes that could not see
  each other's entries) stays where it is: it is absorbed there, and that
  person's forward entry is dropped, so the cycle opens at that person and
  later hand-overs of the component end there too. A hand-over whose chain
  only runs into a cycle goes to the first person of the cycle it reaches
  (the one the chain closes on), which then absorbs it the same way. Both are
  a function of the table and the record: no hand-over is dropped, every one
  is absorbed after at most one more hop, and replaying the same input gives
  the same result.

Every cut counts ``forward_cycles_cut`` in the stage's counter and logs one
warning.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

CYCLES_CUT = "forward_cycles_cut"


@dataclass(frozen=True)
class Route:
    """Where a hand-over addressed to a person goes through the forward table.

    ``chain`` is the persons visited from the addressee, in order, each once;
    ``target`` is where the hand-over goes next: the chain's last person, or,
    when the chain closes on itself (``cycle``), the person it closes on.
    """

    chain: tuple[str, ...]
    target: str
    cycle: bool = False


def route(forward: Mapping[str, Any], person: str) -> Route:
    """Follow ``person`` through ``forward``; stops at the first person seen twice."""
    chain = [person]
    seen = {person}
    while person in forward:
        nxt = str(forward[person])
        if nxt in seen:
            return Route(tuple(chain), nxt, cycle=True)
        chain.append(nxt)
        seen.add(nxt)
        person = nxt
    return Route(tuple(chain), person)


def follow(forward: Mapping[str, Any], person: str) -> str:
    """Where a person went through merges and renames since (itself when it did not move).

    Terminates on any table contents: on a cycle it returns the person the
    chain closes on (``person`` itself when it stands on the cycle).
    """
    return route(forward, person).target


def record_merge(
    forward: MutableMapping[str, Any], merged: str, survivor: str, counts: Counter[str], stage: str
) -> bool:
    """Note in ``forward`` that ``merged`` went to ``survivor``; False: no hand-over is due.

    A self-merge links nothing (False). A merge that would close a cycle drops
    the survivor's own stale forward entry first (see the module docstring).
    Both are counted as ``forward_cycles_cut`` and logged.
    """
    if merged == survivor:
        counts[CYCLES_CUT] += 1
        log.warning("%s: merge of %s into itself ignored (it keeps its state)", stage, merged)
        return False
    back = route(forward, survivor)
    if merged in back.chain:
        del forward[survivor]  # survivor is on the chain, so it has an entry
        counts[CYCLES_CUT] += 1
        log.warning(
            "%s: merge %s -> %s would close the forward cycle %s; %s's stale link to %s dropped",
            stage,
            merged,
            survivor,
            " -> ".join([*back.chain, survivor]),
            survivor,
            back.chain[1],
        )
    forward[merged] = survivor
    return True


def settle_handoff(
    forward: MutableMapping[str, Any], person: str, sender: str, counts: Counter[str], stage: str
) -> str:
    """Where a hand-over addressed to ``person`` goes next; ``person`` means absorb it here.

    A hand-over standing on a cycle is kept here and the cycle is opened at
    ``person`` (its entry is dropped), counted and logged; one whose chain runs
    into a cycle goes to the person the chain closes on.
    """
    found = route(forward, person)
    if found.cycle and found.target == person:
        del forward[person]
        counts[CYCLES_CUT] += 1
        log.warning(
            "%s: hand-over from %s to %s met the forward cycle %s; kept at %s, the cycle opened there",
            stage,
            sender,
            person,
            " -> ".join([*found.chain, person]),
            person,
        )
    return found.target
