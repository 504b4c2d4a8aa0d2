"""A small, known O2O story through the real broker and chDB, checked row by row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.attribution.paths import conversion_id_for
from pipeline.config import Settings
from pipeline.identity.graph import person_id_for
from tests.conftest import at, o2o, query
from tests.conftest import story_event as ev

pytestmark = pytest.mark.integration


STORE = {"context": {"store_id": "s1"}, "properties": {"store_id": "s1", "geofence_id": "g1"}}
EVENTS: list[dict[str, Any] | bytes] = [
    # Alice browses from a paid search ad as a cookie, logs in, orders online.
    ev("e1", "web", "page_view", at(), {"anonymous_id": "c1"},
       context={"campaign": {"source": "google", "medium": "cpc", "name": "winter"},
                "page": {"url": "https://shop.example/", "referrer": "https://www.google.com/"}}),
    ev("e2", "web", "login", at(minutes=5), {"anonymous_id": "c1", "user_id": "u1"}),
    ev("e3", "web", "order_completed", at(minutes=10), {"anonymous_id": "c1", "user_id": "u1"},
       properties={"order_id": "o1", "revenue": 100.0, "currency": "EUR", "fulfillment": "delivery"}),
    # A day later: a push on her phone, then a store visit with an in-store purchase.
    ev("e4", "app", "push_opened", at(days=1), {"device_id": "d1", "user_id": "u1"},
       context={"campaign": {"medium": "push", "name": "sale"}}),
    ev("e5", "geofence", "enter", at(days=1, hours=1), {"device_id": "d1"}, **STORE),
    ev("e6", "pos", "purchase", at(days=1, hours=1, minutes=10), {"loyalty_id": "L1", "user_id": "u1"},
       properties={"transaction_id": "t1", "store_id": "s1", "revenue": 50.0, "currency": "EUR",
                   "staff_id": "anna"}),
    ev("e7", "geofence", "exit", at(days=1, hours=1, minutes=20), {"device_id": "d1"}, **STORE),
    # Another browser (cookie c9) that later turns out to be Alice too.
    ev("e8", "web", "page_view", at(minutes=30), {"anonymous_id": "c9"}),
    ev("e9", "web", "login", at(days=2), {"anonymous_id": "c9", "user_id": "u1"}),
    # Two hours after the visit she brings part of the purchase back.
    ev("e11", "pos", "return", at(days=1, hours=3), {"loyalty_id": "L1"},
       properties={"transaction_id": "t1", "store_id": "s1", "revenue": 20.0, "currency": "EUR"}),
    # Noise: an exact duplicate, broken JSON, an unknown type.
    ev("e1", "web", "page_view", at(), {"anonymous_id": "c1"}),
    b'{"event_id": "bad", "source": "web", ',
    ev("e10", "pos", "teleport", at(), {"loyalty_id": "L1"}),
]  # fmt: skip


def write_events(path: Path) -> Path:
    path.write_bytes(b"".join((e if isinstance(e, bytes) else orjson.dumps(e)) + b"\n" for e in EVENTS))
    return path


def test_known_story_lands_exactly(settings: Settings, tmp_path: Path) -> None:
    o2o(settings, "init")
    o2o(settings, "produce", "--file", str(write_events(tmp_path / "events.jsonl")))
    o2o(settings, "run", "all", "--drain")

    alice = person_id_for("anonymous_id:c1")
    other = person_id_for("anonymous_id:c9")

    events = query(settings, "SELECT event_id, person_id, session_id FROM {db}.events ORDER BY event_id")
    assert [e[0] for e in events] == ["e1", "e11", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9"]
    assert {e[1] for e in events} == {alice}  # c9's person merged into Alice
    session_of = {e[0]: e[2] for e in events}
    assert session_of["e1"] == session_of["e2"] == session_of["e3"]
    assert session_of["e5"] == session_of["e6"] == session_of["e7"]
    assert len(set(session_of.values())) == 6

    sessions = query(
        settings,
        "SELECT session_id, person_id, kind, channel, started_at, ended_at, store_id, event_count "
        "FROM {db}.sessions ORDER BY started_at",
    )
    assert [(s[2], s[3], s[6], s[7]) for s in sessions] == [
        ("digital", "paid_search", "", 3),
        ("digital", "direct", "", 1),
        ("digital", "push", "", 1),
        ("store_visit", "store", "s1", 3),
        ("store_visit", "store", "s1", 1),  # the return: a later visit
        ("digital", "direct", "", 1),
    ]
    assert {s[1] for s in sessions} == {alice}
    visit = sessions[3]
    assert (visit[4], visit[5]) == ("2026-11-02T11:00:00", "2026-11-02T11:20:00")

    conversions = query(
        settings,
        "SELECT conversion_id, event_id, person_id, kind, revenue, path_length, o2o_label "
        "FROM {db}.conversions ORDER BY occurred_at",
    )
    assert conversions == [
        (conversion_id_for("e3"), "e3", alice, "order", 100.0, 1, "online_only"),
        # c9's direct visit (day 0, 10:30) joined Alice's path when the login merged c9 into
        # her on day 2: the purchase was re-attributed over direct > push > store
        (conversion_id_for("e6"), "e6", alice, "purchase", 50.0, 3, "online_to_offline"),
    ]
    versions = query(settings, "SELECT event_id, version FROM {db}.conversions ORDER BY event_id")
    assert versions == [("e3", 1), ("e6", 2)]

    staff = query(
        settings, "SELECT event_id, store_id, staff_id, fulfillment FROM {db}.conversions ORDER BY event_id"
    )
    assert staff == [("e3", "", "", "delivery"), ("e6", "s1", "anna", "")]

    credits = query(
        settings,
        "SELECT conversion_id, model, channel, credit, revenue_credit FROM {db}.attribution "
        "ORDER BY conversion_id, model, touch_at",
    )
    by_model: dict[tuple[str, str], list[tuple[str, float, float]]] = {}
    for conversion_id, model, channel, credit, revenue in credits:
        by_model.setdefault((conversion_id, model), []).append((channel, credit, revenue))
    online, store = conversion_id_for("e3"), conversion_id_for("e6")
    rule_models = [m for m in settings.models if m not in ("markov", "shapley")]  # no fit in this test
    assert len(by_model) == 2 * len(rule_models)
    for (conversion_id, _model), rows in by_model.items():
        assert sum(r[1] for r in rows) == pytest.approx(1.0, abs=1e-12)
        assert sum(r[2] for r in rows) == pytest.approx(100.0 if conversion_id == online else 50.0)
    assert by_model[(online, "last_touch")] == [("paid_search", 1.0, 100.0)]
    assert [r[:2] for r in by_model[(store, "first_touch")]] == [
        ("direct", 1.0),
        ("push", 0.0),
        ("store", 0.0),
    ]
    assert [r[0] for r in by_model[(store, "last_touch")] if r[1] > 0] == ["store"]
    assert [(r[0], r[1], r[2]) for r in by_model[(store, "linear")]] == [
        ("direct", pytest.approx(1 / 3), pytest.approx(50 / 3)),
        ("push", pytest.approx(1 / 3), pytest.approx(50 / 3)),
        ("store", pytest.approx(1 / 3), pytest.approx(50 / 3)),
    ]

    paths = query(settings, "SELECT path, o2o_label, conversions FROM {db}.o2o_paths ORDER BY path")
    assert paths == [("direct > push > store", "online_to_offline", 1), ("paid_search", "online_only", 1)]
    by_store = query(
        settings,
        "SELECT store_id, channel, revenue FROM {db}.credits_by_store "
        "WHERE model = 'linear' ORDER BY store_id, channel",
    )
    assert by_store == [
        ("", "paid_search", 100.0),
        ("s1", "direct", pytest.approx(50 / 3)),
        ("s1", "push", pytest.approx(50 / 3)),
        ("s1", "store", pytest.approx(50 / 3)),
    ]
    daily = query(settings, "SELECT sum(revenue) FROM {db}.credits_daily WHERE model = 'u_shaped'")
    assert daily == [(150.0,)]

    adjustments = query(
        settings,
        "SELECT conversion_id, model, channel, revenue_adjustment, return_event_id "
        "FROM {db}.attribution_adjustments ORDER BY model, channel",
    )
    by_adjusted_model: dict[str, float] = {}
    for conversion_id, model, _channel, amount, return_event in adjustments:
        assert (conversion_id, return_event) == (store, "e11")
        by_adjusted_model[model] = by_adjusted_model.get(model, 0.0) + amount
    assert by_adjusted_model == pytest.approx(dict.fromkeys(rule_models, -20.0))
    # the return came before the merge; the re-attribution split it again
    assert [(a[2], a[3]) for a in adjustments if a[1] == "linear"] == [
        ("direct", pytest.approx(-20 / 3)),
        ("push", pytest.approx(-20 / 3)),
        ("store", pytest.approx(-20 / 3)),
    ]

    identities = query(
        settings, "SELECT id_type, id_value, person_id FROM {db}.identities ORDER BY id_type, id_value"
    )
    assert identities == [
        ("anonymous_id", "c1", alice),
        ("anonymous_id", "c9", alice),
        ("device_id", "d1", alice),
        ("loyalty_id", "L1", alice),
        ("user_id", "u1", alice),
    ]
    merges = query(settings, "SELECT from_person, to_person FROM {db}.person_merges")
    assert merges == [(other, alice)]

    dead = query(settings, "SELECT reason, topic, payload FROM {db}.dead_letters ORDER BY reason")
    assert [(d[0], d[1]) for d in dead] == [
        ("malformed_json", f"{settings.topic_prefix}raw.web"),
        ("unknown_type", f"{settings.topic_prefix}raw.pos"),
    ]
    assert dead[0][2] == '{"event_id": "bad", "source": "web", '
