"""Identity rules: linking, unique identifiers, deterministic survivors."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.identity.graph import IdentityGraph, person_id_for


def ev(at: int, **ids: str) -> dict[str, Any]:
    return {"event_id": f"e{at}", "source": "web", "type": "page_view", "occurred_at": at, "ids": ids}


def graph() -> IdentityGraph:
    return IdentityGraph({}, {})


def test_new_identifier_creates_a_deterministic_person() -> None:
    g = graph()
    res = g.resolve(ev(1, anonymous_id="a1"))
    assert res.person_id == person_id_for("anonymous_id:a1")
    assert [r[1]["id_value"] for r in res.rows] == ["a1"]


def test_event_links_all_its_identifiers() -> None:
    g = graph()
    p = g.resolve(ev(1, anonymous_id="a1")).person_id
    assert g.resolve(ev(2, anonymous_id="a1", user_id="u1")).person_id == p
    assert g.resolve(ev(3, user_id="u1")).person_id == p


def test_merge_keeps_the_older_person_and_remaps_aliases() -> None:
    g = graph()
    web = g.resolve(ev(10, anonymous_id="cookie")).person_id
    store = g.resolve(ev(20, loyalty_id="card")).person_id
    res = g.resolve(ev(30, loyalty_id="card", anonymous_id="cookie", user_id="u"))
    assert res.person_id == web  # first seen earlier
    assert res.merged == [store]
    aliases = [row for table, row in res.rows if table == "person_aliases"]
    assert aliases == [
        {
            "person_id": store,
            "canonical_id": web,
            "merged_at": 30,
            "reason": "shared_identifier",
            "version": 1,
        }
    ]
    assert g.ids["loyalty_id:card"][0] == web
    assert store not in g.persons


def test_chained_merges_point_every_alias_to_the_survivor() -> None:
    g = graph()
    a = g.resolve(ev(1, anonymous_id="a")).person_id
    b = g.resolve(ev(2, anonymous_id="b")).person_id
    c = g.resolve(ev(3, anonymous_id="c")).person_id
    g.resolve(ev(4, anonymous_id="b", device_id="d1"))
    g.resolve(ev(5, anonymous_id="c", device_id="d1"))  # b absorbs c
    res = g.resolve(ev(6, anonymous_id="a", device_id="d1"))  # a absorbs b (and c)
    assert res.person_id == a
    to_a = {row["person_id"] for table, row in res.rows if table == "person_aliases"}
    assert to_a == {b, c}


def test_two_different_user_ids_are_never_merged() -> None:
    g = graph()
    p1 = g.resolve(ev(1, user_id="u1", device_id="tablet")).person_id
    p2 = g.resolve(ev(2, user_id="u2")).person_id
    res = g.resolve(ev(3, user_id="u2", device_id="tablet"))
    assert res.person_id == p2
    assert res.conflicts == 1
    assert p1 in g.persons and p2 in g.persons
    assert g.counts["conflicts"] == 1


def test_new_unique_id_is_not_added_to_a_person_holding_another() -> None:
    g = graph()
    p1 = g.resolve(ev(1, loyalty_id="L1", device_id="d")).person_id
    res = g.resolve(ev(2, device_id="d", loyalty_id="L2"))
    assert res.conflicts == 1
    assert "loyalty_id:L2" not in g.ids or g.ids["loyalty_id:L2"][0] != p1


def test_same_input_same_ids_regardless_of_order_of_unrelated_events() -> None:
    events = [ev(1, anonymous_id="a"), ev(2, loyalty_id="l"), ev(3, anonymous_id="a", loyalty_id="l")]
    g1, g2 = graph(), graph()
    r1 = [g1.resolve(e).person_id for e in events]
    r2 = [g2.resolve(e).person_id for e in [events[1], events[0], events[2]]]
    assert r1[-1] == r2[-1]


def test_identified_needs_a_strong_identifier_seen_by_then() -> None:
    g = graph()
    p = g.resolve(ev(1, anonymous_id="a")).person_id
    assert not g.identified_at(p, 1)
    g.resolve(ev(5, anonymous_id="a", email="hash"))
    assert g.identified_at(p, 5) and not g.identified_at(p, 4)
    g.resolve(ev(3, email="hash"))  # an earlier sighting of the e-mail: identified from then on
    assert g.identified_at(p, 3) and not g.identified_at(p, 2)


def test_event_goes_to_the_person_of_its_strongest_identifier_on_conflict() -> None:
    g = graph()
    p1 = g.resolve(ev(1, user_id="u1", device_id="tablet")).person_id
    res = g.resolve(ev(2, user_id="u2", device_id="tablet"))
    assert res.person_id == person_id_for("user_id:u2") != p1
    assert res.conflicts == 1
    assert g.ids["device_id:tablet"][0] == p1  # the tablet stays where it was


def test_identifier_shared_by_too_many_persons_stops_linking() -> None:
    g = IdentityGraph({}, {}, max_persons_per_id=3)
    people = [g.resolve(ev(i, user_id=f"u{i}", device_id="tablet")).person_id for i in range(1, 6)]
    assert len(set(people)) == 5
    assert g.counts["shared_identifiers"] == 1
    # a cookie seen on the shared tablet is no longer pulled into anyone's person
    res = g.resolve(ev(10, device_id="tablet", anonymous_id="walk-in"))
    assert res.person_id == g.ids["anonymous_id:walk-in"][0] == person_id_for("anonymous_id:walk-in")
    assert g.resolve(ev(12, device_id="tablet")).person_id == people[0]  # nothing else to go by
    # and two users later seen with it are not merged through it
    assert g.resolve(ev(11, user_id="u9", device_id="tablet")).person_id == person_id_for("user_id:u9")


@pytest.mark.parametrize("claim", ["coupon_claimed", "coupon_issued"])  # claimed, or sent by activation
def test_a_coupon_claimed_in_the_app_and_redeemed_at_the_till_links_the_two(claim: str) -> None:
    g = graph()
    app = g.resolve(
        {
            **ev(10, device_id="d1"),
            "source": "app",
            "type": claim,
            "properties": {"coupon_code": "C-42"},
        }
    ).person_id
    till = {
        **ev(20, payment_token="tok"),
        "source": "pos",
        "type": "purchase",
        "properties": {"coupon_code": "C-42"},
    }
    assert g.resolve(till).person_id == app
    other = {**ev(30, payment_token="tok2"), "source": "pos", "type": "purchase", "properties": {}}
    assert g.resolve(other).person_id != app  # no coupon, no link
    viewed = {**ev(40, anonymous_id="x"), "type": "page_view", "properties": {"coupon_code": "C-42"}}
    assert g.resolve(viewed).person_id != app  # only claiming and redeeming link


def test_a_coupon_links_its_first_redemption_only_and_an_unclaimed_voucher_nothing() -> None:
    g = graph()

    def till(at: int, token: str, code: str) -> dict[str, Any]:
        return {
            **ev(at, payment_token=token),
            "source": "pos",
            "type": "purchase",
            "properties": {"coupon_code": code},
        }

    printed = {g.resolve(till(i, f"t{i}", "SUMMER")).person_id for i in range(1, 4)}
    assert len(printed) == 3  # nobody claimed it in the app: no link
    app = g.resolve(
        {
            **ev(10, device_id="d1"),
            "source": "app",
            "type": "coupon_claimed",
            "properties": {"coupon_code": "P-1"},
        }
    ).person_id
    assert g.resolve(till(20, "mine", "P-1")).person_id == app
    assert g.resolve(till(30, "someone-else", "P-1")).person_id != app  # redeemed once already


@pytest.mark.parametrize("claim_type", ["coupon_claimed", "coupon_issued"])
def test_a_claim_arriving_after_its_redemption_still_joins_the_redeemer(claim_type: str) -> None:
    def claim(at: int) -> dict[str, Any]:
        return {**ev(at, device_id="d1"), "source": "app", "type": claim_type,
                "properties": {"coupon_code": "C-7"}}  # fmt: skip

    till = {**ev(20, payment_token="tok"), "source": "pos", "type": "purchase",
            "properties": {"coupon_code": "C-7"}}  # fmt: skip
    in_order = graph()
    claimer = in_order.resolve(claim(10)).person_id
    assert in_order.resolve(till).person_id == claimer
    late = graph()
    redeemer = late.resolve(till).person_id
    assert late.resolve(claim(10)).person_id == claimer  # the claim's device is older: it survives
    assert late.ids["payment_token:tok"][0] == claimer and redeemer not in late.persons
    # a claim after the redemption in event time did not lead to it: no link
    after = graph()
    after.resolve(till)
    assert after.resolve(claim(30)).person_id != after.ids["payment_token:tok"][0]


def test_conflicts_are_recorded_with_the_identifier_and_the_reason() -> None:
    g = graph()
    first = g.resolve(ev(1, user_id="u1", anonymous_id="c1")).person_id
    second = g.resolve(ev(2, user_id="u2")).person_id
    res = g.resolve(ev(3, user_id="u2", anonymous_id="c1"))
    rows = [row for table, row in res.rows if table == "identity_conflicts"]
    assert res.person_id == second and len(rows) == 1
    assert (rows[0]["id_type"], rows[0]["id_value"], rows[0]["other_person"], rows[0]["reason"]) == (
        "anonymous_id", "c1", first, "unique_id",
    )  # fmt: skip
    assert (
        rows[0]["conflict_id"] == g.resolve(ev(3, user_id="u2", anonymous_id="c1")).rows[0][1]["conflict_id"]
    )


def test_an_identifier_turning_shared_is_reported_once() -> None:
    g = IdentityGraph({}, {}, max_persons_per_id=2)
    reported = []
    for i in range(6):
        res = g.resolve(ev(i, user_id=f"u{i}", device_id="tablet"))
        reported += [row for table, row in res.rows if table == "identity_conflicts"]
    shared = [r for r in reported if r["reason"] == "shared_identifier"]
    assert len(shared) == 1 and (shared[0]["id_type"], shared[0]["id_value"]) == ("device_id", "tablet")


def test_a_person_at_the_identifier_cap_links_nothing_more_and_keeps_what_it_has() -> None:
    g = IdentityGraph({}, {}, max_ids_per_person=3)
    bot = g.resolve(ev(1, user_id="bot", anonymous_id="c1")).person_id
    assert g.resolve(ev(2, user_id="bot", anonymous_id="c2")).person_id == bot  # third identifier: linked
    refused = g.resolve(ev(3, user_id="bot", anonymous_id="c3"))
    assert refused.person_id == bot and "anonymous_id:c3" not in g.ids  # a fourth: not linked
    rows = [row for table, row in refused.rows if table == "identity_conflicts"]
    assert [(r["id_value"], r["other_person"], r["reason"]) for r in rows] == [
        ("c3", bot, "too_many_identifiers")
    ]
    # the cookie alone later is somebody of its own, as if it were never seen with the bot
    assert g.resolve(ev(4, anonymous_id="c3")).person_id == person_id_for("anonymous_id:c3")
    # a merge that would take the bot past the cap does not happen: the event goes to its strongest
    # identifier's person, the other keeps its identifiers
    walker = g.resolve(ev(5, device_id="d9", anonymous_id="c9")).person_id
    joined = g.resolve(ev(6, device_id="d9", anonymous_id="c1"))
    assert joined.person_id == walker and bot in g.persons and walker in g.persons
    assert ("anonymous_id", "c1", "too_many_identifiers") in {
        (r["id_type"], r["id_value"], r["reason"]) for t, r in joined.rows if t == "identity_conflicts"
    }
    assert sorted(g.persons[bot]["ids"]) == ["anonymous_id:c1", "anonymous_id:c2", "user_id:bot"]
    assert g.counts["too_many_identifiers"] == 2 and g.counts["merges"] == 0
    assert all(entry[0] in g.persons for entry in g.ids.values())
