"""Activation rules as data: a TOML file read and validated once, every problem named (pure).

A rules file (``O2O_ACTIVATION_RULES``)::

    timezone = "Europe/Paris"           # of stores without their own, and of online triggers
    quiet_hours = ["21:00", "08:00"]    # local time; nothing is sent from 21:00 to 08:00
    holdout = 0.1                       # share of persons held out of each rule (stable)
    window_hours = 24                   # one decision per rule, person and window

    [stores.s2]
    timezone = "Europe/Berlin"

    [caps]                              # per person and channel: at most count per hours
    push = [{ count = 1, hours = 12 }, { count = 3, hours = 168 }]

    [[rules]]
    name = "open_cart_nearby"
    trigger = { source = "geofence", type = "enter" }     # stores = ["s1"] optional
    conditions = { cart_open_days = 7 }
    action = { channel = "push", template = "Your cart is waiting at {store_id}", coupons = ["C-1"] }

See ``docs/activation.md`` for every key.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.config import read_toml_file
from pipeline.errors import ConfigError
from pipeline.model.contract import COUPON_ISSUED, SOURCES

CHANNELS = ("push", "email", "sms", "staff_alert", "webhook")
MARKETING_CHANNELS = frozenset({"push", "email", "sms", "webhook"})
"""Channels that message the person: they need marketing consent (a staff alert serves their order)."""

CONDITIONS: dict[str, type] = {
    "cart_open_days": float,  # an add_to_cart within N days and no order or purchase since
    "collect_waiting": bool,  # a click-and-collect order not picked up yet
    "dwell_minutes": float,  # the trigger's properties.dwell_seconds is at least N minutes
    "no_purchase_minutes": float,  # no order or purchase in the last N minutes
    "first_visit_to_store": bool,  # no earlier visit (geofence or POS) to the trigger's store
}
CANCELLERS = ("return", "purchase", "order_completed")
"""Event types that may cancel a delayed decision before it is due (``cancel_if``)."""

TEMPLATE_FIELDS = frozenset({"rule", "store_id", "order_id", "coupon", "channel"})
_TOP_KEYS = ("timezone", "quiet_hours", "holdout", "window_hours", "stores", "caps", "rules")
_RULE_KEYS = (
    "name",
    "trigger",
    "conditions",
    "action",
    "delay_minutes",
    "cancel_if",
    "holdout",
    "window_hours",
)


@dataclass(frozen=True)
class Cap:
    """At most ``count`` messages on one channel per person within ``hours``."""

    count: int
    hours: float


@dataclass(frozen=True)
class Rule:
    """One activation rule: when it fires, on what history, what it does and when."""

    name: str
    source: str
    type: str
    stores: frozenset[str]
    conditions: dict[str, Any]
    channel: str
    template: str
    coupons: tuple[str, ...]
    delay_ms: int
    cancel_if: frozenset[str]
    holdout: float
    window_ms: int

    def triggered_by(self, source: str, etype: str, store: str) -> bool:
        """True when an event of this source, type and store triggers the rule."""
        return source == self.source and etype == self.type and (not self.stores or store in self.stores)


@dataclass(frozen=True)
class ActivationRules:
    """A validated rules file: the rules in file order and the guards' settings."""

    rules: tuple[Rule, ...]
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    store_zones: dict[str, ZoneInfo] = field(default_factory=dict)
    quiet_hours: tuple[int, int] | None = None  # minutes after local midnight: from, until
    caps: dict[str, tuple[Cap, ...]] = field(default_factory=dict)

    def zone_of(self, store: str) -> ZoneInfo:
        """The time zone of a store (the file's default for unknown stores and online triggers)."""
        return self.store_zones.get(store, self.timezone)


def load_activation_rules(path: Path) -> ActivationRules:
    """Read and validate an activation rules file; :class:`ConfigError` names every problem."""
    return parse_activation_rules(read_toml_file(path, "activation rules"), f"activation rules {path}")


