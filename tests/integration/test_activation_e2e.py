"""Activation stories through the real broker and chDB: `o2o run all --drain` with a rules file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.activation.decide import decision_id_for, in_holdout
from pipeline.config import Settings
from tests.conftest import at, o2o, query, story_event

pytestmark = pytest.mark.integration

RULES = """
timezone = "Europe/Paris"
quiet_hours = ["21:00", "08:00"]
[caps]
push = [{ count = 1, hours = 12 }]

[[rules]]
name = "open_cart_nearby"
trigger = { source = "geofence", type = "enter" }
conditions = { cart_open_days = 7 }
holdout = 0.5
[rules.action]
channel = "push"
template = "show {coupon} at {store_id}"
coupons = ["C1", "C2", "C3", "C4", "C5", "C6"]

[[rules]]
name = "collect_arrival"
trigger = { source = "geofence", type = "enter" }
conditions = { collect_waiting = true }
action = { channel = "staff_alert", template = "order {order_id} is here" }

[[rules]]
name = "rating_after_purchase"
trigger = { source = "pos", type = "purchase", stores = ["s3"] }
delay_minutes = 120
cancel_if = ["return"]
action = { channel = "email", template = "rate {store_id}" }
"""

YES = {"analytics": True, "marketing": True}
NO = {"analytics": True, "marketing": False}


def stories() -> list[dict[str, Any]]:
    """Cart shoppers walking past a store, a click-and-collect arrival, till purchases, a withdrawal."""
    events: list[dict[str, Any]] = []
    for i in range(6):  # open carts online, then a walk into store s1 an hour later
        ids = {"user_id": f"shopper{i}", "anonymous_id": f"cookie{i}"}
        events.append(story_event(f"cart{i}", "web", "add_to_cart", at(minutes=i), ids, consent=YES))
        app = {"user_id": f"shopper{i}", "device_id": f"phone{i}"}
        enter = story_event(
            f"in{i}", "geofence", "enter", at(hours=1, minutes=i), app, context={"store_id": "s1"}
        )
        sale = {"transaction_id": f"t{i}", "revenue": 50, "currency": "EUR"}
        till = story_event(
            f"till{i}",
            "pos",
            "purchase",
            at(hours=1, minutes=20 + i),
            {"user_id": f"shopper{i}"},
            context={"store_id": "s1"},
            properties=sale,
        )
        events += [enter, till]
    collect = {"user_id": "collector"}
    events += [
        story_event(
            "cc-order",
            "web",
            "order_completed",
            at(minutes=2),
            collect,
            consent=NO,
            properties={
                "order_id": "O-7",
                "revenue": 40,
                "currency": "EUR",
                "fulfillment": "click_and_collect",
            },
        ),
        story_event(
            "cc-in",
            "geofence",
            "enter",
            at(hours=3),
            {**collect, "device_id": "cphone"},
            context={"store_id": "s2"},
        ),
    ]
    for name, returned in (("keeper", False), ("returner", True)):
        ids = {"loyalty_id": name}
        sale = {"transaction_id": f"t-{name}", "revenue": 25, "currency": "EUR", "staff_id": "sam"}
        events.append(
            story_event(
                f"buy-{name}",
                "pos",
                "purchase",
                at(hours=2),
                ids,
                consent=YES,
                context={"store_id": "s3"},
                properties=sale,
            )
        )
        if returned:
            events.append(
                story_event(
                    f"ret-{name}",
                    "pos",
                    "return",
                    at(hours=3),
                    ids,
                    context={"store_id": "s3"},
                    properties={"transaction_id": f"t-{name}", "revenue": 25, "currency": "EUR"},
                )
            )
        # the person's next visit, a day later, carries event time past the 2 h delay
        events.append(story_event(f"next-{name}", "web", "page_view", at(days=1), ids))
    # the keeper answers the rating request: the review quotes the decision that asked for it
    asked = decision_id_for("rating_after_purchase", "buy-keeper")
    review = {"rating": 4, "text": "kind staff, write to me at keeper@example.com", "decision_id": asked}
    events.append(story_event("rev-keeper", "web", "review", at(days=1, minutes=5), {"loyalty_id": "keeper"},
                              properties=review))  # fmt: skip
    # a cart shopper who withdraws marketing consent before walking past the store
    ids = {"user_id": "private"}
    events += [
        story_event("p-cart", "web", "add_to_cart", at(minutes=1), ids, consent=YES),
        story_event(
            "p-no",
            "web",
            "consent_updated",
            at(minutes=30),
            ids,
            consent={"marketing": False},
            properties={"method": "preference_centre"},
        ),
        story_event(
            "p-in",
            "geofence",
            "enter",
            at(hours=1),
            {**ids, "device_id": "pphone"},
            context={"store_id": "s1"},
        ),
    ]
    # a shopper who withdraws analytics consent: what they do afterwards links nothing
    ids = {"anonymous_id": "quiet-cookie"}
    events += [
        story_event("q-1", "web", "page_view", at(minutes=2), ids, consent=YES),
        story_event("q-off", "web", "consent_updated", at(minutes=5), ids, consent={"analytics": False}),
        story_event("q-2", "web", "page_view", at(minutes=10), {**ids, "email": "quiet@example.com"}),
    ]
    return sorted(events, key=lambda e: e["occurred_at"])


def test_activation_stories_decide_messages_end_to_end(settings: Settings, tmp_path: Path) -> None:
    rules = tmp_path / "activation.toml"
    rules.write_text(RULES)
    settings = settings.model_copy(update={"activation_rules": rules})
    o2o(settings, "init")
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in stories()))
    o2o(settings, "produce", "--file", str(events))
    o2o(settings, "run", "all", "--drain")

    rows = query(
        settings,
        "SELECT rule, person_id, trigger_event_id, outcome, reason, coupon, message, "
        "store_id, order_id, decision_id FROM {db}.activations ORDER BY trigger_event_id",
    )
    by_trigger = {row[2]: row for row in rows}
    carts = [by_trigger[f"in{i}"] for i in range(6)]
    held = [row for row in carts if in_holdout("open_cart_nearby", row[1], 0.5)]
    assert held and len(held) < 6, "the story's persons should fall on both sides of the holdout"
    assert all(row[3:6] == ("holdout", "", "") for row in held)
    sent = [row for row in carts if row not in held]
    assert all(row[3] == "sent" and row[6] == f"show {row[5]} at s1" for row in sent)
    assert sorted(row[5] for row in sent) == sorted({row[5] for row in sent}) and all(r[5] for r in sent)
    # each cart shopper is one person across web, app and till: cart, walk-in and purchase in one history
    # (activation's own coupon_issued events, in the app, are left out: a drain may end before ingest
    # reads them back; the next run does)
    sources = dict(query(settings, "SELECT person_id, arraySort(groupUniqArray(source)) FROM {db}.events "
                         "WHERE type != 'coupon_issued' GROUP BY 1"))  # fmt: skip
    assert all(sources[row[1]] == ["geofence", "pos", "web"] for row in carts)

    assert by_trigger["cc-in"][:1] + by_trigger["cc-in"][3:9] == (
        "collect_arrival",
        "sent",
        "",
        "",
        "order O-7 is here",
        "s2",
        "O-7",
    )
    assert by_trigger["buy-keeper"][3:5] == ("sent", "") and by_trigger["buy-keeper"][6] == "rate s3"
    assert by_trigger["buy-returner"][3:5] == ("suppressed", "cancelled")
    assert by_trigger["p-in"][3:5] == ("suppressed", "consent")
    # the review lands in the feedback views under the rule that asked for it, at the store and
    # with the staff member of the purchase before it; its text without the e-mail address
    feedback = query(settings, "SELECT event_id, rating, store_id, staff_id, rule, position(text, 'keeper@') "
                     "FROM {db}.feedback")  # fmt: skip
    assert feedback == [("rev-keeper", 4, "s3", "sam", "rating_after_purchase", 0)]
    scores = query(settings, "SELECT dimension, value, reviews, avg_rating FROM {db}.feedback_scores "
                   "ORDER BY dimension, value")  # fmt: skip
    assert scores == [("o2o_label", "offline_only", 1, 4.0), ("preceding_channel", "store", 1, 4.0),
                      ("rule", "rating_after_purchase", 1, 4.0), ("staff_id", "sam", 1, 4.0),
                      ("store", "s3", 1, 4.0)]  # fmt: skip
    # the consent table: the first statements, then the withdrawal, under the person's id
    consent = query(
        settings,
        "SELECT event_id, purpose, granted, previous, event_type, method FROM {db}.consent "
        f"WHERE person_id = '{by_trigger['p-in'][1]}' ORDER BY occurred_at, purpose",
    )
    assert consent == [
        ("p-cart", "analytics", 1, "unknown", "add_to_cart", ""),
        ("p-cart", "marketing", 1, "unknown", "add_to_cart", ""),
        ("p-no", "marketing", 0, "granted", "consent_updated", "preference_centre"),
    ]
    current = query(settings, "SELECT purpose, granted FROM {db}.consent_current "
                    f"WHERE person_id = '{by_trigger['p-in'][1]}' ORDER BY purpose")  # fmt: skip
    assert current == [("analytics", 1), ("marketing", 0)]
    quiet = query(settings, "SELECT event_id, person_id = '', session_id FROM {db}.events "
                  "WHERE event_id LIKE 'q-%' ORDER BY event_id")  # fmt: skip
    assert [(e, unlinked, session == "") for e, unlinked, session in quiet] == [
        ("q-1", 0, False), ("q-2", 1, True), ("q-off", 0, True)
    ]  # fmt: skip
    assert query(settings, "SELECT count() FROM {db}.identities WHERE id_type = 'email'") == [(0,)]
    assert len(rows) == 6 + 1 + 2 + 1

    # closing the loop: the push is a touchpoint of the till purchase that followed it, credited;
    # the holdout's purchases have no push on their path
    pushes = dict(
        query(
            settings,
            "SELECT conversion_id, sum(credit) FROM {db}.attribution "
            "WHERE model = 'linear' AND channel = 'push' GROUP BY 1",
        )
    )
    bought = dict(
        query(settings, "SELECT event_id, conversion_id FROM {db}.conversions WHERE kind = 'purchase'")
    )
    for row in carts:
        till = bought[row[2].replace("in", "till")]
        assert (till in pushes) == (row[3] == "sent"), row
        if row[3] == "sent":
            assert 0 < pushes[till] < 1
    sessions = query(settings, "SELECT DISTINCT session_id FROM {db}.attribution WHERE channel = 'push'")
    assert sorted(s for (s,) in sessions) == sorted(f"msg_{r[9]}" for r in sent)

    # the lift of the cart rule: every shopper bought at the till within 7 days, messaged or not
    lift = query(
        settings,
        "SELECT sale, messaged, held_out, messaged_converted, held_out_converted, lift, "
        "messaged_revenue_per_person FROM {db}.activation_lift "
        "WHERE rule = 'open_cart_nearby' ORDER BY sale",
    )
    n, h = len(sent), len(held)
    assert lift == [
        ("all", n, h, n, h, 0.0, {"EUR": 50.0}),
        ("online", n, h, 0, 0, 0.0, {}),
        ("store", n, h, n, h, 0.0, {"EUR": 50.0}),
    ]
    report = orjson.loads(o2o(settings, "report", "--only", "activation_lift", "--format", "json").stdout)
    cart = [r for r in report["activation_lift"] if r["rule"] == "open_cart_nearby"]
    assert [(r["sale"], r["messaged"], r["messaged_revenue_per_person"]) for r in cart] == [
        ("all", n, "EUR 50"),
        ("online", n, ""),
        ("store", n, "EUR 50"),
    ]

    # the coupons come back: a day later each messaged shopper orders online with theirs, and the
    # first one's code is used at a till by a card nobody linked to them: identity knows the code
    # was sent to them (activation's coupon_issued event), so the card joins their person
    redeeming = []
    shopper = {by_trigger[f"in{k}"][9]: f"shopper{k}" for k in range(6)}  # decision -> user id
    for i, row in enumerate(sorted(sent)):
        if i:
            order = {"order_id": f"R{i}", "revenue": 30, "currency": "EUR", "coupon_code": row[5]}
            buyer = {"user_id": shopper[row[9]]}
            redeeming.append(story_event(f"redeem{i}", "web", "order_completed", at(days=2), buyer,
                                         consent=YES, properties=order))  # fmt: skip
        else:
            till = {"transaction_id": "R0", "revenue": 30, "currency": "EUR", "coupon_code": row[5]}
            card = {"payment_token": "tok-anon"}
            redeeming.append(story_event("redeem0", "pos", "purchase", at(days=2), card,
                                         context={"store_id": "s1"}, properties=till))  # fmt: skip
    # the held-out shoppers fill a cart and walk past the store again two days on, but the first
    # of them has restricted the processing of her data (`o2o restrict`) in the meantime
    restricted = shopper[held[0][9]]
    done = orjson.loads(o2o(settings, "restrict", "--id", f"user_id:{restricted}", "--format", "json").stdout)
    assert done["person_ids"] == [held[0][1]]
    assert o2o(settings, "restrict", "--list").stdout.split() == [held[0][1]]
    for row in held:
        again = {"user_id": shopper[row[9]]}
        redeeming.append(story_event(f"again-cart-{row[1]}", "web", "add_to_cart", at(days=2, hours=1),
                                     again, consent=YES))  # fmt: skip
        redeeming.append(story_event(f"again-in-{row[1]}", "geofence", "enter", at(days=2, hours=2),
                                     again, context={"store_id": "s1"}))  # fmt: skip
    more = tmp_path / "redeeming.jsonl"
    more.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in redeeming))
    o2o(settings, "produce", "--file", str(more))
    o2o(settings, "run", "all", "--drain")
    again_sql = (
        "SELECT person_id, outcome, reason FROM {db}.activations WHERE trigger_event_id LIKE 'again-in-%'"
    )
    again_rows = {person: (outcome, reason) for person, outcome, reason in query(settings, again_sql)}
    assert again_rows == {row[1]: ("holdout", "") for row in held} | {
        held[0][1]: ("suppressed", "restricted")
    }
    o2o(settings, "restrict", "--id", f"user_id:{restricted}", "--lift")
    assert o2o(settings, "restrict", "--list").stdout.split() == []
    redeemed = query(settings, "SELECT coupon, redeemed_event_id, same_person, revenue "
                     "FROM {db}.activation_redemptions ORDER BY redeemed_event_id")  # fmt: skip
    codes = [row[5] for row in sorted(sent)]
    assert redeemed == [(code, f"redeem{i}", 1, 30.0) for i, code in enumerate(codes)]
    issued = query(settings, "SELECT person_id, JSONExtractString(properties, 'coupon_code') AS code "
                   "FROM {db}.events WHERE type = 'coupon_issued' AND source = 'app' "
                   "ORDER BY code")  # fmt: skip
    assert issued == sorted(((row[1], row[5]) for row in sent), key=lambda pair: pair[1])
    card = query(settings, "SELECT person_id FROM {db}.identities WHERE id_type = 'payment_token'")
    assert card == [(sorted(sent)[0][1],)]  # the anonymous card now belongs to the shopper
