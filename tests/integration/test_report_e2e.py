"""`o2o report` on a small known O2O story through the real broker and chDB: exact split numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config import Settings
from tests.conftest import at, o2o, query
from tests.conftest import story_event as ev

pytestmark = pytest.mark.integration

MODELS = ("first_touch", "last_touch", "linear")


S2 = {"context": {"store_id": "s2"}, "properties": {"store_id": "s2", "geofence_id": "g2"}}
EVENTS = [
    # Bob clicks a paid search ad, logs in, leaves; the next day he buys 60 in store s1.
    ev("b1", "web", "page_view", at(), {"anonymous_id": "cb"},
       context={"campaign": {"source": "google", "medium": "cpc", "name": "winter"},
                "page": {"url": "https://shop.example/", "referrer": "https://www.google.com/"}}),
    ev("b2", "web", "login", at(minutes=5), {"anonymous_id": "cb", "user_id": "bob"}),
    ev("b3", "pos", "purchase", at(days=1, hours=1), {"loyalty_id": "LB", "user_id": "bob"},
       properties={"transaction_id": "tb", "store_id": "s1", "revenue": 60.0, "currency": "EUR"}),
    # Three hours later he brings back 10 worth of it.
    ev("b4", "pos", "return", at(days=1, hours=4), {"loyalty_id": "LB"},
       properties={"transaction_id": "tb", "store_id": "s1", "revenue": 10.0, "currency": "EUR"}),
    # Carol visits store s2 (geofence) and, a day later, orders 90 in the app.
    ev("c1", "geofence", "enter", at(days=2), {"device_id": "dc"}, **S2),
    ev("c2", "geofence", "exit", at(days=2, minutes=20), {"device_id": "dc"}, **S2),
    ev("c3", "app", "order_completed", at(days=3), {"device_id": "dc", "user_id": "carol"},
       properties={"order_id": "oc", "revenue": 90.0, "currency": "EUR", "fulfillment": "delivery"}),
]  # fmt: skip

# (conversion_world, touch_world) -> credited revenue, per model.
SPLIT = {
    "first_touch": {
        ("offline", "online"): 60.0, ("offline", "store"): 0.0,
        ("online", "store"): 90.0, ("online", "online"): 0.0,
    },
    "last_touch": {
        ("offline", "online"): 0.0, ("offline", "store"): 60.0,
        ("online", "store"): 0.0, ("online", "online"): 90.0,
    },
    "linear": {
        ("offline", "online"): 30.0, ("offline", "store"): 30.0,
        ("online", "store"): 45.0, ("online", "online"): 45.0,
    },
}  # fmt: skip
SHARE = {
    model: {key: 100.0 * value / (60.0 if key[0] == "offline" else 90.0) for key, value in split.items()}
    for model, split in SPLIT.items()
}


def by_world(rows: list[dict[str, Any]], model: str) -> dict[tuple[str, str], float]:
    return {(r["conversion_world"], r["touch_world"]): r[model] for r in rows}


def by_channel(rows: list[dict[str, Any]], model: str) -> dict[str, float]:
    return {r["channel"]: r[model] for r in rows}


def test_report_shows_the_o2o_split_of_a_known_story(settings: Settings, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in EVENTS))
    o2o(settings, "init")
    o2o(settings, "produce", "--file", str(events))
    o2o(settings, "run", "all", "--drain")

    labels = query(
        settings, "SELECT event_id, source, revenue, o2o_label FROM {db}.conversions ORDER BY event_id"
    )
    assert labels == [("b3", "pos", 60.0, "online_to_offline"), ("c3", "app", 90.0, "offline_to_online")]

    view = query(
        settings,
        "SELECT model, conversion_world, touch_world, sum(revenue), sum(net_revenue) FROM {db}.o2o_split "
        "WHERE model IN ('first_touch', 'last_touch', 'linear') "
        "GROUP BY model, conversion_world, touch_world",
    )
    gross = {(m, w, t): revenue for m, w, t, revenue, _net in view}
    assert gross == pytest.approx({(m, *key): v for m, split in SPLIT.items() for key, v in split.items()})
    net = {(m, w, t): net for m, w, t, _revenue, net in view}
    assert net[("linear", "offline", "online")] == pytest.approx(25.0)
    assert net[("first_touch", "offline", "online")] == pytest.approx(50.0)

    document = orjson.loads(o2o(settings, "report", "--format", "json").stdout)
    assert list(document) == [
        "revenue", "net_revenue", "conversions", "o2o_split", "o2o_split_share",
        "instore_by_channel", "o2o_labels", "totals", "dead_letters",
    ]  # fmt: skip
    for model in MODELS:
        assert by_world(document["o2o_split"], model) == pytest.approx(SPLIT[model]), model
        assert by_world(document["o2o_split_share"], model) == pytest.approx(SHARE[model], abs=0.05), model
    assert by_channel(document["revenue"], "linear") == pytest.approx(
        {"store": 75.0, "paid_search": 30.0, "direct": 45.0}
    )
    assert by_channel(document["net_revenue"], "linear") == pytest.approx(
        {"store": 70.0, "paid_search": 25.0, "direct": 45.0}
    )
    assert by_channel(document["net_revenue"], "first_touch") == pytest.approx(
        {"store": 90.0, "paid_search": 50.0, "direct": 0.0}
    )
    assert by_channel(document["conversions"], "last_touch") == pytest.approx(
        {"store": 1.0, "paid_search": 0.0, "direct": 1.0}
    )
    assert [r["channel"] for r in document["instore_by_channel"]] == ["paid_search"]
    assert by_channel(document["instore_by_channel"], "first_touch") == {"paid_search": 60.0}
    assert by_channel(document["instore_by_channel"], "last_touch") == {"paid_search": 0.0}
    assert by_channel(document["instore_by_channel"], "linear") == {"paid_search": 30.0}
    assert document["o2o_labels"] == [
        {"o2o_label": "offline_to_online", "currency": "EUR", "conversions": 1, "revenue": 90.0,
         "avg_path_length": 2.0, "avg_days_to_convert": 1.0},
        {"o2o_label": "online_to_offline", "currency": "EUR", "conversions": 1, "revenue": 60.0,
         "avg_path_length": 2.0, "avg_days_to_convert": 1.04},
    ]  # fmt: skip
    assert document["totals"] == [
        {"currency": "EUR", "conversions": 2, "revenue": 150.0, "customers": 2, "unattributed": 0}
    ]

    # Only Carol's online order (Nov 4) is on or after Nov 3; only the models asked for.
    later = orjson.loads(
        o2o(
            settings, "report", "--format", "json", "--since", "2026-11-03", "--until", "2026-11-30",
            "--model", "linear", "--model", "first_touch", "--only", "o2o_split", "--only", "totals",
        ).stdout
    )  # fmt: skip
    eur = {"currency": "EUR"}
    assert later["o2o_split"] == [
        {"conversion_world": "offline", "touch_world": "online", **eur, "linear": 0.0, "first_touch": 0.0},
        {"conversion_world": "offline", "touch_world": "store", **eur, "linear": 0.0, "first_touch": 0.0},
        {"conversion_world": "online", "touch_world": "store", **eur, "linear": 45.0, "first_touch": 90.0},
        {"conversion_world": "online", "touch_world": "online", **eur, "linear": 45.0, "first_touch": 0.0},
    ]
    assert later["totals"] == [
        {"currency": "EUR", "conversions": 1, "revenue": 90.0, "customers": 1, "unattributed": 0}
    ]

    table = o2o(settings, "report", "--only", "o2o_split").stdout
    assert table.startswith("O2O split: credited revenue by conversion world and touch world, by model\n")
    assert "4 rows" in table
