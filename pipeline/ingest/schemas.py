"""JSON Schemas of event contract v1 and their compiled validators.

``schemas/v1`` holds ``envelope.json`` (the fields every event has) and one
``<source>/<type>.json`` per event type describing its ``properties``.
:meth:`SchemaRegistry.load` compiles, with fastjsonschema, one validator per
(source, type): a copy of the envelope whose ``properties`` field is that
type's schema, so an event is checked in one pass. :meth:`SchemaRegistry.validate`
raises :class:`~pipeline.errors.InvalidEvent` with reason ``unknown_type``,
``missing_identifier`` or ``schema_violation`` and a detail such as
``$.properties.revenue: must be >= 0``.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import fastjsonschema
from fastjsonschema import JsonSchemaValueException

from pipeline.errors import InvalidEvent

SCHEMA_DIR: Final = Path(__file__).resolve().parents[2] / "schemas" / "v1"
"""The contract v1 schemas of this repository."""
ENVELOPE_FILE: Final = "envelope.json"

Schema = dict[str, Any]
Validator = Callable[[Any], Any]
_ANNOTATIONS = ("$schema", "$id")  # dropped when a type schema is embedded in the envelope
_MAX_DETAIL = 300
_COMPARISONS = (
    ("must be bigger than or equal to ", "must be >= "),
    ("must be smaller than or equal to ", "must be <= "),
    ("must be bigger than ", "must be > "),
    ("must be smaller than ", "must be < "),
)
_NAME = re.compile(r"^data")


class SchemaRegistry:
    """The envelope and per-type schemas of one contract version, with a validator per (source, type)."""

    def __init__(self, folder: Path, envelope: Schema, types: dict[tuple[str, str], Schema]) -> None:
        self.folder = folder
        self.envelope = envelope
        self.schemas = dict(sorted(types.items()))
        self._envelope_check: Validator = _compile(envelope)
        self._validators: dict[tuple[str, str], Validator] = {
            key: _compile(combine(envelope, schema, source=key[0])) for key, schema in self.schemas.items()
        }
        self._sources: dict[str, set[str]] = {}
        for source, etype in self.schemas:
            self._sources.setdefault(source, set()).add(etype)

    @classmethod
    def load(cls, folder: Path = SCHEMA_DIR) -> SchemaRegistry:
        """Read ``envelope.json`` and every ``<source>/<type>.json`` under ``folder`` and compile them."""
        envelope = _read(folder / ENVELOPE_FILE)
        types = {(path.parent.name, path.stem): _read(path) for path in sorted(folder.glob("*/*.json"))}
        if not types:
            raise FileNotFoundError(f"no <source>/<type>.json schema under {folder}")
        return cls(folder, envelope, types)

    def types(self) -> list[tuple[str, str]]:
        """Every (source, type) pair with a schema, sorted."""
        return list(self.schemas)

    def schema(self, source: str, etype: str) -> Schema:
        """The schema of the ``properties`` of one event type (KeyError when there is none)."""
        return self.schemas[(source, etype)]

    def validate(self, doc: Any) -> None:
        """Check one parsed event; raise :class:`InvalidEvent` on the first problem found.

        Reasons: ``unknown_type`` (no schema for its source and type),
        ``missing_identifier`` (``ids`` missing, not an object or empty) and
        ``schema_violation`` (anything else, with the JSON path in the detail).
        """
        if type(doc) is not dict:
            raise InvalidEvent("schema_violation", "$: an event is a JSON object")
        key: Any = (doc.get("source"), doc.get("type"))
        try:
            validator = self._validators.get(key)
        except TypeError:  # an unhashable source or type (a list, an object)
            validator = None
        if validator is None:
            raise self._unknown(doc)
        ids = doc.get("ids")
        if not ids or type(ids) is not dict:
            raise InvalidEvent("missing_identifier", "$.ids: at least one identifier is required")
        try:
            validator(doc)
        except JsonSchemaValueException as exc:
            raise explain(exc) from None

    def _unknown(self, doc: dict[str, Any]) -> InvalidEvent:
        """The error for an event whose (source, type) has no validator."""
        source, etype = doc.get("source"), doc.get("type")
        if isinstance(source, str) and isinstance(etype, str):
            if source not in self._sources:
                return InvalidEvent("unknown_type", f"$.source: unknown source {source[:64]!r}")
            return InvalidEvent("unknown_type", f"$.type: {etype[:64]!r} is not a {source} event type")
        try:  # a missing or non-string source or type: the envelope says what is wrong
            self._envelope_check(doc)
        except JsonSchemaValueException as exc:
            return explain(exc)
        return InvalidEvent("schema_violation", "$.type: expected a string")


@functools.cache
def default_registry() -> SchemaRegistry:
    """The registry of this repository's ``schemas/v1``, loaded and compiled once per process."""
    return SchemaRegistry.load()


