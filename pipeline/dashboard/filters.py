"""The dashboard's filters: a date range, an attribution model, a store and a channel.

They travel in the page's URL (``?since=2026-11-01&model=linear&store=s1``)
so a view can be shared, and become SQL conditions on the analysts' views.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from urllib.parse import urlencode

from pipeline.clickhouse.format import day_range, sql_string
from pipeline.errors import FatalError

NAME = re.compile(r"^[\w.:@/ -]{1,100}$")
"""What a store id or channel in a URL may look like."""


class FilterError(FatalError):
    """A filter in the URL or on the command line that cannot be used (the message says why)."""


@dataclass(frozen=True)
class Filters:
    """What a page shows: conversions (and visits, decisions, ...) of UTC days since/until, one model."""

    model: str
    since: date | None = None
    until: date | None = None
    store: str = ""
    channel: str = ""

    @classmethod
    def parse(cls, params: Mapping[str, str], models: Sequence[str]) -> Filters:
        """Filters from URL parameters; the first of ``models`` when none is asked for."""
        model = params.get("model", "").strip() or models[0]
        if model not in models:
            raise FilterError(f"unknown model {model!r}; configured: {', '.join(models)}")
        days: dict[str, date | None] = {}
        for key in ("since", "until"):
            text = params.get(key, "").strip()
            try:
                days[key] = date.fromisoformat(text) if text else None
            except ValueError:
                raise FilterError(f"{key}={text!r} is not a YYYY-MM-DD day") from None
        since, until = days["since"], days["until"]
        if since is not None and until is not None and since > until:
            raise FilterError(f"since ({since}) is after until ({until})")
        names = {key: params.get(key, "").strip() for key in ("store", "channel")}
        for key, name in names.items():
            if name and not NAME.match(name):
                raise FilterError(f"{key}={name!r} is not a store id or channel name")
        return cls(model, since, until, names["store"], names["channel"])

    def query(self) -> str:
        """These filters as a URL query string, empty ones left out."""
        values = {
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
            "model": self.model,
            "store": self.store,
            "channel": self.channel,
        }
        text = urlencode({k: v for k, v in values.items() if v})
        return f"?{text}" if text else ""

    def days(self, column: str) -> str:
        """SQL condition: ``column`` (a DateTime) falls on a day in the range (``1``: no range)."""
        return day_range(f"toDate({column})", self.since, self.until)

    def conversions(self, alias: str = "c") -> str:
        """SQL condition on the conversions ``alias``: the days of the range and the store."""
        return f"{self.days(f'{alias}.occurred_at')} AND {self.equals(f'{alias}.store_id', 'store')}"

    def equals(self, column: str, key: str) -> str:
        """SQL condition: ``column`` is the ``store`` or ``channel`` filter (``1``: not filtered)."""
        value = getattr(self, key)
        return f"{column} = {sql_string(value)}" if value else "1"

    def describe(self) -> str:
        """The filters in words, for the page header and the HTML file."""
        parts = [f"model {self.model}"]
        if self.since or self.until:
            parts.append(f"days {self.since or '…'} to {self.until or '…'} (UTC)")
        if self.store:
            parts.append(f"store {self.store}")
        if self.channel:
            parts.append(f"channel {self.channel}")
        return ", ".join(parts)
