"""JSON Schemas of contract v1: the simulator's events pass, bad events get a typed reason and a path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import InvalidEvent
from pipeline.ingest.schema_docs import DOCS_FILE, render_reference
from pipeline.ingest.schemas import SCHEMA_DIR, SchemaRegistry, combine, default_registry
from pipeline.model.contract import SOURCES
from pipeline.simulate import simulate


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return default_registry()


def test_every_simulated_event_validates(registry: SchemaRegistry) -> None:
    seen: set[tuple[str, str]] = set()
    count = 0
    for event in simulate(2000, 5, seed=7):
        registry.validate(event)
        seen.add((event["source"], event["type"]))
        count += 1
    assert count > 10_000
    assert len(seen) >= 18  # nearly every type occurs


ORDER: dict[str, Any] = {
    "event_id": "e1",
    "source": "web",
    "type": "order_completed",
    "occurred_at": "2026-10-01T10:00:00+02:00",
    "ids": {"user_id": "u1"},
    "properties": {
        "order_id": "o1",
        "revenue": 59.9,
        "currency": "EUR",
        "items": [{"sku": "SKU-0100", "price": 59.9, "quantity": 1}],
    },
}
PURCHASE: dict[str, Any] = {
    **ORDER,
    "source": "pos",
    "type": "purchase",
    "properties": {"transaction_id": "t1", "store_id": "store-001", "revenue": 10, "currency": "EUR"},
}


def changed(base: dict[str, Any], path: str, value: Any = ..., **top: Any) -> dict[str, Any]:
    """A copy of ``base`` with top-level ``top`` set and the dotted ``path`` set (or deleted with ...)."""
    doc = copy.deepcopy(base)
    doc.update(top)
    if path:
        *parents, last = path.split(".")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if value is ...:
            del node[last]
        else:
            node[int(last) if last.isdigit() else last] = value
    return doc


SV = "schema_violation"
GEO = "context.geo"
DWELL = {"store_id": "store-001", "dwell_seconds": -1}


def order(path: str, value: Any = ..., **top: Any) -> dict[str, Any]:
    """An order with one change (see :func:`changed`)."""
    return changed(ORDER, path, value, **top)


BAD: list[tuple[str, Any, str, str]] = [
    ("negative revenue", order("properties.revenue", -5), SV, "$.properties.revenue"),
    ("revenue as text", order("properties.revenue", "59.9"), SV, "$.properties.revenue"),
    ("missing order_id", order("properties.order_id"), SV, "$.properties.order_id"),
    ("no properties", order("properties"), SV, "$.properties"),
    ("properties a list", order("", properties=[]), SV, "$.properties"),
    ("lower-case currency", order("properties.currency", "eur"), SV, "$.properties.currency"),
    ("long currency", order("properties.currency", "EURO"), SV, "$.properties.currency"),
    ("bad fulfillment", order("properties.fulfillment", "drone"), SV, "$.properties.fulfillment"),
    ("zero quantity", order("properties.items.0.quantity", 0), SV, "$.properties.items[0].quantity"),
    ("unknown type", order("", type="purchase"), "unknown_type", "$.type"),
    ("unknown source", order("", source="fax"), "unknown_type", "$.source"),
    ("no source", order("source"), SV, "$.source"),
    ("type a list", order("", type=["page_view"]), SV, "$.type"),
    ("ids empty", order("", ids={}), "missing_identifier", "$.ids"),
    ("ids missing", order("ids"), "missing_identifier", "$.ids"),
    ("ids a string", order("", ids="u1"), "missing_identifier", "$.ids"),
    ("unknown id type", order("", ids={"shoe_size": "42"}), SV, "$.ids.shoe_size"),
    ("id a number", order("", ids={"user_id": 5}), SV, "$.ids.user_id"),
    ("id too long", order("", ids={"user_id": "u" * 513}), SV, "$.ids.user_id"),
    ("event_id a number", order("", event_id=12), SV, "$.event_id"),
    ("event_id empty", order("", event_id=""), SV, "$.event_id"),
    ("no event_id", order("event_id"), SV, "$.event_id"),
    ("no offset", order("", occurred_at="2026-10-01T10:00:00"), SV, "$.occurred_at"),
    ("not a time", order("", occurred_at="yesterday"), SV, "$.occurred_at"),
    ("time a number", order("", occurred_at=1_790_000_000), SV, "$.occurred_at"),
    ("bad sent_at", order("", sent_at="2026-10-01 10:00"), SV, "$.sent_at"),
    ("consent text", order("", consent={"analytics": "yes"}), SV, "$.consent.analytics"),
    ("latitude 91", order("", context={"geo": {"lat": 91, "lon": 2}}), SV, f"$.{GEO}.lat"),
    ("longitude -181", order("", context={"geo": {"lat": 1, "lon": -181}}), SV, f"$.{GEO}.lon"),
    ("latitude text", order("", context={"geo": {"lat": "1", "lon": 2}}), SV, f"$.{GEO}.lat"),
    ("geo without lon", order("", context={"geo": {"lat": 1}}), SV, f"$.{GEO}.lon"),
    ("context a list", order("", context=[]), SV, "$.context"),
    ("campaign a string", order("", context={"campaign": "x"}), SV, "$.context.campaign"),
    ("pos without store", changed(PURCHASE, "properties.store_id"), SV, "$: needs properties.store_id"),
    ("pos negative revenue", changed(PURCHASE, "properties.revenue", -1), SV, "$.properties.revenue"),
    (
        "return without reference",
        changed(PURCHASE, "", type="return", properties={"store_id": "store-001", "revenue": 5}),
        SV,
        "$.properties: needs transaction_id or order_id",
    ),
    (
        "negative dwell",
        changed(PURCHASE, "", source="geofence", type="dwell", properties=DWELL),
        SV,
        "$.properties.dwell_seconds",
    ),
    (
        "coupon without code",
        order("", source="app", type="coupon_claimed", properties={"discount_pct": 10}),
        SV,
        "$.properties.coupon_code",
    ),
    ("not an object", [ORDER], SV, "$"),
]


@pytest.mark.parametrize(
    ("doc", "reason", "where"), [case[1:] for case in BAD], ids=[case[0] for case in BAD]
)
def test_bad_events_get_a_reason_and_a_json_path(
    registry: SchemaRegistry, doc: Any, reason: str, where: str
) -> None:
    with pytest.raises(InvalidEvent) as info:
        registry.validate(doc)
    assert info.value.reason == reason
    assert info.value.detail.startswith(where), info.value.detail


@pytest.mark.parametrize(
    "doc",
    [
        ORDER,
        changed(
            ORDER, "", ids={"anonymous_id": "a1", "user_id": None}
        ),  # null ids are left to the normaliser
        order("", context={"ip": "10.0.0.1", "userAgent": "x", "page": {"url": "u", "path": "/"}}),
        order("properties.gift_wrap", True),  # producers add their own properties
        order("", occurred_at="2026-10-01T08:00:00.123Z", sent_at="2026-10-01T08:00:01-05:30"),
        changed(PURCHASE, "properties.store_id", context={"store_id": "store-001"}),  # store in context
        changed(PURCHASE, "", type="return", properties={"order_id": "o1", "store_id": "s", "revenue": 5}),
        order("", source="web", type="page_view", properties={}),
        {k: v for k, v in ORDER.items() if k != "properties"} | {"type": "login"},
    ],
)
def test_good_events_pass(registry: SchemaRegistry, doc: dict[str, Any]) -> None:
    registry.validate(doc)


def test_messages_are_short_and_readable(registry: SchemaRegistry) -> None:
    with pytest.raises(InvalidEvent) as info:
        registry.validate(order("properties.revenue", -5))
    assert info.value.detail == "$.properties.revenue: must be >= 0"
    with pytest.raises(InvalidEvent) as info:
        registry.validate(order("", occurred_at="2026-10-01T10:00:00"))
    assert "RFC 3339" in info.value.detail


def test_validation_does_not_change_the_event(registry: SchemaRegistry) -> None:
    doc = copy.deepcopy(ORDER)
    registry.validate(doc)
    assert doc == ORDER


def test_one_schema_per_contract_type_and_no_others(registry: SchemaRegistry) -> None:
    expected = sorted((source, etype) for source, types in SOURCES.items() for etype in types)
    on_disk = sorted((p.parent.name, p.stem) for p in SCHEMA_DIR.glob("*/*.json"))
    assert on_disk == expected
    assert registry.types() == expected
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == ["envelope.json"]


def _undocumented(schema: dict[str, Any], where: str) -> list[str]:
    missing = []
    for name, field in (schema.get("properties") or {}).items():
        if not field.get("description"):
            missing.append(f"{where}.{name}")
        missing += _undocumented(field, f"{where}.{name}")
        if isinstance(field.get("items"), dict):
            missing += _undocumented(field["items"], f"{where}.{name}[]")
    return missing


def test_every_schema_is_identified_and_documented() -> None:
    for path in sorted(SCHEMA_DIR.rglob("*.json")):
        schema = json.loads(path.read_text())
        relative = path.relative_to(SCHEMA_DIR).as_posix()
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema", relative
        assert schema["$id"].endswith(f"/schemas/v1/{relative}"), relative
        assert schema["title"] and schema["description"], relative
        assert _undocumented(schema, relative) == []
        if path.parent != SCHEMA_DIR:
            assert schema.get("additionalProperties") is True, relative  # producers add their own


def test_store_events_document_the_store_rule(registry: SchemaRegistry) -> None:
    for source, etype in registry.types():
        store_id = registry.schema(source, etype)["properties"].get("store_id", {})
        assert ("x-required" in store_id) == (source in {"geofence", "pos"}), (source, etype)


def test_docs_page_is_generated_from_the_schemas(registry: SchemaRegistry) -> None:
    assert DOCS_FILE.read_text(encoding="utf-8") == render_reference(registry), (
        "docs/events.md is stale: run python -m pipeline.ingest.schema_docs"
    )


def test_reference_renders_from_a_folder(tmp_path: Path) -> None:
    (tmp_path / "web").mkdir()
    (tmp_path / "envelope.json").write_text(json.dumps({"description": "E", "properties": {}}))
    (tmp_path / "web" / "ping.json").write_text(json.dumps({"description": "P", "properties": {}}))
    text = render_reference(tmp_path)
    assert "### `web` `ping`" in text
    assert "No type-specific properties." in text


def test_rules_on_the_source_alone_are_decided_per_source() -> None:
    """One validator per source: "if source in E then T" becomes T for sources in E, nothing for others."""
    store_rule = {"if": {"properties": {"source": {"enum": ["pos"]}}, "required": ["source"]},
                  "then": {"required": ["properties"]}, "description": "pos names its store"}  # fmt: skip
    other_rule = {"if": {"properties": {"type": {"const": "x"}}}, "then": {"required": ["context"]}}
    envelope = {"type": "object", "properties": {}, "allOf": [store_rule, other_rule]}
    assert combine(envelope, {}, source="pos")["allOf"] == [{"required": ["properties"]}, other_rule]
    assert combine(envelope, {}, source="web")["allOf"] == [other_rule]
    assert "allOf" not in combine({**envelope, "allOf": [store_rule]}, {}, source="web")
    assert combine(envelope, {})["allOf"] == [store_rule, other_rule]  # no source: left as written