def combine(envelope: Schema, properties: Schema, source: str | None = None) -> Schema:
    """The schema of a whole event of one type: the envelope with ``properties`` set to ``properties``.

    ``properties`` becomes required when the type schema requires any field.
    With ``source`` (a validator is only ever used on events of its source),
    the envelope's rules that depend on the source alone are decided here:
    see :func:`_decide_source_rules`.
    """
    combined = copy.deepcopy(envelope)
    embedded = {k: copy.deepcopy(v) for k, v in properties.items() if k not in _ANNOTATIONS}
    combined["properties"]["properties"] = embedded
    if embedded.get("required") or embedded.get("anyOf"):
        combined["required"] = [*combined.get("required", []), "properties"]
    if source is not None:
        _decide_source_rules(combined, source)
    return combined


def _decide_source_rules(schema: Schema, source: str) -> None:
    """Replace each ``allOf`` rule "if source is one of E then T" by T (source in E) or by nothing.

    The same outcome as the conditional for an event of ``source``, without
    its cost: the generated code tests the ``if`` by raising and catching an
    exception, for every event of the other sources.
    """
    kept = []
    for rule in schema.get("allOf", []):
        sources = _source_condition(rule)
        if sources is None:
            kept.append(rule)
        elif (branch := rule.get("then" if source in sources else "else")) is not None:
            kept.append(branch)
    if kept:
        schema["allOf"] = kept
    else:
        schema.pop("allOf", None)


def _source_condition(rule: Any) -> list[str] | None:
    """E of a rule that is exactly "if source is one of E then ... [else ...]", else None."""
    if not isinstance(rule, dict) or set(rule) - {"if", "then", "else", "description", "$comment"}:
        return None
    condition = rule.get("if")
    if not isinstance(condition, dict) or set(condition) != {"properties", "required"}:
        return None
    properties, required = condition["properties"], condition["required"]
    if required != ["source"] or not isinstance(properties, dict) or set(properties) != {"source"}:
        return None
    enum = properties["source"]
    if not isinstance(enum, dict) or set(enum) != {"enum"} or not isinstance(enum["enum"], list):
        return None
    return enum["enum"]


def explain(exc: JsonSchemaValueException) -> InvalidEvent:
    """The :class:`InvalidEvent` for a fastjsonschema error: ``$.json.path: what is wrong``."""
    path = _NAME.sub("$", exc.name or "data", count=1)
    definition = exc.definition if isinstance(exc.definition, dict) else {}
    rule, value = exc.rule, exc.value
    message = exc.message
    prefix = f"{exc.name} "
    if message.startswith(prefix):
        message = message[len(prefix) :]
    if rule == "required" and isinstance(value, dict):
        missing = [key for key in exc.rule_definition or () if key not in value]
        if path == "$" and "ids" in missing:
            return InvalidEvent("missing_identifier", "$.ids: at least one identifier is required")
        if missing:
            path, message = f"{path}.{missing[0]}", "required"
    elif rule == "minProperties" and path == "$.ids":
        return InvalidEvent("missing_identifier", "$.ids: at least one identifier is required")
    elif rule == "additionalProperties" and isinstance(value, dict):
        known = definition.get("properties") or {}
        extra = sorted(str(key) for key in value if key not in known)
        if extra:
            path, message = f"{path}.{extra[0][:64]}", "not an allowed key"
    elif rule in ("anyOf", "oneOf"):
        options = [_required_paths(option) for option in exc.rule_definition or ()]
        if options and all(options):
            message = "needs " + " or ".join(" and ".join(paths) for paths in options)
    elif rule == "pattern" and definition.get("format") == "date-time":
        message = "must be an RFC 3339 timestamp with an offset (Z or +hh:mm)"
    else:
        for long, short in _COMPARISONS:
            message = message.replace(long, short)
    return InvalidEvent("schema_violation", f"{path}: {message}"[:_MAX_DETAIL])


def _required_paths(schema: Any, prefix: str = "") -> list[str]:
    """The dotted paths a required-only alternative asks for (``[]`` if it asks for more)."""
    if not isinstance(schema, dict) or set(schema) - {"required", "properties"}:
        return []
    paths: list[str] = []
    nested = schema.get("properties") or {}
    for key in schema.get("required") or ():
        deeper = _required_paths(nested[key], f"{prefix}{key}.") if key in nested else []
        paths.extend(deeper or [f"{prefix}{key}"])
    return paths


def _compile(schema: Schema) -> Validator:
    """A fastjsonschema validator that never fills in defaults (validation must not change events)."""
    validator: Validator = fastjsonschema.compile(schema, use_default=False, use_formats=False)
    return validator


def _read(path: Path) -> Schema:
    """One schema file; it must be a JSON object."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a schema file holds a JSON object")
    return doc
