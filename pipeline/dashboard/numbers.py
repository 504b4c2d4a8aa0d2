"""Numbers formatted for people: thousands separators, currency, percentages."""

from __future__ import annotations

import math
from typing import Any

SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥"}
"""Currencies written with their symbol; any other code is written before the amount."""


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) or math.isinf(number) else number


def integer(value: Any) -> str:
    """``12345`` -> ``12,345`` (an en dash for no value)."""
    number = _number(value)
    return "\u2013" if number is None else f"{round(number):,}"


def decimal(value: Any, digits: int = 2) -> str:
    """``1234.5`` -> ``1,234.50``."""
    number = _number(value)
    if number is None:
        return "\u2013"
    text = f"{number:,.{digits}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.,") else text  # no "-0.00"


def money(value: Any, currency: str) -> str:
    """``1234.5, EUR`` -> ``€1,234.50``; ``CHF`` -> ``CHF 1,234.50``; negatives as ``-€10.00``."""
    number = _number(value)
    if number is None:
        return "\u2013"
    code = (currency or "").upper()
    amount = decimal(abs(number))
    sign = "-" if number < 0 and amount != "0.00" else ""
    if code in SYMBOLS:
        return f"{sign}{SYMBOLS[code]}{amount}"
    return f"{sign}{code} {amount}".strip() if code else f"{sign}{amount}"


def percent(value: Any) -> str:
    """``12.345`` (already in %) -> ``12.3 %``."""
    number = _number(value)
    return "\u2013" if number is None else f"{decimal(number, 1)} %"


def cell(kind: str, value: Any, currency: str = "") -> str:
    """A table cell of a column ``kind`` (see :class:`~pipeline.dashboard.model.Column`)."""
    if kind == "int":
        return integer(value)
    if kind == "number":
        return decimal(value)
    if kind == "money":
        return money(value, currency)
    if kind == "pct":
        return percent(value)
    if kind == "day":
        return str(value)[:10] if value is not None else "\u2013"
    return "\u2013" if value is None or value == "" else str(value)


def plain(value: Any) -> float:
    """A measure for a chart (None and NaN as 0)."""
    return _number(value) or 0.0
