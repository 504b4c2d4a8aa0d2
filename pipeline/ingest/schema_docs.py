"""The Markdown event reference (``docs/events.md``), generated from the contract's JSON Schemas.

``python -m pipeline.ingest.schema_docs`` rewrites ``docs/events.md``;
``--check`` only reports (exit status 1) when the file is out of date. A unit
test compares the file with :func:`render_reference`, so the page cannot drift
from ``schemas/v1``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from pipeline.ingest.schemas import SCHEMA_DIR, Schema, SchemaRegistry

DOCS_FILE: Final = Path(__file__).resolve().parents[2] / "docs" / "events.md"
SOURCE_ORDER: Final = ("web", "app", "geofence", "pos")
_HEADER = """\
<!-- Generated from schemas/v1 by `python -m pipeline.ingest.schema_docs`; do not edit by hand. -->
# Event reference (contract v1)

Every event is one JSON object: the envelope below, with type-specific fields
in `properties`. The JSON Schemas under `schemas/v1` are the source of this
page: `envelope.json`, and one `<source>/<type>.json` per event type
describing its `properties`. Ingest validates every event against them;
an event that fails goes to the dead-letter topic with reason
`unknown_type`, `missing_identifier` or `schema_violation` and the JSON path
of the problem (for example `$.properties.revenue: must be >= 0`).

`properties` may carry more keys than listed: producers add their own.
Nested fields are written with dots (`context.geo.lat`); `[]` marks the
elements of an array (`items[].sku`).
"""
Row = tuple[str, str, str, str]


def render_reference(registry: SchemaRegistry | Path | None = None) -> str:
    """The Markdown reference of a registry (or of the schemas in a folder, default ``schemas/v1``)."""
    if not isinstance(registry, SchemaRegistry):
        registry = SchemaRegistry.load(registry or SCHEMA_DIR)
    envelope = registry.envelope
    lines = [_HEADER, "## Envelope", "", _text(envelope.get("description", "")), ""]
    lines += _table(_rows(envelope))
    rules = [_text(rule["description"]) for rule in envelope.get("allOf", ()) if "description" in rule]
    if rules:
        lines += ["", "Rules:", "", *(f"- {rule}" for rule in rules)]
    by_source: dict[str, list[str]] = {}
    for source, etype in registry.types():
        by_source.setdefault(source, []).append(etype)
    sources = sorted(by_source, key=lambda s: (SOURCE_ORDER.index(s) if s in SOURCE_ORDER else 99, s))
    lines += ["", "## Event types", "", "| source | types |", "|---|---|"]
    lines += [f"| `{s}` | {' '.join(f'`{t}`' for t in by_source[s])} |" for s in sources]
    for source in sources:
        lines += ["", f"## `{source}` events"]
        for etype in by_source[source]:
            schema = registry.schema(source, etype)
            lines += ["", f"### `{source}` `{etype}`", "", _text(schema.get("description", "")), ""]
            rows = list(_rows(schema))
            lines += _table(rows) if rows else ["No type-specific properties."]
    return "\n".join(lines).rstrip("\n") + "\n"


def _table(rows: Iterator[Row] | list[Row]) -> list[str]:
    out = ["| field | type | required | description |", "|---|---|---|---|"]
    out += [f"| `{name}` | {kind} | {required} | {text} |" for name, kind, required, text in rows]
    return out


def _rows(schema: Schema, prefix: str = "") -> Iterator[Row]:
    """One row per known field of an object schema, depth first, in file order."""
    required = set(schema.get("required") or ())
    one_of = _alternatives(schema)
    for name, field in (schema.get("properties") or {}).items():
        if name in required:
            needed = _required_in(prefix)
        elif name in one_of:
            needed = "one of " + ", ".join(f"`{n}`" for n in one_of)
        elif "x-required" in field:
            needed = f"yes, {_text(field['x-required'])}"
        else:
            needed = "no"
        yield f"{prefix}{name}", _kind(field), needed, _text(field.get("description", ""))
        if field.get("type") == "object" and field.get("properties"):
            yield from _rows(field, f"{prefix}{name}.")
        items = field.get("items")
        if field.get("type") == "array" and isinstance(items, dict) and items.get("properties"):
            yield from _rows(items, f"{prefix}{name}[].")


def _required_in(prefix: str) -> str:
    """The required column of a required field inside the object at ``prefix``."""
    parent = prefix[:-1]
    if not parent:
        return "yes"
    if parent.endswith("[]"):
        return f"yes, in each `{parent}`"
    return f"yes, when `{parent}` is given"


def _alternatives(schema: Schema) -> list[str]:
    """Fields of which at least one is required (``anyOf`` of single ``required`` lists)."""
    names: list[str] = []
    for option in schema.get("anyOf") or ():
        if set(option) == {"required"} and len(option["required"]) == 1:
            names.append(option["required"][0])
    return names


def _kind(field: dict[str, Any]) -> str:
    """The type column: JSON type plus its constraints, in words."""
    types = field.get("type", "any")
    kind = " or ".join(types) if isinstance(types, list) else str(types)
    if "enum" in field:
        return "one of " + ", ".join(f"`{v}`" for v in field["enum"])
    if field.get("format") == "date-time":
        return "RFC 3339 timestamp with offset"
    notes: list[str] = []
    if "pattern" in field:
        notes.append(f"matching `{field['pattern']}`")
    low, high = field.get("minimum"), field.get("maximum")
    if low is not None and high is not None:
        notes.append(f"{low} to {high}")
    elif low is not None:
        notes.append(f">= {low}")
    elif high is not None:
        notes.append(f"<= {high}")
    if field.get("minLength") == 1:
        notes.append("non-empty")
    if "maxLength" in field:
        notes.append(f"at most {field['maxLength']} characters")
    if "minProperties" in field:
        notes.append(f"at least {field['minProperties']} key")
    if kind == "object" and field.get("additionalProperties") is False:
        notes.append("no other keys")
    if kind == "array" and isinstance(field.get("items"), dict) and "type" in field["items"]:
        kind = f"array of {field['items']['type']}s"
    return _text(", ".join([kind, *notes]))


def _text(value: Any) -> str:
    """A table-safe one-line Markdown text."""
    return " ".join(str(value).split()).replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    """Rewrite ``docs/events.md`` (or, with ``--check``, exit 1 when it is out of date)."""
    args = sys.argv[1:] if argv is None else argv
    text = render_reference()
    current = DOCS_FILE.read_text(encoding="utf-8") if DOCS_FILE.exists() else None
    if "--check" in args:
        if current != text:
            print(f"{DOCS_FILE} is out of date: run python -m pipeline.ingest.schema_docs", file=sys.stderr)
            return 1
        return 0
    if current != text:
        DOCS_FILE.write_text(text, encoding="utf-8")
        print(f"wrote {DOCS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
