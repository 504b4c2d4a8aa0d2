"""Rendering query results for people and tools: ``table`` (rich), ``tsv`` (ClickHouse-style), ``json``.

:func:`jsonable` turns ClickHouse values (datetimes, Decimals, UUIDs, ...)
into plain JSON values; the query server and :func:`render` share it so a
result looks the same whichever way it was fetched.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import shutil
from collections.abc import Mapping, Sequence
from decimal import Decimal
from enum import Enum
from typing import Any

import orjson
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

FORMATS = ("table", "tsv", "json")
FLOAT_DECIMALS = 4
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1
_TSV_ESCAPES = str.maketrans(
    {
        "\\": "\\\\",
        "\t": "\\t",
        "\n": "\\n",
        "\r": "\\r",
        "\0": "\\0",
        "\b": "\\b",
        "\f": "\\f",
        "'": "\\'",
    }
)


def _datetime_text(value: dt.datetime | dt.time) -> str:
    if not value.microsecond:
        return value.isoformat(timespec="seconds")
    if value.microsecond % 1000 == 0:
        return value.isoformat(timespec="milliseconds")
    return value.isoformat()


def sql_string(value: str) -> str:
    """``value`` as a quoted ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def day_range(day: str, since: dt.date | None, until: dt.date | None) -> str:
    """SQL condition: the Date expression ``day`` is within since..until, inclusive (``1``: no bounds)."""
    conditions = []
    if since is not None:
        conditions.append(f"{day} >= toDate('{since.isoformat()}')")
    if until is not None:
        conditions.append(f"{day} <= toDate('{until.isoformat()}')")
    return " AND ".join(conditions) or "1"


def jsonable(value: Any) -> Any:
    """``value`` as str/int/float/bool/None/list/dict: datetimes to ISO text, Decimal to float, ..."""
    if value is None or isinstance(value, (str, bool, float)):
        return value
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _UINT64_MAX else str(value)  # JSON readers stop at 64 bits
    if isinstance(value, (dt.datetime, dt.time)):
        return _datetime_text(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, Mapping):
        return {str(jsonable(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return str(value)  # UUID, IPv4Address, timedelta, ...


def jsonable_rows(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Every cell of ``rows`` through :func:`jsonable`."""
    return [tuple(jsonable(cell) for cell in row) for row in rows]


def orjson_default(value: Any) -> Any:
    """orjson ``default=`` hook for the types orjson does not serialize itself."""
    converted = jsonable(value)
    if converted is value:
        raise TypeError(f"cannot serialize {type(value).__name__}")
    return converted


def dumps(value: Any) -> bytes:
    """orjson bytes of ``value``, ClickHouse types included."""
    return orjson.dumps(value, default=orjson_default, option=orjson.OPT_NON_STR_KEYS)


def format_float(value: float) -> str:
    """A float for people: at most four decimals, no trailing zeros."""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    text = f"{value:.{FLOAT_DECIMALS}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _cell_text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, Decimal):
        return format_float(float(value))
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, set, frozenset, Mapping)):
        return dumps(jsonable(value)).decode()
    plain = jsonable(value)
    return plain if isinstance(plain, str) else str(plain)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def render_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], width: int | None = None) -> str:
    """A rich table as plain text (no colours); numeric columns right-aligned."""
    table = Table(box=box.SIMPLE_HEAD, caption=f"{len(rows)} row{'' if len(rows) == 1 else 's'}")
    for index, name in enumerate(columns):
        values = [row[index] for row in rows if row[index] is not None]
        numeric = bool(values) and all(_is_number(v) for v in values)
        table.add_column(Text(name), justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        cells = [Text(_cell_text(cell), style="dim" if cell is None else "") for cell in row]
        table.add_row(*cells)
    if width is None:
        width = max(80, shutil.get_terminal_size(fallback=(120, 24)).columns)
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False, highlight=False)
    console.print(table)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()).strip("\n")


def _tsv_field(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return _cell_text(value).translate(_TSV_ESCAPES)


def render_tsv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """ClickHouse ``TSVWithNames``: a header line, then one line per row, ``\\t``/``\\n``/``\\\\`` escaped."""
    lines = ["\t".join(name.translate(_TSV_ESCAPES) for name in columns)]
    lines.extend("\t".join(_tsv_field(cell) for cell in row) for row in rows)
    return "\n".join(lines)


def render_json(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A JSON array of one object per row (column name -> value), one row per line."""
    if not rows:
        return "[]"
    objects = (dumps({name: jsonable(cell) for name, cell in zip(columns, row, strict=True)}) for row in rows)
    return "[\n" + ",\n".join(obj.decode() for obj in objects) + "\n]"


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str, width: int | None = None) -> str:
    """``rows`` under ``columns`` as ``table``, ``tsv`` or ``json`` text (no trailing newline).

    ``width`` applies to ``table`` only (default: the terminal's width, at least 80).
    """
    if fmt == "table":
        return render_table(columns, rows, width)
    if fmt == "tsv":
        return render_tsv(columns, rows)
    if fmt == "json":
        return render_json(columns, rows)
    raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
