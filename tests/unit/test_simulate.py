"""The customer simulator: deterministic, contract-v1 events that tell the O2O story."""

from __future__ import annotations

import itertools
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from pipeline.model.contract import COUPON_ISSUED, ID_TYPES, SOURCES
from pipeline.simulate import count_estimate, simulate

CUSTOMERS, DAYS, SEED = 400, 30, 7
START = datetime(2026, 10, 1, tzinfo=UTC)
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)$")

Event = dict[str, Any]


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return list(simulate(CUSTOMERS, DAYS, SEED))


def when(event: Event) -> datetime:
    return datetime.fromisoformat(event["occurred_at"])


def of_type(events: list[Event], source: str, etype: str) -> list[Event]:
    return [e for e in events if e["source"] == source and e["type"] == etype]


def dumps(stream: Any) -> bytes:
    return b"\n".join(orjson.dumps(e) for e in stream)


def test_same_seed_gives_byte_identical_output() -> None:
    assert dumps(simulate(120, 14, 3)) == dumps(simulate(120, 14, 3))


def test_different_seed_gives_different_output() -> None:
    one, other = list(simulate(60, 14, 3)), list(simulate(60, 14, 4))
    assert dumps(one) != dumps(other)
    assert not {e["event_id"] for e in one} & {e["event_id"] for e in other}


def test_output_does_not_depend_on_how_much_is_consumed() -> None:
    head = list(itertools.islice(simulate(120, 14, 3), 500))
    assert dumps(head) == dumps(itertools.islice(simulate(120, 14, 3), 500))


def test_every_event_follows_the_envelope(events: list[Event]) -> None:
    assert len(events) > 5_000
    end = START + timedelta(days=DAYS)
    fields = {"event_id", "source", "type", "occurred_at", "ids", "consent", "context", "properties"}
    for e in events:
        assert set(e) <= fields
        assert isinstance(e["event_id"], str) and e["event_id"]
        assert e["type"] in SOURCES[e["source"]], e
        assert e["ids"] and set(e["ids"]) <= ID_TYPES, e
        assert all(isinstance(v, str) and v.strip() for v in e["ids"].values()), e
        assert RFC3339_MS.match(e["occurred_at"]), e["occurred_at"]
        at = when(e)
        assert at.tzinfo is not None and START <= at < end
        assert set(e.get("consent", {})) <= {"analytics", "marketing", "personalisation"}
        assert all(isinstance(v, bool) for v in e.get("consent", {}).values())
        for name in ("context", "properties"):
            assert isinstance(e.get(name, {}), dict)


def test_every_source_and_type_occurs(events: list[Event]) -> None:
    seen = {(e["source"], e["type"]) for e in events}
    every = {(source, etype) for source, types in SOURCES.items() for etype in types}
    assert seen == every - {("app", COUPON_ISSUED)}  # written by the activation stage, never by trackers


def test_offsets_vary(events: list[Event]) -> None:
    suffixes = Counter(e["occurred_at"][-6:] if e["occurred_at"][-1] != "Z" else "Z" for e in events)
    assert {"Z", "+02:00", "+01:00"} <= set(suffixes)  # summer time ends on 25 October


def test_sorted_by_event_time(events: list[Event]) -> None:
    times = [when(e) for e in events]
    assert times == sorted(times)


def test_event_ids_are_unique(events: list[Event]) -> None:
    assert len({e["event_id"] for e in events}) == len(events)


def test_count_estimate_is_in_the_ballpark(events: list[Event]) -> None:
    estimate = count_estimate(CUSTOMERS, DAYS)
    assert 0.75 * estimate <= len(events) <= 1.25 * estimate
    assert 20 <= len(events) / CUSTOMERS <= 60
    assert count_estimate(0, 30) == 0


def test_conversions_of_each_kind(events: list[Event]) -> None:
    for source in ("web", "app"):
        orders = of_type(events, source, "order_completed")
        assert len(orders) >= 5, source
        for order in orders:
            props = order["properties"]
            assert props["currency"] == "EUR" and props["revenue"] > 0 and props["items"]
            assert props["fulfillment"] in ("delivery", "click_and_collect")
    purchases = of_type(events, "pos", "purchase")
    assert len(purchases) >= 50
    for p in purchases:
        props = p["properties"]
        assert {"transaction_id", "store_id", "revenue", "currency", "staff_id", "items"} <= set(props)
        assert p["context"]["store_id"] == props["store_id"]
    assert any("coupon_code" in p["properties"] for p in purchases)
    assert any("loyalty_id" not in p["ids"] for p in purchases)
    assert any({"loyalty_id", "payment_token"} <= set(p["ids"]) for p in purchases)


