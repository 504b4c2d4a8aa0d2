"""Activation rules, guards and the stage's handler over dict tables (no broker)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.activation.decide import Decider, Trigger, in_holdout, in_quiet_hours, over_cap
from pipeline.activation.history import new_history
from pipeline.activation.rules import ActivationRules, load_activation_rules, parse_activation_rules
from pipeline.activation.stage import HANDOFF, ActivationHandler
from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.ingest.normalize import EventNormalizer
from pipeline.ingest.schemas import default_registry
from pipeline.kafka import topics
from pipeline.model.event_clock import progress_records

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "activation-rules.toml"
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
NOON = int(datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp() * 1000)  # 14:00 in Paris
SETTINGS = Settings(consent_default="denied")  # type: ignore[call-arg]


def rules_of(*rules: dict[str, Any], **top: Any) -> ActivationRules:
    return parse_activation_rules({**top, "rules": list(rules)})


def rule(name: str = "r", channel: str = "push", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": {"source": "geofence", "type": "enter"},
        "action": {"channel": channel, "template": "hi at {store_id}"},
        **extra,
    }


def rating(
    delay_minutes: int = 120, channel: str = "email", template: str = "rate {store_id}", **extra: Any
) -> dict[str, Any]:
    """A request sent ``delay_minutes`` after a till purchase."""
    return {
        "name": "rating",
        "trigger": {"source": "pos", "type": "purchase"},
        "delay_minutes": delay_minutes,
        "action": {"channel": channel, "template": template},
        **extra,
    }


BUY = {"context": {"store_id": "s1"}, "properties": {"revenue": 30, "transaction_id": "t"}}


def ev(eid: str, person: str, at: int, source: str, etype: str, **extra: Any) -> dict[str, Any]:
    return {"event_id": eid, "person_id": person, "source": source, "type": etype, "occurred_at": at, **extra}


def enter(eid: str, person: str, at: int, store: str = "s1") -> dict[str, Any]:
    return ev(eid, person, at, "geofence", "enter", context={"store_id": store})


def granted(eid: str, person: str, at: int, flag: bool = True) -> dict[str, Any]:
    return ev(eid, person, at, "web", "page_view", consent={"marketing": flag, "analytics": True})


class Stage:
    """An activation handler over dict tables, its own hand-overs fed back like Kafka would."""

    def __init__(self, rules: ActivationRules, partitions: int = 4, clock: float = 0.0) -> None:
        self.now = clock
        self.handler = ActivationHandler(rules, SETTINGS, clock=lambda: self.now)
        self.tables: dict[str, dict[str, Any]] = {name: {} for name in topics.STATE_TABLES["activation"]}
        self.handler.bind(self.tables, partitions=partitions)  # type: ignore[arg-type]
        self.rows: list[dict[str, Any]] = []
        self.touches: list[dict[str, Any]] = []
        self.raw: list[tuple[str, str, dict[str, Any]]] = []  # contract events for ingest (coupon_issued)

    def send(self, *records: dict[str, Any]) -> list[dict[str, Any]]:
        before = len(self.rows)
        pending = list(records)
        while pending:
            out = self.handler.process(pending)
            pending = [v for t, _k, v in out if t == topics.ACTIVATION_HANDOFFS]
            self.rows += [v for t, _k, v in out if t == "activations"]
            self.touches += [v for t, k, v in out if t == topics.JOURNEYS and k == v["person_id"]]
            self.raw += [(t, k, v) for t, k, v in out if t in topics.RAW_TOPICS.values()]
        return self.rows[before:]

    def tick(self) -> list[dict[str, Any]]:
        out = [v for t, _k, v in self.handler.tick() if t == "activations"]
        self.rows += out
        return out


def test_the_example_rules_file_loads() -> None:
    rules = load_activation_rules(EXAMPLE)
    assert [r.name for r in rules.rules] == [
        "open_cart_nearby",
        "collect_arrival",
        "rating_after_purchase",
        "dwell_without_purchase",
        "first_visit_welcome",
    ]
    assert rules.quiet_hours == (21 * 60, 8 * 60)
    assert rules.rules[2].delay_ms == 120 * MIN and rules.rules[2].cancel_if == {"return"}
    assert rules.rules[1].holdout == 0.0 and rules.rules[0].holdout == 0.1


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"rules": []}, "needs at least one rule"),
        (
            {"rules": [rule(trigger={"source": "web", "type": "enter"})]},
            "trigger web/enter is not an event type",
        ),
        ({"rules": [rule(channel="pigeon")]}, "action.channel 'pigeon'"),
        ({"rules": [rule(conditions={"cart_open_days": 0})]}, "cart_open_days takes a positive number"),
        ({"rules": [rule(conditions={"moon_phase": 1})]}, "unknown condition 'moon_phase'"),
        ({"rules": [rule(action={"channel": "sms", "template": "{name}"})]}, "action.template uses ['name']"),
        ({"rules": [rule(cancel_if=["return"])]}, "cancel_if needs delay_minutes"),
        ({"rules": [rule(), rule()]}, "rule names must be unique: ['r']"),
        ({"rules": [rule()], "timezone": "Mars/Olympus"}, "'Mars/Olympus' is not a time zone"),
        ({"rules": [rule()], "quiet_hours": ["25:00", "08:00"]}, "quiet_hours must be"),
        ({"rules": [rule()], "holdout": 1.0}, "holdout must be a share"),
        ({"rules": [rule()], "caps": {"push": [{"count": 0, "hours": 1}]}}, "caps.push: each cap"),
        ({"rules": [rule()], "colour": "red"}, "unknown keys ['colour']"),
    ],
)
def test_a_bad_rules_file_names_its_problem(doc: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_activation_rules(doc)
    assert problem in str(err.value)


def test_every_problem_is_named_at_once(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('holdout = 2\n[[rules]]\nname = "a"\ntrigger = { source = "pos", type = "dance" }\n')
    with pytest.raises(ConfigError) as err:
        load_activation_rules(path)
    assert "holdout must be" in str(err.value) and "pos/dance" in str(err.value)
    assert "needs action" in str(err.value) and str(path) in str(err.value)
    with pytest.raises(ConfigError, match="does not exist"):
        Settings(activation_rules=tmp_path / "missing.toml")  # type: ignore[call-arg]


def test_holdout_is_stable_per_person_and_rule_and_near_its_share() -> None:
    persons = [f"p{i}" for i in range(4000)]
    held = [p for p in persons if in_holdout("r", p, 0.1)]
    assert 0.08 < len(held) / len(persons) < 0.12
    assert held == [p for p in persons if in_holdout("r", p, 0.1)]
    assert held != [p for p in persons if in_holdout("other_rule", p, 0.1)]
    assert not any(in_holdout("r", p, 0.0) for p in persons)


def test_quiet_hours_are_in_the_store_local_time_and_may_span_midnight() -> None:
    rules = rules_of(
        rule(),
        quiet_hours=["21:00", "08:00"],
        timezone="Europe/Paris",
        stores={"ny": {"timezone": "America/New_York"}},
    )
    assert not in_quiet_hours(rules, "s1", NOON)  # 14:00 in Paris
    assert in_quiet_hours(rules, "s1", NOON + 8 * HOUR)  # 22:00 in Paris
    assert in_quiet_hours(rules, "s1", NOON + 17 * HOUR)  # 07:00 in Paris, the next day
    assert not in_quiet_hours(rules, "s1", NOON + 18 * HOUR)  # 08:00: quiet hours are over
    assert in_quiet_hours(rules, "ny", NOON - 9 * HOUR)  # 03:00 UTC: 23:00 in New York
    assert not in_quiet_hours(rules, "ny", NOON)  # 08:00 in New York
    day = rules_of(rule(), quiet_hours=["12:00", "13:00"])  # UTC, within one day
    assert in_quiet_hours(day, "s1", NOON) and not in_quiet_hours(day, "s1", NOON + HOUR)


def test_frequency_caps_count_messages_within_each_period() -> None:
    rules = rules_of(rule(), caps={"push": [{"count": 1, "hours": 12}, {"count": 3, "hours": 168}]})
    assert not over_cap(rules, [], "push", NOON)
    assert over_cap(rules, [NOON - 11 * HOUR], "push", NOON)
    assert not over_cap(rules, [NOON - 12 * HOUR], "push", NOON)
    assert over_cap(rules, [NOON - 3 * DAY, NOON - 2 * DAY, NOON - DAY], "push", NOON)
    assert not over_cap(rules, [NOON - 11 * HOUR], "email", NOON)  # no cap on that channel


def test_guards_apply_in_their_order_and_each_is_counted() -> None:
    rules = rules_of(
        rule(),
        quiet_hours=["21:00", "08:00"],
        timezone="Europe/Paris",
        caps={"push": [{"count": 1, "hours": 2}]},
    )
    decider = Decider(rules, consent_default=False)
    history = new_history()
    night = NOON + 9 * HOUR  # 23:00 in Paris
    # no consent yet: consent stops it before the quiet hours are looked at
    assert decider.decide(Trigger(rules.rules[0], "p", "e1", night, "s1"), history)["reason"] == "consent"
    history["consent"] = [NOON - DAY, True]
    assert decider.decide(Trigger(rules.rules[0], "p", "e2", night, "s1"), history)["reason"] == "quiet_hours"
    sent = decider.decide(Trigger(rules.rules[0], "p", "e3", NOON, "s1"), history)
    assert (sent["outcome"], sent["message"]) == ("sent", "hi at s1")
    assert (
        decider.decide(Trigger(rules.rules[0], "p", "e4", NOON + HOUR, "s1"), history)["reason"]
        == "frequency_cap"
    )
    # past the cap, still within the rule's 24 h window: one decision per rule, person and window
    assert (
        decider.decide(Trigger(rules.rules[0], "p", "e5", NOON + 3 * HOUR, "s1"), history)["reason"]
        == "duplicate"
    )
    assert decider.decide(Trigger(rules.rules[0], "p", "e6", NOON + DAY, "s1"), history)["outcome"] == "sent"
    assert decider.counts == {"consent": 1, "quiet_hours": 1, "sent": 2, "frequency_cap": 1, "duplicate": 1}
    # a replay of a trigger gets the decision it got, whatever the history says now
    assert decider.decide(Trigger(rules.rules[0], "p", "e3", NOON, "s1"), history) == sent


def test_a_restricted_person_gets_no_decision_but_restricted_first() -> None:
    rules = rules_of(rule(), caps={"push": [{"count": 1, "hours": 2}]})
    decider = Decider(rules, consent_default=False)  # no consent either: restricted is looked at first
    decider.restricted = {"p"}
    history = new_history()
    row = decider.decide(Trigger(rules.rules[0], "p", "e1", NOON, "s1"), history)
    assert (row["outcome"], row["reason"], row["message"]) == ("suppressed", "restricted", "")
    assert history["sent"] == {} and decider.counts == {"restricted": 1}
    decider.restricted = set()  # lifted
    history["consent"] = [NOON - DAY, True]
    assert decider.decide(Trigger(rules.rules[0], "p", "e2", NOON, "s1"), history)["outcome"] == "sent"


def test_an_open_cart_near_a_store_sends_a_push_with_a_coupon_and_the_holdout_gets_none() -> None:
    cart = rule(
        "cart",
        conditions={"cart_open_days": 7},
        holdout=0.5,
        action={"channel": "push", "template": "{coupon} at {store_id}", "coupons": ["A", "B", "C", "D"]},
    )
    stage = Stage(rules_of(cart))
    persons = [f"p{i}" for i in range(12)]
    for i, p in enumerate(persons):
        stage.send(granted(f"c{i}", p, NOON - DAY), ev(f"a{i}", p, NOON - DAY + MIN, "web", "add_to_cart"))
    decisions = {row["person_id"]: row for p in persons for row in stage.send(enter(f"g{p}", p, NOON))}
    assert set(decisions) == set(persons)
    held = {p for p in persons if in_holdout("cart", p, 0.5)}
    assert held and held != set(persons)
    assert {p for p, row in decisions.items() if row["outcome"] == "holdout"} == held
    sent = [row for row in decisions.values() if row["outcome"] == "sent"]
    coupons = [row["coupon"] for row in sent]
    # each code once; four codes over four partitions, one per partition
    assert len(set(coupons) - {""}) == len([c for c in coupons if c]) <= 4
    assert all(row["message"] == f"{row['coupon']} at s1" for row in sent if row["coupon"])
    assert {row["reason"] for row in sent if not row["coupon"]} <= set()
    exhausted = [row for row in decisions.values() if row["reason"] == "coupons_exhausted"]
    assert len(exhausted) + len(coupons) == len(persons) - len(held)
    assert stage.raw == []  # the trigger events had no identifiers: nothing to link the codes by
    # bought since the cart: no trigger any more
    stage.send(ev("o", persons[0], NOON + HOUR, "web", "order_completed", properties={"revenue": 5}))
    assert stage.send(enter("g-again", persons[0], NOON + 2 * DAY)) == []


def test_a_click_and_collect_arrival_alerts_staff_until_the_pickup() -> None:
    alert = rule(
        "collect",
        channel="staff_alert",
        conditions={"collect_waiting": True},
        action={"channel": "staff_alert", "template": "order {order_id} at {store_id}"},
    )
    stage = Stage(rules_of(alert))
    stage.send(
        ev(
            "o1",
            "p",
            NOON - HOUR,
            "web",
            "order_completed",
            properties={"order_id": "O-9", "fulfillment": "click_and_collect", "revenue": 20},
        )
    )
    [row] = stage.send(enter("g1", "p", NOON, "s2"))
    # no marketing consent is needed to serve an order
    assert (row["outcome"], row["message"], row["order_id"]) == ("sent", "order O-9 at s2", "O-9")
    stage.send(
        ev("k", "p", NOON + 10 * MIN, "pos", "click_and_collect_pickup", properties={"order_id": "O-9"})
    )
    assert stage.send(enter("g2", "p", NOON + 2 * DAY, "s2")) == []


def test_a_delayed_rating_request_waits_for_event_time_and_a_return_cancels_it() -> None:
    stage = Stage(rules_of(rating(cancel_if=["return"])))
    stage.send(granted("c1", "a", NOON - HOUR), granted("c2", "b", NOON - HOUR))
    assert (
        stage.send(
            ev("b1", "a", NOON, "pos", "purchase", **BUY), ev("b2", "b", NOON, "pos", "purchase", **BUY)
        )
        == []
    )
    stage.send(ev("r", "b", NOON + HOUR, "pos", "return", properties={"transaction_id": "t"}))
    assert stage.send(ev("x", "z", NOON + 119 * MIN, "web", "page_view")) == []  # not due yet
    # the partitions' event time passes 2 h: a's request goes out, b's was cancelled by the return
    later = [ev(f"x{i}", f"z{i}", NOON + 121 * MIN, "web", "page_view") for i in range(40)]
    rows = stage.send(*later)
    assert {(r["person_id"], r["outcome"], r["reason"]) for r in stage.rows} == {
        ("a", "sent", ""),
        ("b", "suppressed", "cancelled"),
    }
    assert [r["decided_at"] for r in rows] == [NOON + 120 * MIN]


def test_an_idle_partition_moves_its_event_time_on_with_the_clock() -> None:
    stage = Stage(rules_of(rating(1, "staff_alert", "thank")), partitions=1)
    stage.send(ev("b", "a", NOON, "pos", "purchase", properties={"revenue": 1}))
    assert stage.tick() == []
    stage.now = SETTINGS.idle_partition_seconds + 61
    assert stage.tick() == []  # identity vouched for nothing yet: a stalled input looks the same
    stage.send(*(record for _key, record in progress_records(1)))
    assert [r["outcome"] for r in stage.tick()] == ["sent"]


def test_a_withdrawal_stops_messages_at_once_and_a_grant_restarts_them() -> None:
    stage = Stage(rules_of(rule(window_hours=1)))
    stage.send(granted("c1", "p", NOON - HOUR))
    assert [r["outcome"] for r in stage.send(enter("g1", "p", NOON))] == ["sent"]
    stage.send(granted("c2", "p", NOON + 2 * HOUR, flag=False))
    assert [r["reason"] for r in stage.send(enter("g2", "p", NOON + 3 * HOUR))] == ["consent"]
    # a late event from before the withdrawal does not bring consent back
    stage.send(granted("c0", "p", NOON - 2 * HOUR, flag=True))
    assert [r["reason"] for r in stage.send(enter("g3", "p", NOON + 4 * HOUR))] == ["consent"]
    stage.send(granted("c3", "p", NOON + 5 * HOUR))
    assert [r["outcome"] for r in stage.send(enter("g4", "p", NOON + 6 * HOUR))] == ["sent"]


def test_a_withdrawal_before_a_delayed_request_is_due_suppresses_it() -> None:
    stage = Stage(rules_of(rating()), partitions=1)
    stage.send(granted("c1", "a", NOON - HOUR), granted("c2", "b", NOON - HOUR))
    stage.send(ev("b1", "a", NOON, "pos", "purchase", **BUY), ev("b2", "b", NOON, "pos", "purchase", **BUY))
    # an hour later a withdraws marketing consent (as identity passes a consent_updated on)
    stage.send(ev("off", "a", NOON + HOUR, "web", "consent_updated", consent={"marketing": False}))
    stage.send(ev("x", "z", NOON + 121 * MIN, "web", "page_view"))
    assert {(r["person_id"], r["outcome"], r["reason"]) for r in stage.rows} == {
        ("a", "suppressed", "consent"),
        ("b", "sent", ""),
    }


def test_a_merged_persons_history_goes_to_the_survivor() -> None:
    cart = rule("cart", conditions={"cart_open_days": 7})
    stage = Stage(rules_of(cart))
    stage.send(granted("c", "old", NOON - DAY), ev("a", "new", NOON - HOUR, "web", "add_to_cart"))
    # identity merges "new" into "old": the cart now belongs to "old"
    stage.send({"record": "merge", "person_id": "new", "to_person": "old"})
    assert "new" not in stage.tables["activation_persons"]
    assert [r["outcome"] for r in stage.send(enter("g", "old", NOON))] == ["sent"]
    # journeys' hand-overs on the same topic are not activation's
    stage.send({"record": "handoff", "person_id": "old", "from_person": "x", "state": {"events": []}})
    assert stage.handler.counts["handoffs"] == 1
    # a late hand-over addressed to the merged person follows the forward table
    late = {
        "record": HANDOFF,
        "person_id": "new",
        "from_person": "gone",
        "state": stage.tables["activation_persons"]["old"],
    }
    stage.send(late)
    assert "new" not in stage.tables["activation_persons"] and stage.handler.counts["handoffs"] == 2


def test_forget_erases_the_persons_history() -> None:
    stage = Stage(rules_of(rule()))
    stage.send(granted("c", "p", NOON))
    stage.send({"record": "forget", "person_id": "p"})
    assert stage.tables["activation_persons"] == {}
    assert [r["reason"] for r in stage.send(enter("g", "p", NOON + HOUR))] == ["consent"]


def test_a_long_dwell_without_purchase_and_a_first_visit_to_a_store() -> None:
    dwell = {
        "name": "dwell",
        "trigger": {"source": "geofence", "type": "dwell"},
        "conditions": {"dwell_minutes": 15, "no_purchase_minutes": 60},
        "action": {"channel": "staff_alert", "template": "help"},
        "window_hours": 0.01,
    }
    welcome = {
        "name": "welcome",
        "trigger": {"source": "pos", "type": "loyalty_scan", "stores": ["s1", "s2"]},
        "conditions": {"first_visit_to_store": True},
        "action": {"channel": "staff_alert", "template": "welcome to {store_id}"},
    }
    stage = Stage(rules_of(dwell, welcome))

    def dwelt(eid: str, at: int, seconds: int) -> dict[str, Any]:
        return ev(
            eid,
            "p",
            at,
            "geofence",
            "dwell",
            context={"store_id": "s1"},
            properties={"dwell_seconds": seconds},
        )

    assert stage.send(dwelt("d1", NOON, 600)) == []  # 10 minutes: not long enough
    assert [r["rule"] for r in stage.send(dwelt("d2", NOON + MIN, 900))] == ["dwell"]
    stage.send(ev("b", "p", NOON + 2 * MIN, "pos", "purchase", properties={"revenue": 3}))
    assert stage.send(dwelt("d3", NOON + 30 * MIN, 1800)) == []  # bought 28 minutes ago
    assert [r["rule"] for r in stage.send(dwelt("d4", NOON + 63 * MIN, 1800))] == ["dwell"]
    scan = {"properties": {"store_id": "s2"}}
    assert stage.send(ev("l1", "p", NOON + 2 * HOUR, "pos", "loyalty_scan", context={"store_id": "s1"})) == []
    assert [
        r["message"] for r in stage.send(ev("l2", "p", NOON + 3 * HOUR, "pos", "loyalty_scan", **scan))
    ] == ["welcome to s2"]
    assert stage.send(ev("l3", "p", NOON + 4 * HOUR, "pos", "loyalty_scan", context={"store_id": "s9"})) == []


def test_delivery_retries_with_backoff_and_posts_at_most_once() -> None:
    from pipeline.activation.delivery import (
        DeliveryLedger,
        RetryPolicy,
        retry_after_seconds,
        status_record,
        verdict,
    )

    policy = RetryPolicy(max_attempts=5, first_delay=0.5, max_delay=3.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
    assert policy.delay(1, retry_after=7.0) == 3.0 and policy.delay(2, retry_after=0.2) == 0.2
    assert retry_after_seconds("2") == 2.0 and retry_after_seconds("Wed, 21 Oct 2026 07:28:00 GMT") is None
    assert [verdict(c) for c in (200, 204, 400, 404, 408, 429, 500, 503, None)] == [
        "delivered", "delivered", "failed", "failed", "retry", "retry", "retry", "retry", "retry",
    ]  # fmt: skip
    ledger = DeliveryLedger()
    decision = {"decision_id": "d", "rule": "r", "person_id": "p"}
    assert ledger.next_step("d") == "post"
    ledger.take("d", status_record(decision, "sending", 0, 1))
    assert ledger.next_step("d") == "unknown"  # left sending by a crash: never posted again
    for final in ("delivered", "failed", "unknown"):
        ledger.take("d", status_record(decision, final, 1, 2))
        assert ledger.next_step("d") == "skip"
    assert (
        status_record(decision, "sending", 0, 1)["version"]
        < status_record(decision, "failed", 1, 2)["version"]
    )


def test_a_message_sent_is_a_touchpoint_and_a_staff_alert_or_a_holdout_is_not() -> None:
    alert = rule("alert", channel="staff_alert", action={"channel": "staff_alert", "template": "x"})
    stage = Stage(rules_of(rule("push_rule"), alert, rule("held", holdout=0.999999)))
    stage.send(granted("c", "p", NOON - HOUR))
    rows = stage.send(enter("g", "p", NOON))
    assert sorted((r["rule"], r["outcome"]) for r in rows) == [
        ("alert", "sent"), ("held", "holdout"), ("push_rule", "sent"),
    ]  # fmt: skip
    push = next(r for r in rows if r["rule"] == "push_rule")
    assert stage.touches == [{
        "record": "touch", "person_id": "p", "kind": "message", "session_id": f"msg_{push['decision_id']}",
        "channel": "push", "campaign_name": "push_rule", "started_at": NOON, "identified": True,
    }]  # fmt: skip


def test_attribution_passes_a_touch_for_a_merged_person_to_the_survivor() -> None:
    from pipeline.attribution.stage import AttributionHandler

    handler = AttributionHandler(Settings(models=("linear",)))  # type: ignore[call-arg]
    paths: dict[str, Any] = {}
    handler.bind({"attribution_paths": paths, "attribution_forward": {"gone": "kept"}})  # type: ignore[dict-item]
    touch = {"record": "touch", "person_id": "gone", "session_id": "msg_1", "kind": "message",
             "channel": "push", "campaign_name": "r", "started_at": NOON, "identified": True}  # fmt: skip
    out = handler.process([touch])
    assert out == [(topics.JOURNEYS, "kept", {**touch, "person_id": "kept"})] and "gone" not in paths
    handler.process([{**touch, "person_id": "kept"}])
    assert list(paths["kept"]["touches"]) == ["msg_1"]
    # journeys' own touches of a merged person stay put: journeys re-cuts them under the survivor,
    # and one replayed after a crash must not add a session that no longer exists
    visit = {**touch, "session_id": "s_old", "kind": "store_visit", "channel": "store"}
    assert handler.process([visit]) == [] and list(paths["kept"]["touches"]) == ["msg_1"]


def hashed_email(i: int) -> str:
    """A person's e-mail as ingest stores it: a salted SHA-256, in hex."""
    return f"{i:02d}" + "ab" * 31


