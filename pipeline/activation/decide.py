"""Deciding one activation: the guards, in their fixed order, and the decision row (pure).

Guards, each counted when it stops a message:

0. ``restricted``: the person's processing is restricted (``o2o restrict``);
   nothing is decided for them but this;
1. ``consent``: a message to the person (push, email, sms, webhook) needs
   their marketing consent; unknown consent counts as the configured default;
2. ``quiet_hours``: not in the quiet hours of the store's time zone;
3. ``frequency_cap``: at most N messages per person and channel within H hours;
4. ``duplicate``: one decision (sent or holdout) per rule and person within
   the rule's window (``window_hours`` either side of an earlier one);
5. holdout: a stable share of persons per rule gets a ``holdout`` decision.

A coupon rule then hands out the next code of its pool (``coupons_exhausted``
when none is left). A decision already made for the same rule and trigger
(a replay) is returned as it was made, whatever the history says now.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.activation.rules import MARKETING_CHANNELS, ActivationRules, Rule
from pipeline.model.contract import COUPON_ISSUED, PII_ID_TYPES

HOUR_MS = 3_600_000
GUARDS = ("restricted", "consent", "quiet_hours", "frequency_cap", "duplicate")


@dataclass(frozen=True)
class Trigger:
    """What a decision is about: the rule, the person and the event that triggered it."""

    rule: Rule
    person_id: str
    event_id: str
    triggered_at: int
    store_id: str
    order_id: str = ""
    ids: Mapping[str, str] = field(default_factory=dict)
    """The trigger event's identifiers as stored (for a coupon's ``coupon_issued`` event)."""

    @property
    def decision_id(self) -> str:
        """The decision's id: one per rule and trigger event, the same on every replay."""
        return decision_id_for(self.rule.name, self.event_id)

    @property
    def decided_at(self) -> int:
        """When the decision is due, in event time (the trigger's time plus the rule's delay)."""
        return self.triggered_at + self.rule.delay_ms


def decision_id_for(rule: str, event_id: str) -> str:
    """The id of the decision of ``rule`` on the event ``event_id`` (what feedback it asked for quotes)."""
    return hashlib.blake2b(f"{rule}|{event_id}".encode(), digest_size=12).hexdigest()