def test_click_and_collect_orders_are_picked_up_later(events: list[Event]) -> None:
    orders = {
        e["properties"]["order_id"]: e
        for e in events
        if e["type"] == "order_completed" and e["properties"]["fulfillment"] == "click_and_collect"
    }
    pickups = of_type(events, "pos", "click_and_collect_pickup")
    assert len(orders) >= 10 and len(pickups) >= 5
    for pickup in pickups:
        props = pickup["properties"]
        order = orders[props["order_id"]]
        assert when(order) + timedelta(hours=6) < when(pickup)
        assert props["store_id"] == order["properties"]["store_id"] == pickup["context"]["store_id"]
        assert props["staff_id"] and props["upsell_revenue"] >= 0
    assert any(p["properties"]["upsell_revenue"] > 0 for p in pickups)
    assert any(p["properties"]["upsell_revenue"] == 0 for p in pickups)


def test_returns_refer_to_earlier_sales(events: list[Event]) -> None:
    sold: dict[str, datetime] = {}
    returns = 0
    for e in events:
        props = e.get("properties", {})
        if e["type"] in ("purchase", "order_completed"):
            sold[props.get("transaction_id") or props["order_id"]] = when(e)
        elif e["type"] == "return":
            returns += 1
            ref = props.get("transaction_id") or props["order_id"]
            assert sold[ref] < when(e) and props["revenue"] > 0
    assert returns >= 3


def test_store_visits_enter_before_exit_at_the_same_store(events: list[Event]) -> None:
    inside: dict[str, str] = {}
    exits = 0
    for e in of_type(events, "geofence", "enter") + of_type(events, "geofence", "exit"):
        assert e["properties"]["store_id"] == e["context"]["store_id"] and e["properties"]["geofence_id"]
    for e in (e for e in events if e["source"] == "geofence" and e["type"] != "consent_updated"):
        device = e["ids"]["device_id"]
        store = e["properties"]["store_id"]
        if e["type"] == "enter":
            inside[device] = store
        elif e["type"] == "dwell":
            assert inside.get(device) == store and e["properties"]["dwell_seconds"] > 0
        else:
            assert inside.pop(device) == store
            exits += 1
    assert exits >= 20


def test_logins_link_a_device_or_cookie_to_the_account(events: list[Event]) -> None:
    logins = [e for e in events if e["type"] in ("login", "signup")]
    assert len(logins) >= 20
    for e in logins:
        device = "anonymous_id" if e["source"] == "web" else "device_id"
        assert e["ids"].get("user_id") and e["ids"].get(device), e
    assert sum("email" in e["ids"] for e in logins) > len(logins) / 2


def test_campaigns_and_referrers_are_varied(events: list[Event]) -> None:
    mediums = Counter(
        e["context"]["campaign"]["medium"] for e in events if "campaign" in e.get("context", {})
    )
    assert {"cpc", "paid_social", "email", "social", "affiliate", "display", "push", "qr"} <= set(mediums)
    landings = [e["context"]["page"] for e in of_type(events, "web", "page_view")]
    referrers = {p["referrer"] for p in landings}
    assert "" in referrers and "https://www.google.com/" in referrers
    assert any("style-blog" in r for r in referrers)


def test_consent_is_mostly_given(events: list[Event]) -> None:
    by_customer = {e["event_id"][:24]: e["consent"] for e in events}
    marketing_off = sum(not c["marketing"] for c in by_customer.values())
    analytics_off = sum(not c["analytics"] for c in by_customer.values())
    assert 0 < marketing_off < 0.15 * len(by_customer)
    assert analytics_off < 0.05 * len(by_customer)


def test_start_is_honoured_and_naive_means_utc() -> None:
    start = datetime(2027, 3, 1)
    got = list(simulate(20, 3, 1, start=start, stores=2))
    begin = start.replace(tzinfo=UTC)
    assert got and all(begin <= when(e) < begin + timedelta(days=3) for e in got)
    stores = {e["context"]["store_id"] for e in got if "store_id" in e.get("context", {})}
    assert stores <= {"store-001", "store-002"}


def test_customers_keep_their_identifiers(events: list[Event]) -> None:
    """One person's identifiers never show up with another person's (no accidental merges)."""
    owner: dict[tuple[str, str], str] = {}
    per_customer: defaultdict[str, int] = defaultdict(int)
    for e in events:
        customer = e["event_id"][:24]
        per_customer[customer] += 1
        for id_type, value in e["ids"].items():
            key = (id_type, value.strip().lower())
            assert owner.setdefault(key, customer) == customer, key
    assert len(per_customer) > 0.95 * CUSTOMERS