def coupon_stage() -> Stage:
    """Twelve carts, then each person near the store with their identifiers; event time moved on after."""
    codes = [f"K{i}" for i in range(40)]
    cart = rule("cart", conditions={"cart_open_days": 7}, holdout=0.5,
                action={"channel": "push", "template": "{coupon}", "coupons": codes})  # fmt: skip
    later = rule("later", delay_minutes=30,
                 action={"channel": "email", "template": "{coupon}", "coupons": ["L1"]})  # fmt: skip
    stage = Stage(rules_of(cart, later))
    for i in range(12):
        p, ids = f"p{i}", {"email": hashed_email(i), "device_id": f"d{i}"}
        stage.send(granted(f"c{i}", p, NOON - DAY), ev(f"a{i}", p, NOON - DAY + MIN, "web", "add_to_cart"))
        stage.send({**enter(f"g{i}", p, NOON), "ids": ids})
    stage.send(ev("late", "p0", NOON + HOUR, "web", "page_view"))  # p0's partition passes the delay
    return stage


def test_each_coupon_sent_goes_to_identity_as_a_coupon_issued_event_of_the_person() -> None:
    stage = coupon_stage()
    sent = {row["decision_id"]: row for row in stage.rows if row["outcome"] == "sent" and row["coupon"]}
    assert {row["rule"] for row in sent.values()} == {"cart", "later"}
    assert len(stage.raw) == len(sent)  # one per coupon sent; none for the holdout or a message without one
    normaliser = EventNormalizer(salt="another-salt", max_bytes=10_000, max_future_ms=DAY,
                                 max_age_ms=400 * DAY, registry=default_registry())  # fmt: skip
    for topic, key, event in stage.raw:
        row = sent[event["properties"]["decision_id"]]
        i = int(row["person_id"][1:])
        assert topic == "raw.app" and event["type"] == "coupon_issued"
        assert event["properties"]["coupon_code"] == row["coupon"]
        stored = normaliser.normalise(orjson.dumps(event), NOON + DAY)  # what ingest makes of it
        assert stored["ids"] == {"email": hashed_email(i), "device_id": f"d{i}"}  # not hashed again
        assert stored["occurred_at"] == row["decided_at"] and key == f"email:sha256:{hashed_email(i)}"
    replayed = coupon_stage().raw  # the same input again: the same events, which ingest drops as repeats
    assert sorted(e["event_id"] for _t, _k, e in replayed) == sorted(e["event_id"] for _t, _k, e in stage.raw)


def test_a_rule_cannot_trigger_on_the_coupons_activation_issues() -> None:
    with pytest.raises(ConfigError, match="written by activation itself"):
        rules_of(rule("loop", trigger={"source": "app", "type": "coupon_issued"}))