def in_holdout(rule: str, person: str, share: float) -> bool:
    """True for the stable ``share`` of persons held out of ``rule`` (a hash, no state)."""
    if share <= 0:
        return False
    digest = hashlib.blake2b(f"{rule}|{person}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def in_quiet_hours(rules: ActivationRules, store: str, at: int) -> bool:
    """True when ``at`` falls in the quiet hours of the store's local time."""
    if rules.quiet_hours is None:
        return False
    local = datetime.fromtimestamp(at / 1000, UTC).astimezone(rules.zone_of(store))
    minute, (start, until) = local.hour * 60 + local.minute, rules.quiet_hours
    return start <= minute < until if start < until else minute >= start or minute < until


def over_cap(rules: ActivationRules, sent: list[int], channel: str, at: int) -> bool:
    """True when one more message on ``channel`` at ``at`` would break one of its caps."""
    return any(
        sum(1 for t in sent if at - cap.hours * HOUR_MS < t <= at) >= cap.count
        for cap in rules.caps.get(channel, ())
    )


class Decider:
    """Applies the guards to triggers of one person's history and writes the decision rows."""

    def __init__(self, rules: ActivationRules, consent_default: bool) -> None:
        self.rules = rules
        self.consent_default = consent_default
        self.counts: Counter[str] = Counter()
        self.restricted: Container[str] = frozenset()  # persons under `o2o restrict`, set by the stage

    def decide(self, trigger: Trigger, history: dict[str, Any], coupon: str | None = None) -> dict[str, Any]:
        """The decision for ``trigger``; updates the history (sends, decisions) to match.

        ``coupon`` is the code the caller took from the rule's pool for this
        decision (None: the pool is empty); ignored for rules without coupons.
        """
        earlier = history["recent"].get(trigger.decision_id)
        if earlier is not None:
            self.counts["replayed"] += 1
            return dict(earlier)
        reason = self.stopped_by(trigger, history)
        rule = trigger.rule
        outcome = "suppressed" if reason else "sent"
        if not reason and in_holdout(rule.name, trigger.person_id, rule.holdout):
            outcome = "holdout"
        if outcome == "sent" and rule.coupons and coupon is None:
            outcome, reason = "suppressed", "coupons_exhausted"
        given = coupon if outcome == "sent" and coupon is not None and rule.coupons else ""
        row = self.row(trigger, outcome, reason, given)
        self.counts[reason or outcome] += 1
        history["recent"][trigger.decision_id] = row
        if outcome == "sent":
            history["sent"].setdefault(rule.channel, []).append(trigger.decided_at)
        return row

    def stopped_by(self, trigger: Trigger, history: dict[str, Any]) -> str:
        """The first guard that stops the message ('' when none does)."""
        rule, at = trigger.rule, trigger.decided_at
        if trigger.person_id in self.restricted:
            return "restricted"
        if rule.channel in MARKETING_CHANNELS:
            consent = history["consent"]
            if not (consent[1] if consent is not None else self.consent_default):
                return "consent"
        if in_quiet_hours(self.rules, trigger.store_id, at):
            return "quiet_hours"
        if over_cap(self.rules, history["sent"].get(rule.channel, []), rule.channel, at):
            return "frequency_cap"
        for row in history["recent"].values():
            same_rule = row["rule"] == rule.name and row["outcome"] != "suppressed"
            if same_rule and abs(row["decided_at"] - at) < rule.window_ms:
                return "duplicate"
        return ""

    def cancelled(self, trigger: Trigger) -> dict[str, Any]:
        """The row of a delayed decision that an event of a ``cancel_if`` type cancelled before it was due."""
        self.counts["cancelled"] += 1
        return self.row(trigger, "suppressed", "cancelled", "")

    @staticmethod
    def row(trigger: Trigger, outcome: str, reason: str, coupon: str) -> dict[str, Any]:
        """The ``activations`` row of a decision."""
        rule = trigger.rule
        message = ""
        if outcome == "sent":
            fields = {"rule": rule.name, "store_id": trigger.store_id, "order_id": trigger.order_id,
                      "coupon": coupon, "channel": rule.channel}  # fmt: skip
            message = rule.template.format_map(fields)
        return {
            "decision_id": trigger.decision_id,
            "rule": rule.name,
            "person_id": trigger.person_id,
            "trigger_event_id": trigger.event_id,
            "triggered_at": trigger.triggered_at,
            "decided_at": trigger.decided_at,
            "channel": rule.channel,
            "outcome": outcome,
            "reason": reason,
            "store_id": trigger.store_id,
            "order_id": trigger.order_id,
            "coupon": coupon,
            "message": message,
            "version": 1,
        }


def coupon_issued_event(row: Mapping[str, Any], ids: Mapping[str, str]) -> dict[str, Any] | None:
    """The ``coupon_issued`` contract event of a decision that sent a coupon, or None.

    It carries the trigger event's identifiers (hashed ones marked
    ``sha256:``, which ingest keeps as they are), so identity links the code
    to the person as if they had claimed it in the app. Its id derives from
    the decision's, so a replayed decision sends the same event.
    """
    if row["outcome"] != "sent" or not row["coupon"] or not ids:
        return None
    occurred = datetime.fromtimestamp(row["decided_at"] / 1000, UTC)
    return {
        "event_id": f"coupon_issued_{row['decision_id']}",
        "source": "app",
        "type": COUPON_ISSUED,
        "occurred_at": occurred.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "ids": {t: f"sha256:{v}" if t in PII_ID_TYPES else v for t, v in ids.items() if v},
        "properties": {"coupon_code": row["coupon"], "decision_id": row["decision_id"], "rule": row["rule"]},
    }
