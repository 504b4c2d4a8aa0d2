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

* identity numbers its merge records (``seq``, one counter for the graph), so
  a stage can tell which of two records is identity's newer word however the
  partitions interleaved. A merge ``A -> B`` whose survivor's chain already
  leads back to ``A`` (so that ``forward[A] = B`` would close a circle) makes
  the cycle lose its *oldest* link: when the merge itself is older than every
  link on the way back, it is stale (identity renamed ``A`` back to life
  since) and is ignored, ``A`` keeping its state; else the oldest link on the
  way back is dropped and the merge recorded. Either way what is left is the
  newer words, the same table whatever order the partitions were read in. A
  merge older than the merged person's own recorded link is stale too.
  Links and records without a number (written before identity numbered them)
  count as the oldest; a merge record without one drops the survivor's own
  link as before: it is taken as identity's newest word;
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
STALE = "stale_merges_ignored"


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


def target_of(entry: Any) -> str:
    """The person a forward entry points at (an entry is ``[survivor, seq]``, or a bare survivor id)."""
    return str(entry[0]) if isinstance(entry, list | tuple) else str(entry)


def sequence_of(entry: Any) -> int:
    """Identity's number of the merge behind a forward entry; -1 for an entry without one."""
    if isinstance(entry, list | tuple) and len(entry) > 1 and entry[1] is not None:
        return int(entry[1])
    return -1


def route(forward: Mapping[str, Any], person: str) -> Route:
    """Follow ``person`` through ``forward``; stops at the first person seen twice."""
    chain = [person]
    seen = {person}
    while person in forward:
        nxt = target_of(forward[person])
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
    forward: MutableMapping[str, Any],
    merged: str,
    survivor: str,
    counts: Counter[str],
    stage: str,
    seq: int | None = None,
) -> bool:
    """Note in ``forward`` that ``merged`` went to ``survivor``; False: no hand-over is due.

    ``seq`` is identity's number of the merge. A self-merge links nothing
    (False). A merge that would close a cycle makes the cycle lose its oldest
    link: the merge itself when it is the oldest (False, it is stale), else
    the oldest link on the survivor's way back (see the module docstring).
    Both are counted as ``forward_cycles_cut`` and logged.
    """
    if merged == survivor:
        counts[CYCLES_CUT] += 1
        log.warning("%s: merge of %s into itself ignored (it keeps its state)", stage, merged)
        return False
    number = -1 if seq is None else int(seq)
    if seq is not None and merged in forward and sequence_of(forward[merged]) > number:
        counts[STALE] += 1  # identity merged this person again since: a replayed older record
        return False
    back = route(forward, survivor)
    if merged in back.chain:
        way_back = back.chain[: back.chain.index(merged)]  # persons whose links lead survivor -> merged
        oldest = (
            min(way_back, key=lambda person: sequence_of(forward[person])) if seq is not None else survivor
        )
        cycle = " -> ".join([*back.chain[: len(way_back) + 1], survivor])
        counts[CYCLES_CUT] += 1
        if seq is not None and number < sequence_of(forward[oldest]):
            log.warning("%s: merge %s -> %s (#%d) would close the forward cycle %s and is older than every "
                        "link on it: ignored (%s keeps its state)", stage, merged, survivor, number, cycle,
                        merged)  # fmt: skip
            return False
        log.warning("%s: merge %s -> %s would close the forward cycle %s; %s's older link to %s dropped",
                    stage, merged, survivor, cycle, oldest, target_of(forward[oldest]))  # fmt: skip
        del forward[oldest]
    forward[merged] = survivor if seq is None else [survivor, number]
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
