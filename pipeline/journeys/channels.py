"""The channel of a session: the brief's grouping, first match wins (pure).

The built-in grouping can be extended or overridden by a TOML rules file
(``O2O_CHANNEL_RULES``) that users edit::

    # channels.toml
    search_engines = ["google.", "bing.com", "kagi.com"]   # replaces the built-in list

    [mediums]            # utm_medium -> channel, merged over the built-in map
    newsletter = "email"
    cpc = "paid_search"

    [[rules]]            # tried before the built-in grouping, in file order
    channel = "tv_partner"
    campaign_source = ["tv", "radio"]   # every condition given must match;
    # other conditions: medium, campaign_name, source, type,   # a list is "any of"
    #                   referrer_contains, url_contains        # substrings, case-insensitive

A store visit is always ``store``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.config import read_toml_file
from pipeline.errors import ConfigError
from pipeline.model.contract import Event

SEARCH_ENGINES = (
    "google.", "bing.com", "yahoo.", "duckduckgo.com", "baidu.com", "yandex.", "ecosia.org",
    "qwant.com", "startpage.com", "search.brave.com", "naver.com", "seznam.cz",
)  # fmt: skip

MEDIUM_CHANNELS: dict[str, str] = {
    "cpc": "paid_search",
    "ppc": "paid_search",
    "paid_search": "paid_search",
    "paid_social": "paid_social",
    "social": "organic_social",
    "email": "email",
    "display": "display",
    "banner": "display",
    "cpm": "display",
    "affiliate": "affiliate",
    "push": "push",
    "sms": "sms",
    "qr": "qr",
}
CHANNELS = ("store", *dict.fromkeys(MEDIUM_CHANNELS.values()), "organic_search", "referral", "direct")
# channels a utm_medium decides at once; push, sms and qr also come from app events
_MEDIUM_FIRST = ("paid_search", "paid_social", "organic_social", "email", "display", "affiliate")

# rule condition -> what it matches: an event field (exact, any of) or a substring of a URL
_EXACT_CONDITIONS = ("campaign_source", "medium", "campaign_name", "source", "type")
_SUBSTRING_CONDITIONS = ("referrer_contains", "url_contains")


@dataclass(frozen=True)
class ChannelRule:
    """One user rule: the channel given when every condition matches."""

    channel: str
    conditions: Mapping[str, tuple[str, ...]]

    def matches(self, fields: Mapping[str, str]) -> bool:
        """True when every condition of the rule holds for the event's fields."""
        for name, wanted in self.conditions.items():
            if name in _SUBSTRING_CONDITIONS:
                if not any(w in fields[name] for w in wanted):
                    return False
            elif fields[name] not in wanted:
                return False
        return True


@dataclass(frozen=True)
class ChannelRules:
    """The grouping of sessions into channels: user rules, then the built-in ones."""

    rules: tuple[ChannelRule, ...] = ()
    mediums: Mapping[str, str] = field(default_factory=lambda: dict(MEDIUM_CHANNELS))
    search_engines: tuple[str, ...] = SEARCH_ENGINES

    def classify(self, event: Event, store_visit: bool = False) -> str:
        """The channel of a session that starts with ``event``."""
        if store_visit:
            return "store"
        context = event.get("context") or {}
        campaign = context.get("campaign") or {}
        page = context.get("page") or {}
        medium = str(campaign.get("medium") or "").strip().lower()
        referrer = str(page.get("referrer") or "")
        if self.rules:
            fields = {
                "campaign_source": str(campaign.get("source") or "").strip().lower(),
                "medium": medium,
                "campaign_name": str(campaign.get("name") or "").strip().lower(),
                "source": str(event.get("source") or ""),
                "type": str(event.get("type") or ""),
                "referrer_contains": referrer.lower(),
                "url_contains": str(page.get("url") or "").lower(),
            }
            for rule in self.rules:
                if rule.matches(fields):
                    return rule.channel
        channel = self.mediums.get(medium)
        if channel is not None and (channel in _MEDIUM_FIRST or channel not in CHANNELS):
            return channel
        etype = event.get("type")
        is_app = event.get("source") == "app"
        if channel == "push" or (is_app and etype == "push_opened"):
            return "push"
        if channel == "sms":
            return "sms"
        if channel == "qr" or (is_app and etype == "qr_scanned"):
            return "qr"
        referrer_host = _host(referrer)
        if referrer_host:
            if any(engine in referrer_host for engine in self.search_engines):
                return "organic_search"
            if referrer_host != _host(str(page.get("url") or "")):
                return "referral"
        return "direct"


DEFAULT_RULES = ChannelRules()


def _host(url: str) -> str:
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""
    return host.removeprefix("www.")


def classify(event: Event, store_visit: bool = False) -> str:
    """The channel of a session that starts with ``event``, under the built-in grouping."""
    return DEFAULT_RULES.classify(event, store_visit)


def load_channel_rules(path: Path) -> ChannelRules:
    """Read and validate a channel rules file; :class:`ConfigError` names every problem."""
    data = read_toml_file(path, "channel rules file")
    problems: list[str] = []
    unknown = set(data) - {"rules", "mediums", "search_engines"}
    if unknown:
        problems.append(f"unknown sections {sorted(unknown)} (known: rules, mediums, search_engines)")
    mediums = dict(MEDIUM_CHANNELS)
    raw_mediums = data.get("mediums", {})
    if not isinstance(raw_mediums, dict):
        problems.append("[mediums] must be a table of medium = channel")
    else:
        for medium, channel in raw_mediums.items():
            if not isinstance(channel, str) or not channel:
                problems.append(f"mediums.{medium}: the channel must be a non-empty string")
            else:
                mediums[medium.strip().lower()] = channel
    engines = data.get("search_engines", list(SEARCH_ENGINES))
    if not isinstance(engines, list) or not all(isinstance(e, str) and e for e in engines):
        problems.append("search_engines must be a list of non-empty strings")
        engines = list(SEARCH_ENGINES)
    rules = _parse_rules(data.get("rules", []), problems)
    if problems:
        raise ConfigError(f"channel rules file {path}: " + "; ".join(problems))
    return ChannelRules(tuple(rules), mediums, tuple(e.lower() for e in engines))


def _parse_rules(raw: Any, problems: list[str]) -> list[ChannelRule]:
    if not isinstance(raw, list):
        problems.append("rules must be an array of tables ([[rules]])")
        return []
    known = ("channel", *_EXACT_CONDITIONS, *_SUBSTRING_CONDITIONS)
    rules = []
    for i, entry in enumerate(raw, 1):
        where = f"rules #{i}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be a table")
            continue
        unknown = set(entry) - set(known)
        if unknown:
            problems.append(f"{where}: unknown keys {sorted(unknown)} (known: {', '.join(known)})")
        channel = entry.get("channel")
        if not isinstance(channel, str) or not channel:
            problems.append(f'{where}: needs channel = "name"')
            continue
        conditions: dict[str, tuple[str, ...]] = {}
        for name in known[1:]:
            if name not in entry:
                continue
            values = _strings(entry[name])
            if values is None:
                problems.append(f"{where}: {name} must be a string or a list of strings")
                continue
            conditions[name] = tuple(v if name in ("source", "type") else v.lower() for v in values)
        if not conditions:
            problems.append(f"{where}: needs at least one condition ({', '.join(known[1:])})")
            continue
        rules.append(ChannelRule(channel, conditions))
    return rules


def _strings(value: Any) -> Sequence[str] | None:
    if isinstance(value, str):
        return [value.strip()]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value]
    return None
