"""The activation stage: rules on each person's live journey decide messages (pure handler).

Input is the person-keyed stream after identity (every event, plus identity's
``merge`` and ``forget`` records); journeys' own hand-overs on it are not for
this stage and are skipped. A merged person's history goes to the survivor
through the stage's own hand-over topic. Decisions of delayed rules wait in
the person's history until the partition's event time reaches them. A message sent to the person (push,
e-mail, SMS) is also a touchpoint on the ``journeys`` topic, channel and all,
so attribution credits it (session id ``msg_<decision id>``, kind ``message``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, MutableMapping, Sequence
from typing import Any

from pipeline.activation.decide import Decider, Trigger, coupon_issued_event
from pipeline.activation.history import (
    conditions_hold,
    forget_before,
    merge_histories,
    new_history,
    observe,
    store_of,
    trim_history,
    waiting_order,
)
from pipeline.activation.rules import ActivationRules, Rule
from pipeline.config import Settings
from pipeline.identity.erasure import Suppressions
from pipeline.identity.forwarding import record_merge, settle_handoff
from pipeline.kafka import topics
from pipeline.kafka.envelopes import key_for_partition, partition_for
from pipeline.model.contract import Event
from pipeline.model.event_clock import PROGRESS, PartitionClock
from pipeline.model.handler import Emission, trimmed
from pipeline.model.rows import ACTIVATIONS

HANDOFF = "activation_handoff"
TOUCH_CHANNELS = frozenset({"push", "email", "sms"})
"""Messages that become touchpoints attribution credits (a staff alert or a webhook is not a touch)."""


class ActivationHandler:
    """Keeps each person's recent history, evaluates the rules on it and emits decisions."""

    table_names = topics.STATE_TABLES["activation"]
    inputs = (topics.IDENTIFIED, topics.ACTIVATION_HANDOFFS)

    def __init__(
        self,
        rules: ActivationRules,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        privacy: Suppressions | None = None,
    ) -> None:
        self.rules = rules
        self.privacy = privacy  # the list that names restricted persons (`o2o restrict`)
        self.decider = Decider(rules, settings.consent_defaults["marketing"])
        self.counts: Counter[str] = self.decider.counts
        self.by_name = {rule.name: rule for rule in rules.rules}
        self.by_trigger: dict[tuple[str, str], list[Rule]] = {}
        for rule in rules.rules:
            self.by_trigger.setdefault((rule.source, rule.type), []).append(rule)
        longest_cap = max((cap.hours for caps in rules.caps.values() for cap in caps), default=0.0)
        self.keep_ms = int(max([longest_cap * 3_600_000, *(r.window_ms + r.delay_ms for r in rules.rules)]))
        self.clock = PartitionClock(settings.idle_partition_seconds, clock)
        self.state: MutableMapping[str, Any] = {}
        self.pools: MutableMapping[str, Any] = {}
        self.forward: MutableMapping[str, Any] = {}

    def bind(self, tables: Mapping[str, MutableMapping[str, Any]], partitions: int = 1) -> None:
        """Use the given state tables; ``partitions`` is the input topics' partition count."""
        self.state = tables["activation_persons"]
        self.pools = tables["activation_partitions"]
        self.forward = tables.get("activation_forward", {})
        self.clock.bind(self.pools, partitions)

    def release_partitions(self, partitions: Collection[int]) -> None:
        """Another process holds these input partitions now: forget their event time and due persons."""
        self.clock.release(partitions)

    def partition_of(self, person: str) -> int:
        """The input partition of a person (records are keyed by person id)."""
        return partition_for(person.encode(), self.clock.partitions)

    def process(self, records: Sequence[dict[str, Any]]) -> list[Emission]:
        """Fold events into histories, decide the rules they trigger, pass merged histories on."""
        self._refresh_restrictions()
        out: list[Emission] = []
        newest: dict[int, int] = {}
        for record in records:
            person, control = record["person_id"], record.get("record")
            if control is None:
                partition = self._watch(self.partition_of(person))
                self._event(person, record, out)  # type: ignore[arg-type]
                newest[partition] = max(newest.get(partition, 0), record["occurred_at"])
            elif control == "merge":
                if record_merge(
                    self.forward, person, record["to_person"], self.counts, "activation", record.get("seq")
                ):
                    history = self.state.get(person)
                    if history is not None:
                        del self.state[person]
                        handoff = {"record": HANDOFF, "person_id": record["to_person"], "from_person": person,
                                   "state": history}  # fmt: skip
                        out.append((topics.ACTIVATION_HANDOFFS, record["to_person"], handoff))
            elif control == HANDOFF:
                target = settle_handoff(
                    self.forward, person, record.get("from_person", ""), self.counts, "activation"
                )
                if target != person:  # this person merged on since: pass the history on
                    out.append((topics.ACTIVATION_HANDOFFS, target, {**record, "person_id": target}))
                    continue
                history = merge_histories(self.state.get(person), record["state"])
                self._store(person, history)
                if history["pending"]:
                    partition = self._watch(self.partition_of(person))
                    self.clock.schedule(partition, min(p["due"] for p in history["pending"]), person)
                self.counts["handoffs"] += 1
            elif control == PROGRESS:  # identity vouches for the partition (event_clock.py)
                self.clock.vouch(record["partition"])
            elif control == "forget":
                for table in (self.state, self.forward):
                    if person in table:
                        del table[person]
                self.counts["forgotten"] += 1
            # journeys' hand-overs travel on the same topic: not this stage's
        self.clock.observed(newest)
        for partition in newest:
            self._release(partition, out)
        return out

    def tick(self) -> list[Emission]:
        """Move idle partitions' event time on with the clock; send the delayed decisions it reaches."""
        self._refresh_restrictions()
        out: list[Emission] = []
        for partition in self.clock.idle_steps():
            self._release(partition, out)
        return out

    def flush(self) -> list[Emission]:
        """End of input in drain mode: delayed decisions wait for their time, so nothing is forced out."""
        return []

    def trim_state(self, table: str, _key: str, value: Any) -> Any:
        """A person's history too large for a changelog record loses its oldest entries (counted)."""
        return trimmed(table, "activation_persons", value, trim_history, self.counts)

    def _refresh_restrictions(self) -> None:
        if self.privacy is not None:
            self.privacy.refresh()
            self.decider.restricted = self.privacy.restricted

    def _event(self, person: str, event: Event, out: list[Emission]) -> None:
        history = self.state.get(person) or new_history()
        at, etype = event["occurred_at"], event.get("type", "")
        for pending in list(history["pending"]):
            if etype in pending["cancel_if"] and pending["at"] < at <= pending["due"]:
                history["pending"].remove(pending)
                trigger = self._trigger(person, pending)
                if trigger is not None:
                    out.extend(self._emit(self.decider.cancelled(trigger), trigger))
        for rule in self.by_trigger.get((event.get("source", ""), etype), ()):
            store = store_of(event)
            if not rule.triggered_by(event.get("source", ""), etype, store):
                continue
            if not conditions_hold(rule.conditions, history, event):
                continue
            ids = (event.get("ids") or {}) if rule.coupons else {}
            trigger = Trigger(rule, person, event["event_id"], at, store, waiting_order(history), ids)
            if rule.delay_ms:
                self._hold(person, history, trigger)
            else:
                out.extend(self._emit(self._decide(person, trigger, history), trigger))
        observe(history, event)
        forget_before(history, at - self.keep_ms)
        self._store(person, history)

    def _hold(self, person: str, history: dict[str, Any], trigger: Trigger) -> None:
        if any(p["decision_id"] == trigger.decision_id for p in history["pending"]):
            return  # a replay of the trigger
        if trigger.decision_id in history["recent"]:
            return  # decided already
        history["pending"].append({
            "decision_id": trigger.decision_id, "rule": trigger.rule.name, "event_id": trigger.event_id,
            "at": trigger.triggered_at, "due": trigger.decided_at, "store_id": trigger.store_id,
            "order_id": trigger.order_id, "cancel_if": sorted(trigger.rule.cancel_if),
            **({"ids": dict(trigger.ids)} if trigger.ids else {}),
        })  # fmt: skip
        self.clock.schedule(self.partition_of(person), trigger.decided_at, person)

    def _release(self, partition: int, out: list[Emission]) -> None:
        """Decide the delayed decisions the partition's event time has reached."""
        for _deadline, person in self.clock.due(partition):
            history = self.state.get(person)
            if not history:
                continue
            watermark = self.clock.watermarks[partition]
            ready = [p for p in history["pending"] if p["due"] <= watermark]
            if not ready:
                continue  # a stale entry
            history["pending"] = [p for p in history["pending"] if p["due"] > watermark]
            for pending in sorted(ready, key=lambda p: (p["due"], p["decision_id"])):
                trigger = self._trigger(person, pending)
                if trigger is not None:
                    out.extend(self._emit(self._decide(person, trigger, history), trigger))
            self._store(person, history)

    def _decide(self, person: str, trigger: Trigger, history: dict[str, Any]) -> dict[str, Any]:
        fresh = trigger.rule.coupons and trigger.decision_id not in history["recent"]
        coupon = self._next_coupon(trigger.rule, self.partition_of(person)) if fresh else None
        row = self.decider.decide(trigger, history, coupon)
        if coupon is not None and row["coupon"] != coupon:
            self._return_coupon(trigger.rule, self.partition_of(person))
        return row

    def _next_coupon(self, rule: Rule, partition: int) -> str | None:
        """The next unused code of the rule's pool in this partition's share (codes i = partition mod n)."""
        key = key_for_partition(f"coupons|{rule.name}", partition, self.clock.partitions)
        used = int(self.pools.get(key) or 0)
        index = partition + used * self.clock.partitions
        if index >= len(rule.coupons):
            return None
        self.pools[key] = used + 1
        return rule.coupons[index]

    def _return_coupon(self, rule: Rule, partition: int) -> None:
        key = key_for_partition(f"coupons|{rule.name}", partition, self.clock.partitions)
        self.pools[key] = int(self.pools.get(key) or 0) - 1

    def _trigger(self, person: str, pending: dict[str, Any]) -> Trigger | None:
        """The trigger of a delayed decision; None when its rule left the rules file since (counted)."""
        rule = self.by_name.get(pending["rule"])
        if rule is None:
            self.counts["rule_removed"] += 1
            return None
        return Trigger(
            rule, person, pending["event_id"], pending["at"], pending["store_id"], pending["order_id"],
            pending.get("ids") or {},
        )  # fmt: skip

    def _emit(self, row: dict[str, Any], trigger: Trigger) -> list[Emission]:
        """The decision's record; for a message sent to the person a touchpoint for attribution; for a
        coupon sent, the ``coupon_issued`` event that links the code to the person in identity."""
        out: list[Emission] = [(ACTIVATIONS.topic, row["decision_id"], row)]
        issued = coupon_issued_event(row, trigger.ids)
        if issued is not None:
            out.append((topics.raw_topic_name(issued), (topics.raw_key(issued) or b"").decode(), issued))
            self.counts["coupons_issued"] += 1
        if row["outcome"] == "sent" and row["channel"] in TOUCH_CHANNELS:
            touch = {
                "record": "touch", "person_id": row["person_id"], "kind": "message",
                "session_id": f"msg_{row['decision_id']}", "channel": row["channel"],
                "campaign_name": row["rule"], "started_at": row["decided_at"], "identified": True,
            }  # fmt: skip
            out.append((topics.JOURNEYS, row["person_id"], touch))
        return out

    def _watch(self, partition: int) -> int:
        return self.clock.watch(partition, lambda: self._deadlines(partition))

    def _deadlines(self, partition: int) -> Iterable[tuple[int, str]]:
        for person in list(self.state.keys()):
            history = self.state.get(person)
            if history and history["pending"] and self.partition_of(person) == partition:
                yield min(p["due"] for p in history["pending"]), person

    def _store(self, person: str, history: dict[str, Any]) -> None:
        self.state[person] = history