def parse_activation_rules(doc: dict[str, Any], where: str = "activation rules") -> ActivationRules:
    """Validate a parsed rules document."""
    problems: list[str] = []
    unknown = sorted(set(doc) - set(_TOP_KEYS))
    if unknown:
        problems.append(f"unknown keys {unknown} (known: {', '.join(_TOP_KEYS)})")
    zone = _zone(doc.get("timezone", "UTC"), "timezone", problems)
    stores: dict[str, ZoneInfo] = {}
    raw_stores = doc.get("stores", {})
    if not isinstance(raw_stores, dict):
        problems.append("[stores] must be a table of [stores.<store_id>] tables")
    else:
        for store, entry in raw_stores.items():
            if not isinstance(entry, dict) or set(entry) != {"timezone"}:
                problems.append(f'stores.{store}: needs exactly timezone = "Area/City"')
                continue
            stores[store] = _zone(entry["timezone"], f"stores.{store}.timezone", problems)
    quiet = _quiet_hours(doc.get("quiet_hours"), problems)
    caps = _caps(doc.get("caps", {}), problems)
    holdout = _share(doc.get("holdout", 0.0), "holdout", problems)
    window = _positive(doc.get("window_hours", 24), "window_hours", problems)
    raw_rules = doc.get("rules", [])
    rules: list[Rule] = []
    if not isinstance(raw_rules, list) or not raw_rules:
        problems.append("needs at least one rule ([[rules]])")
    else:
        for i, entry in enumerate(raw_rules, 1):
            rule = _rule(entry, f"rules #{i}", holdout, window, problems)
            if rule is not None:
                rules.append(rule)
    names = [rule.name for rule in rules]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        problems.append(f"rule names must be unique: {duplicated}")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    return ActivationRules(tuple(rules), zone, stores, quiet, caps)


def _rule(entry: Any, where: str, holdout: float, window: float, problems: list[str]) -> Rule | None:
    if not isinstance(entry, dict):
        problems.append(f"{where}: must be a table")
        return None
    before = len(problems)
    unknown = sorted(set(entry) - set(_RULE_KEYS))
    if unknown:
        problems.append(f"{where}: unknown keys {unknown} (known: {', '.join(_RULE_KEYS)})")
    name = entry.get("name")
    if not isinstance(name, str) or not name.replace("_", "").isalnum():
        problems.append(f'{where}: needs name = "letters_digits_and_underscores"')
        name = ""
    else:
        where = f"rule {name}"
    trigger = entry.get("trigger")
    source = etype = ""
    stores: frozenset[str] = frozenset()
    if not isinstance(trigger, dict) or not set(trigger) <= {"source", "type", "stores"}:
        problems.append(
            f'{where}: needs trigger = {{ source = "...", type = "...", stores = [...] optional }}'
        )
    else:
        source, etype = str(trigger.get("source", "")), str(trigger.get("type", ""))
        if source not in SOURCES or etype not in SOURCES[source]:
            problems.append(f"{where}: trigger {source}/{etype} is not an event type of the contract")
        elif etype == COUPON_ISSUED:
            problems.append(f"{where}: trigger {source}/{etype} is written by activation itself (for its "
                            "coupons); a rule on it would act on its own decisions")  # fmt: skip
        raw = trigger.get("stores", [])
        if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
            problems.append(f"{where}: trigger.stores must be a list of store ids")
        else:
            stores = frozenset(raw)
    conditions = _conditions(entry.get("conditions", {}), where, problems)
    action = entry.get("action")
    channel, template, coupons = "", "", ()
    if not isinstance(action, dict) or not set(action) <= {"channel", "template", "coupons"}:
        problems.append(f'{where}: needs action = {{ channel = "...", template = "...", coupons = [...] }}')
    else:
        channel, template = str(action.get("channel", "")), action.get("template", "")
        if channel not in CHANNELS:
            problems.append(f"{where}: action.channel {channel!r} is not one of {', '.join(CHANNELS)}")
        if not isinstance(template, str) or not template:
            problems.append(f"{where}: action.template must be a non-empty string")
            template = ""
        else:
            _check_template(template, where, problems)
        raw_coupons = action.get("coupons", [])
        if not isinstance(raw_coupons, list) or not all(isinstance(c, str) and c for c in raw_coupons):
            problems.append(f"{where}: action.coupons must be a list of codes")
        elif len(set(raw_coupons)) != len(raw_coupons):
            problems.append(f"{where}: action.coupons lists a code twice")
        else:
            coupons = tuple(raw_coupons)
    delay = entry.get("delay_minutes", 0)
    if not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0:
        problems.append(f"{where}: delay_minutes must be a number of minutes, 0 or more")
        delay = 0
    cancel = entry.get("cancel_if", [])
    if not isinstance(cancel, list) or not set(cancel) <= set(CANCELLERS):
        problems.append(f"{where}: cancel_if must list event types among {', '.join(CANCELLERS)}")
        cancel = []
    elif cancel and not delay:
        problems.append(f"{where}: cancel_if needs delay_minutes (only a delayed decision can be cancelled)")
    share = _share(entry.get("holdout", holdout), f"{where}: holdout", problems)
    hours = _positive(entry.get("window_hours", window), f"{where}: window_hours", problems)
    if len(problems) > before:
        return None
    return Rule(
        name, source, etype, stores, conditions, channel, template, coupons,
        int(delay * 60_000), frozenset(cancel), share, int(hours * 3_600_000),
    )  # fmt: skip


