"""When identity merges person B into A, journeys and attribution hand B's state to A."""

from __future__ import annotations

from typing import Any

from pipeline.attribution.paths import conversion_id_for
from pipeline.attribution.stage import AttributionHandler
from pipeline.config import Settings
from pipeline.journeys.stage import JourneysHandler
from pipeline.kafka import topics
from pipeline.kafka.envelopes import partition_for

MIN = 60_000
SETTINGS = Settings(models=("linear", "first_touch"))  # type: ignore[call-arg]


def ev(
    event_id: str, person: str, at: int, source: str = "web", etype: str = "page_view", **extra: Any
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "person_id": person,
        "source": source,
        "type": etype,
        "occurred_at": at,
        **extra,
    }


class Pipeline:
    """Journeys and attribution handlers over dict tables, records routed like Kafka would."""

    def __init__(self) -> None:
        self.journeys = JourneysHandler(SETTINGS, clock=lambda: 0.0)
        self.journeys.bind({"journeys_state": {}, "journeys_watermarks": {}}, partitions=4)  # type: ignore[dict-item]
        self.attribution = AttributionHandler(SETTINGS)
        self.attribution.bind({"attribution_paths": {}})  # type: ignore[dict-item]
        self.rows: list[tuple[str, dict[str, Any]]] = []

    def send(self, records: list[dict[str, Any]], flush: bool = False) -> None:
        identified = list(records)
        while identified:
            out = self.journeys.process(identified)
            identified = [v for t, _k, v in out if t == topics.IDENTIFIED]
            self._attribute([v for t, _k, v in out if t == topics.JOURNEYS])
            self.rows += [(t, v) for t, _k, v in out if t.startswith("rows.")]
        if flush:
            out = self.journeys.flush()
            self._attribute([v for t, _k, v in out if t == topics.JOURNEYS])
            self.rows += [(t, v) for t, _k, v in out if t.startswith("rows.")]

    def _attribute(self, records: list[dict[str, Any]]) -> None:
        while records:
            out = self.attribution.process(records)
            records = [v for t, _k, v in out if t == topics.JOURNEYS]
            self.rows += [(t, v) for t, _k, v in out if t.startswith("rows.")]

    def latest(self, table: str, key: str) -> dict[str, dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        for t, r in self.rows:
            if t == f"rows.{table}" and r["version"] >= rows.get(r[key], {"version": -1})["version"]:
                rows[r[key]] = r
        return rows


def merge(from_person: str, to_person: str, at: int) -> dict[str, Any]:
    return {"record": "merge", "person_id": from_person, "from_person": from_person, "to_person": to_person,
            "merged_at": at}  # fmt: skip


def test_web_as_a_cookie_a_store_purchase_then_a_login_that_links_them() -> None:
    p = Pipeline()
    # B: a cookie browsing from a paid search ad
    p.send([ev("w1", "B", 0, context={"campaign": {"medium": "cpc"}}), ev("w2", "B", 5 * MIN)])
    # A: a loyalty card at the till, in a store visit
    store = {
        "context": {"store_id": "s1"},
        "properties": {"store_id": "s1", "revenue": 80, "transaction_id": "t1"},
    }
    p.send([ev("b1", "A", 60 * MIN, "pos", "purchase", **store)])
    # the login links the cookie to the loyalty customer: B merges into A
    p.send([merge("B", "A", 90 * MIN)])
    # A's next conversion: an online order
    p.send(
        [ev("o1", "A", 120 * MIN, etype="order_completed", properties={"order_id": "o1", "revenue": 40})],
        flush=True,
    )

    sessions = {sid: s for sid, s in p.latest("sessions", "session_id").items() if not s["retracted"]}
    assert {(s["person_id"], s["channel"]) for s in sessions.values()} == {
        ("A", "paid_search"),
        ("A", "store"),
        ("A", "direct"),
    }
    events = p.latest("events", "event_id")
    assert {e["person_id"] for e in events.values()} == {"A"}  # B's events re-emitted under A
    assert events["w1"]["version"] == 2

    # the purchase was credited before the merge to the visit alone; the merge brings the
    # web touches from before it: re-attributed, online_to_offline
    credits = p.latest("conversions", "conversion_id")
    purchase = credits[conversion_id_for("b1")]
    assert (purchase["version"], purchase["o2o_label"], purchase["path_length"]) == (
        2,
        "online_to_offline",
        2,
    )
    linear = [r for t, r in p.rows if t == "rows.attribution" and r["model"] == "first_touch"
              and r["conversion_id"] == conversion_id_for("b1") and r["version"] == 2]  # fmt: skip
    assert [(r["channel"], r["credit"]) for r in linear] == [("paid_search", 1.0), ("store", 0.0)]
    assert purchase["time_to_convert_seconds"] == 3600.0  # from the web touch at 10:00 to the till at 11:00
    order = credits[conversion_id_for("o1")]
    assert order["path_length"] == 1  # after the purchase the path starts again


def test_a_merge_of_a_person_with_nothing_held_hands_over_empty_state() -> None:
    p = Pipeline()
    p.send([merge("nobody", "A", 0)])
    p.send([ev("x", "A", MIN)], flush=True)
    assert [s["person_id"] for s in p.latest("sessions", "session_id").values()] == ["A"]


def test_a_coupon_redeemed_at_the_till_puts_the_push_that_carried_it_in_the_path() -> None:
    from pipeline.identity.stage import IdentityHandler

    identity = IdentityHandler()
    identity.bind({"identity_ids": {}, "identity_persons": {}, "identity_pending": {}})  # type: ignore[dict-item]
    p = Pipeline()
    app = {"device_id": "d1"}
    events = [
        {"event_id": "push", "source": "app", "type": "push_opened", "occurred_at": 0, "ids": app,
         "context": {"campaign": {"medium": "push", "name": "weekend"}}},
        {"event_id": "claim", "source": "app", "type": "coupon_claimed", "occurred_at": MIN, "ids": app,
         "properties": {"coupon_code": "W-7"}},
        {"event_id": "till", "source": "pos", "type": "purchase", "occurred_at": 26 * 60 * MIN,
         "ids": {"payment_token": "tok"},
         "context": {"store_id": "s1"},
         "properties": {"store_id": "s1", "revenue": 30, "transaction_id": "t9", "coupon_code": "W-7"}},
    ]  # fmt: skip
    out = identity.process(events) + identity.flush()
    p.send([v for t, _k, v in out if t == topics.IDENTIFIED], flush=True)
    conversion = p.latest("conversions", "conversion_id")[conversion_id_for("till")]
    assert (conversion["path_length"], conversion["o2o_label"]) == (2, "online_to_offline")
    first = [
        r for t, r in p.rows if t == "rows.attribution" and r["model"] == "first_touch" and r["credit"] == 1.0
    ]
    assert [(r["channel"], r["campaign_name"]) for r in first] == [("push", "weekend")]


def test_a_hand_over_that_arrives_after_its_target_merged_on_is_passed_along() -> None:
    p = Pipeline()
    p.send([ev("b", "B", 0), ev("a", "A", 10 * MIN), ev("c", "C", 20 * MIN)])
    held = [v for t, _k, v in p.journeys.process([merge("B", "A", 30 * MIN)]) if t == topics.IDENTIFIED]
    p.send([merge("A", "C", 40 * MIN)])  # A moved on to C before B's hand-over reached A
    out = p.journeys.process(held)
    passed = [v for t, k, v in out if t == topics.IDENTIFIED]
    assert [(v["record"], v["person_id"], v["from_person"]) for v in passed] == [("handoff", "C", "B")]
    p.send(passed, flush=True)
    events = p.latest("events", "event_id")
    assert {e: r["person_id"] for e, r in events.items()} == {"a": "C", "b": "C", "c": "C"}
    assert "A" not in p.journeys.state and "B" not in p.journeys.state


def test_a_forget_record_drops_the_person_from_every_stage() -> None:
    from pipeline.identity.stage import IdentityHandler

    identity = IdentityHandler()
    tables: dict[str, dict[str, Any]] = {"identity_ids": {}, "identity_persons": {}, "identity_pending": {}}
    identity.bind(tables)  # type: ignore[arg-type]
    event = {
        "event_id": "x1",
        "source": "web",
        "type": "page_view",
        "occurred_at": 0,
        "ids": {"anonymous_id": "c9"},
    }
    out = identity.process([event]) + identity.flush()
    (person,) = {v["person_id"] for t, _k, v in out if t == topics.IDENTIFIED}
    p = Pipeline()
    p.send([v for t, _k, v in out if t == topics.IDENTIFIED])
    p.send([{**ev("o", person, MIN, etype="order_completed", properties={"order_id": "o", "revenue": 5})}])
    assert person in p.journeys.state and person in p.attribution.state

    forget = {"record": "forget", "copy": 0, "persons": [person], "keys": ["anonymous_id:c9"]}
    told = identity.process([forget, {**forget, "copy": 1}])
    assert tables["identity_ids"] == {} and tables["identity_persons"] == {}
    assert [(v["record"], v["person_id"]) for t, _k, v in told] == [("forget", person)]  # from copy 0 only
    p.send([v for t, _k, v in told])
    assert person not in p.journeys.state and person not in p.attribution.state
    again = identity.process([{**event, "event_id": "x2", "occurred_at": 2 * MIN}]) + identity.flush()
    assert [t for t, _k, _v in again] == []  # an event that passed ingest before the erasure is dropped
    assert identity.counts["suppressed"] == 1


def test_identity_vouches_for_every_partition_only_when_it_and_ingest_are_through() -> None:
    from pipeline.identity.stage import IdentityHandler

    now = [0.0]
    identity = IdentityHandler(origins=["web/0"])
    identity.reorder.buffer.clock = lambda: now[0]
    identity.bind({"identity_ids": {}, "identity_persons": {}, "identity_pending": {}}, partitions=2)  # type: ignore[dict-item]
    assert identity.tick() == []  # ingest said nothing yet
    marks = [{"record": "progress", "partition": p, "marks": {"web/0": True}} for p in (0, 1)]
    identity.process(marks)
    vouched = identity.tick()
    assert {(t, v["record"], v["partition"]) for t, _k, v in vouched} == {
        (topics.IDENTIFIED, "progress", 0), (topics.IDENTIFIED, "progress", 1)
    }  # fmt: skip
    assert {partition_for(k.encode(), 2) for _t, k, _v in vouched} == {0, 1}  # each on its partition
    now[0] = 10.0
    assert identity.tick() == []  # ingest's marks are stale: it may be down


def test_click_and_collect_the_order_converts_the_pickup_upsell_is_its_own_conversion() -> None:
    p = Pipeline()
    store = {"context": {"store_id": "s1"}}
    p.send(
        [
            ev("v", "A", 0, context={"campaign": {"medium": "cpc"}}),
            ev(
                "o",
                "A",
                5 * MIN,
                etype="order_completed",
                properties={"order_id": "cc1", "revenue": 100, "fulfillment": "click_and_collect"},
            ),
            ev("in", "A", 24 * 60 * MIN, "geofence", "enter", **store, properties={"store_id": "s1"}),
            ev(
                "up",
                "A",
                24 * 60 * MIN + 5 * MIN,
                "pos",
                "click_and_collect_pickup",
                **store,
                properties={"store_id": "s1", "order_id": "cc1", "upsell_revenue": 15, "staff_id": "sam"},
            ),
            ev("in2", "A", 48 * 60 * MIN, "geofence", "enter", **store, properties={"store_id": "s1"}),
            ev(
                "plain",
                "A",
                48 * 60 * MIN + 5 * MIN,
                "pos",
                "click_and_collect_pickup",
                **store,
                properties={"store_id": "s1", "order_id": "cc2", "upsell_revenue": 0},
            ),
        ],
        flush=True,
    )
    conversions = {r["event_id"]: r for r in p.latest("conversions", "conversion_id").values()}
    assert set(conversions) == {"o", "up"}  # a pickup without upsell is not a second conversion
    assert (conversions["o"]["kind"], conversions["o"]["revenue"]) == ("order", 100)
    upsell = conversions["up"]
    assert (upsell["kind"], upsell["revenue"], upsell["staff_id"], upsell["store_id"]) == (
        "upsell",
        15,
        "sam",
        "s1",
    )
    credited = [
        r for t, r in p.rows if t == "rows.attribution" and r["conversion_id"] == upsell["conversion_id"]
    ]
    assert {(r["channel"], r["credit"]) for r in credited if r["model"] == "linear"} == {("store", 1.0)}
    assert upsell["o2o_label"] == "offline_only"  # the path restarted after the order
