"""Consent per person over time: the ledger's rules; what identity, journeys and attribution do with it."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.attribution.paths import conversion_id_for
from pipeline.collector.segment import map_message
from pipeline.config import Settings, consent_defaults
from pipeline.identity.consent import HISTORY_LIMIT, ConsentLedger, merged_history
from pipeline.identity.graph import IdentityGraph
from pipeline.identity.stage import IdentityHandler
from pipeline.kafka import topics
from tests.unit.test_merge_handoff import Pipeline

MIN = 60_000
GRANTED = {"analytics": True, "marketing": False, "personalisation": False}


def ev(
    eid: str, at: int, etype: str = "page_view", consent: dict[str, bool] | None = None, **extra: Any
) -> Any:
    event: dict[str, Any] = {"event_id": eid, "source": "web", "type": etype, "occurred_at": at,
                             "ids": {"anonymous_id": "a1"}, **extra}  # fmt: skip
    if consent is not None:
        event["consent"] = consent
    return event


def ledger() -> tuple[ConsentLedger, dict[str, Any]]:
    persons: dict[str, Any] = {"p": {"ids": [], "first_seen": 0}}
    return ConsentLedger(persons, GRANTED), persons


def test_grant_withdrawal_and_regrant_are_judged_at_each_event_time() -> None:
    book, persons = ledger()
    assert book.allows("p", ev("e0", 0), "marketing") is False  # nothing stated: the default
    rows = book.note("p", ev("c1", 10 * MIN, "consent_updated", {"marketing": True}))
    assert [(r["purpose"], r["granted"], r["previous"]) for r in rows] == [("marketing", 1, "unknown")]
    book.note("p", ev("c2", 20 * MIN, "consent_updated", {"marketing": False}))
    book.note("p", ev("c3", 30 * MIN, "consent_updated", {"marketing": True}))
    assert persons["p"]["consent"]["marketing"] == [[10 * MIN, True], [20 * MIN, False], [30 * MIN, True]]
    flags = [book.known("p", at * MIN).get("marketing") for at in (5, 10, 15, 20, 25, 30, 35)]
    assert flags == [None, True, True, False, False, True, True]
    # an event's own flag wins for that event
    assert book.allows("p", ev("e1", 25 * MIN, consent={"marketing": True}), "marketing") is True


def test_a_statement_that_arrives_late_is_placed_at_its_time() -> None:
    book, persons = ledger()
    book.note("p", ev("c1", 10 * MIN, "consent_updated", {"analytics": True}))
    # a withdrawal at 20 arrives after an event at 30 was processed, then one at 15 arrives
    book.note("p", ev("c3", 30 * MIN, consent={"analytics": True}))
    rows = book.note("p", ev("c2", 20 * MIN, "consent_updated", {"analytics": False}))
    assert [(r["granted"], r["previous"]) for r in rows] == [(0, "granted")]
    assert book.allows("p", ev("e15", 15 * MIN), "analytics") is True
    assert book.allows("p", ev("e25", 25 * MIN), "analytics") is False
    # a flag that repeats what held at its time changes nothing and makes no row
    assert book.note("p", ev("e26", 26 * MIN, consent={"analytics": False})) == []
    assert persons["p"]["consent"]["analytics"] == [[10 * MIN, True], [20 * MIN, False]]


def test_a_consent_updated_restating_the_same_flag_is_still_recorded() -> None:
    book, _ = ledger()
    book.note("p", ev("c1", MIN, "consent_updated", {"marketing": True}))
    rows = book.note("p", ev("c2", 2 * MIN, "consent_updated", {"marketing": True, "personalisation": False}))
    assert sorted((r["purpose"], r["granted"], r["previous"]) for r in rows) == [
        ("marketing", 1, "granted"), ("personalisation", 0, "unknown")
    ]  # fmt: skip
    assert len({r["consent_id"] for r in rows}) == 2


def test_histories_merge_in_time_order_and_stay_bounded() -> None:
    a = {"marketing": [[10, True], [30, False]]}
    b = {"marketing": [[20, False], [40, True]], "analytics": [[5, True]]}
    both = {"analytics": [[5, True]], "marketing": [[10, True], [20, False], [40, True]]}
    assert merged_history(a, b) == both
    book, persons = ledger()
    for i in range(HISTORY_LIMIT + 5):
        book.note("p", ev(f"c{i}", i * MIN, "consent_updated", {"marketing": i % 2 == 0}))
    kept = persons["p"]["consent"]["marketing"]
    assert len(kept) == HISTORY_LIMIT and kept[-1][0] == (HISTORY_LIMIT + 4) * MIN


def test_merging_two_persons_keeps_both_consent_histories() -> None:
    persons: dict[str, Any] = {}
    graph = IdentityGraph({}, persons)
    book = ConsentLedger(persons, GRANTED)
    older = graph.resolve(ev("a", 0, ids={"anonymous_id": "a1"})).person_id  # type: ignore[arg-type]
    book.note(older, ev("c", MIN, "consent_updated", {"marketing": False}))
    newer = graph.resolve(ev("b", 2 * MIN, ids={"user_id": "u1"})).person_id  # type: ignore[arg-type]
    book.note(newer, ev("g", 3 * MIN, "consent_updated", {"marketing": True}))
    survivor = graph.resolve(ev("j", 4 * MIN, ids={"user_id": "u1", "anonymous_id": "a1"})).person_id  # type: ignore[arg-type]
    assert survivor == older
    assert book.known(survivor, 2 * MIN) == {"marketing": False}
    assert book.known(survivor, 3 * MIN) == {"marketing": True}


def test_consent_default_is_one_word_or_per_purpose() -> None:
    assert consent_defaults("granted") == {"analytics": True, "marketing": True, "personalisation": True}
    one = {"analytics": True, "marketing": True, "personalisation": False}
    assert consent_defaults("marketing=granted") == one
    assert Settings(consent_default="denied").consent_defaults["analytics"] is False  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="purpose=denied"):
        Settings(consent_default="marketing=maybe")  # type: ignore[call-arg]


def identity_handler() -> IdentityHandler:
    identity = IdentityHandler(consent_defaults=GRANTED)
    identity.bind({"identity_ids": {}, "identity_persons": {}, "identity_pending": {}})  # type: ignore[dict-item]
    return identity


def test_without_analytics_consent_later_events_link_nothing_until_a_regrant() -> None:
    identity = identity_handler()
    user = {"user_id": "u1"}
    events = [
        ev("v1", 0, ids=user),
        ev(
            "off",
            10 * MIN,
            "consent_updated",
            {"analytics": False},
            ids=user,
            properties={"method": "banner"},
        ),
        ev("v2", 20 * MIN, ids={"user_id": "u1", "email": "sha256:e"}),  # would link the email
        ev("on", 30 * MIN, "consent_updated", {"analytics": True}, ids=user),
        ev("v3", 40 * MIN, ids={"user_id": "u1", "phone": "sha256:p"}),
    ]
    out = identity.process(events) + identity.flush()
    passed = [v["event_id"] for t, _k, v in out if t == topics.IDENTIFIED]
    assert passed == ["v1", "off", "on", "v3"]
    unlinked = [v for t, _k, v in out if t == "rows.events"]
    assert [(r["event_id"], r["person_id"], r["session_id"]) for r in unlinked] == [("v2", "", "")]
    linked = {v["id_type"] for t, _k, v in out if t == "rows.identities"}
    assert linked == {"user_id", "phone"}  # not the email that came while analytics was withdrawn
    rows = [v for t, _k, v in out if t == "rows.consent"]
    assert [(r["event_id"], r["granted"], r["previous"], r["method"]) for r in rows] == [
        ("off", 0, "unknown", "banner"), ("on", 1, "denied", "")
    ]  # fmt: skip
    assert identity.counts["no_analytics_consent"] == 1


def test_an_event_from_before_a_withdrawal_that_arrives_after_it_is_still_processed() -> None:
    identity = identity_handler()
    user = {"user_id": "u1"}
    off = ev("off", 10 * MIN, "consent_updated", {"analytics": False}, ids=user)
    identity.process([ev("v1", 0, ids=user), off])
    identity.flush()
    late = [ev("early", 5 * MIN, ids=user), ev("late", 15 * MIN, ids=user)]
    out = identity.process(late) + identity.flush()
    assert [v["event_id"] for t, _k, v in out if t == topics.IDENTIFIED] == ["early"]
    assert [v["event_id"] for t, _k, v in out if t == "rows.events"] == ["late"]


def test_every_event_passed_on_carries_the_person_consent_at_its_time() -> None:
    identity = identity_handler()
    user = {"user_id": "u1"}
    events = [ev("v1", 0, ids=user), ev("m", 10 * MIN, "consent_updated", {"marketing": True}, ids=user),
              ev("v2", 20 * MIN, ids=user)]  # fmt: skip
    out = identity.process(events) + identity.flush()
    consent = {v["event_id"]: v["consent"] for t, _k, v in out if t == topics.IDENTIFIED}
    assert consent == {"v1": {}, "m": {"marketing": True}, "v2": {"marketing": True}}


def test_a_marketing_withdrawal_stops_later_sessions_being_touches() -> None:
    identity = identity_handler()
    user = {"user_id": "u1"}
    paid = {"campaign": {"medium": "cpc", "name": "spring"}}
    mail = {"campaign": {"medium": "email", "name": "news"}}
    events = [
        ev("ad", 0, ids=user, context=paid),
        ev("off", 2 * 60 * MIN, "consent_updated", {"marketing": False}, ids=user),
        ev("mail", 4 * 60 * MIN, ids=user, context=mail),
        ev("buy", 4 * 60 * MIN + 5 * MIN, "order_completed", ids=user,
           properties={"order_id": "o1", "revenue": 20, "currency": "EUR"}),
    ]  # fmt: skip
    out = identity.process(events) + identity.flush()
    p = Pipeline()
    p.send([v for t, _k, v in out if t == topics.IDENTIFIED], flush=True)
    events_rows = p.latest("events", "event_id")
    assert events_rows["off"]["session_id"] == "" and events_rows["mail"]["consent_marketing"] == 0
    sessions = p.latest("sessions", "session_id")
    assert len(sessions) == 2  # the consent_updated opened no session
    credited = {r["channel"] for t, r in p.rows if t == "rows.attribution"}
    # the converting session (begun without marketing consent) is credited alone, as a conversion
    # without marketing consent is; the email session is no touch, the paid one is not on the path
    conversion = p.latest("conversions", "conversion_id")[conversion_id_for("buy")]
    assert conversion["path_length"] == 1 and credited == {"email"}


def test_a_session_begun_without_marketing_consent_is_no_touch_for_a_later_conversion() -> None:
    identity = identity_handler()
    user = {"user_id": "u1"}
    events = [
        ev("ad", 0, ids=user, context={"campaign": {"medium": "cpc", "name": "spring"}}),
        ev("off", 60 * MIN, "consent_updated", {"marketing": False}, ids=user),
        ev("mail", 2 * 60 * MIN, ids=user, context={"campaign": {"medium": "email", "name": "news"}}),
        ev("on", 3 * 60 * MIN, "consent_updated", {"marketing": True}, ids=user),
        ev("buy", 4 * 60 * MIN, "order_completed", ids=user,
           properties={"order_id": "o1", "revenue": 20, "currency": "EUR"}),
    ]  # fmt: skip
    out = identity.process(events) + identity.flush()
    p = Pipeline()
    p.send([v for t, _k, v in out if t == topics.IDENTIFIED], flush=True)
    path = sorted({r["channel"] for t, r in p.rows if t == "rows.attribution" and r["model"] == "linear"})
    assert path == ["direct", "paid_search"]  # the email session, begun while withdrawn, is left out


def test_segment_consent_and_review_calls_become_contract_events() -> None:
    prefs = {"categoryPreferences": {"Advertising": False, "Personalization": True, "Analytics": True}}
    track = {"type": "track", "event": "Segment Consent Preference Updated", "messageId": "m1",
             "anonymousId": "a1", "context": {"consent": prefs}}  # fmt: skip
    event = map_message(track, "web", "2026-12-03T10:00:00Z")
    assert event["type"] == "consent_updated"
    assert event["consent"] == {"analytics": True, "marketing": False, "personalisation": True}
    traits = {"consent": {"marketing": True}}
    identify = {"type": "identify", "messageId": "m2", "userId": "u1", "traits": traits,
                "context": {"consent": {"analytics": True}}}  # fmt: skip
    event = map_message(identify, "app", "2026-12-03T10:00:00Z")
    assert (event["type"], event["consent"]) == ("consent_updated", {"analytics": True, "marketing": True})
    review = {"type": "track", "event": "Product Reviewed", "messageId": "m4", "anonymousId": "a1",
              "properties": {"rating": 4, "review_body": "fits well", "product_id": "K1"}}  # fmt: skip
    event = map_message(review, "web", "2026-12-03T10:00:00Z")
    assert (event["type"], event["properties"]["text"]) == ("review", "fits well")
    plain = {"type": "identify", "messageId": "m3", "userId": "u1", "traits": {"email": "a@b.c"}}
    assert map_message(plain, "app", "2026-12-03T10:00:00Z")["type"] == "login"