def _conditions(raw: Any, where: str, problems: list[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        problems.append(f"{where}: conditions must be a table")
        return {}
    conditions: dict[str, Any] = {}
    for name, value in raw.items():
        kind = CONDITIONS.get(name)
        if kind is None:
            problems.append(f"{where}: unknown condition {name!r} (known: {', '.join(CONDITIONS)})")
        elif kind is bool and value is not True:
            problems.append(f"{where}: condition {name} takes true (leave it out otherwise)")
        elif kind is float and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
            problems.append(f"{where}: condition {name} takes a positive number")
        else:
            conditions[name] = value
    return conditions


def _check_template(template: str, where: str, problems: list[str]) -> None:
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        problems.append(f"{where}: action.template: {exc}")
        return
    unknown = sorted(names - TEMPLATE_FIELDS)
    if unknown:
        problems.append(
            f"{where}: action.template uses {unknown} (known: {', '.join(sorted(TEMPLATE_FIELDS))})"
        )


def _zone(value: Any, where: str, problems: list[str]) -> ZoneInfo:
    try:
        return ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"{where}: {value!r} is not a time zone (like Europe/Paris)")
        return ZoneInfo("UTC")


def _quiet_hours(value: Any, problems: list[str]) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, list) and len(value) == 2:
        minutes = [_clock_minutes(v) for v in value]
        if minutes[0] is not None and minutes[1] is not None and minutes[0] != minutes[1]:
            return minutes[0], minutes[1]
    problems.append('quiet_hours must be ["HH:MM", "HH:MM"] (from, until; two different times)')
    return None


def _clock_minutes(value: Any) -> int | None:
    if not isinstance(value, str) or len(value) != 5 or value[2] != ":":
        return None
    hours, minutes = value[:2], value[3:]
    if not (hours.isdigit() and minutes.isdigit()) or int(hours) > 23 or int(minutes) > 59:
        return None
    return int(hours) * 60 + int(minutes)


def _caps(raw: Any, problems: list[str]) -> dict[str, tuple[Cap, ...]]:
    if not isinstance(raw, dict):
        problems.append("[caps] must be a table of channel = [{ count = N, hours = H }, ...]")
        return {}
    caps: dict[str, tuple[Cap, ...]] = {}
    for channel, entries in raw.items():
        if channel not in CHANNELS:
            problems.append(f"caps.{channel}: not a channel ({', '.join(CHANNELS)})")
            continue
        parsed = []
        for entry in entries if isinstance(entries, list) else [None]:
            count = entry.get("count") if isinstance(entry, dict) else None
            hours = entry.get("hours") if isinstance(entry, dict) else None
            if (
                not isinstance(entry, dict)
                or set(entry) != {"count", "hours"}
                or not isinstance(count, int)
                or isinstance(count, bool)
                or count < 1
                or not isinstance(hours, int | float)
                or hours <= 0
            ):
                problems.append(
                    f"caps.{channel}: each cap is {{ count = N (1 or more), hours = H (above 0) }}"
                )
                continue
            parsed.append(Cap(count, float(hours)))
        caps[channel] = tuple(parsed)
    return caps


def _share(value: Any, where: str, problems: list[str]) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        problems.append(f"{where} must be a share from 0 up to (not including) 1")
        return 0.0
    return float(value)


def _positive(value: Any, where: str, problems: list[str]) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        problems.append(f"{where} must be a positive number")
        return 1.0
    return float(value)
