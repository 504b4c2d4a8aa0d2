"""The attribution report: every model side by side per channel, and the online-to-offline split.

All credit tables come from one query on the ``o2o_split`` view (migration
0009), so they agree with each other and with what analysts query:

* per channel (and currency, for amounts), by model: credited revenue,
  credited revenue net of returns, credited conversions;
* the O2O split, by model: credited revenue of in-store sales (conversion
  source ``pos``/``geofence``) and of online orders (``web``/``app``), split
  by the world of the credited touch (a store visit, channel ``store``, or a
  digital session), as amounts and as shares of the conversion world;
* in-store revenue credited to each online channel, by model.

Then conversions per O2O label (from ``conversions``, model-independent),
totals and dead letters. Amounts are never added across currencies: every
table with revenue has a ``currency`` column. :func:`build_tables` runs the
queries; the rest is pure and unit-tested.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from operator import attrgetter
from typing import Any, NamedTuple

from pipeline.clickhouse.format import day_range, sql_string
from pipeline.config import Settings

TITLES: dict[str, str] = {
    "revenue": "Credited revenue per channel, by model",
    "net_revenue": "Credited revenue net of returns per channel, by model",
    "conversions": "Credited conversions per channel, by model",
    "o2o_split": "O2O split: credited revenue by conversion world and touch world, by model",
    "o2o_split_share": "O2O split: share of the conversion world's credited revenue (%), by model",
    "instore_by_channel": "In-store revenue credited to online channels, by model",
    "o2o_labels": "Conversions per O2O label",
    "totals": "Totals",
    "dead_letters": "Dead letters",
    "activation_lift": "Activation lift: persons messaged against the holdout, 7 days after a decision",
}
"""Every table of the report, in print order: key (also the JSON key) -> title."""

CREDIT_TABLES = frozenset(list(TITLES)[:6])
"""The tables built from the ``o2o_split`` view."""

QUERY_COLUMNS: dict[str, tuple[str, ...]] = {
    "o2o_labels": (
        "o2o_label",
        "currency",
        "conversions",
        "revenue",
        "avg_path_length",
        "avg_days_to_convert",
    ),
    "totals": ("currency", "conversions", "revenue", "customers", "unattributed"),
    "dead_letters": ("reason", "n"),
    "activation_lift": (
        "rule",
        "sale",
        "messaged",
        "held_out",
        "messaged_pct",
        "held_out_pct",
        "lift_pts",
        "lift_low_pts",
        "lift_high_pts",
        "messaged_revenue_per_person",
        "held_out_revenue_per_person",
    ),
}
"""The columns of the tables read straight from a query."""

SPLIT_ORDER = (("offline", "online"), ("offline", "store"), ("online", "store"), ("online", "online"))
"""(conversion_world, touch_world) rows of the split: in-store sales first, the O2O answers first."""

REVENUE_DIGITS = 2
CREDIT_DIGITS = 2
SHARE_DIGITS = 1
DAYS_DIGITS = 2

Table = tuple[list[str], list[list[Any]]]


class SplitRow(NamedTuple):
    """One row of the split query: credits of one model, conversion world, touch world, channel, currency."""

    model: str
    conversion_world: str
    touch_world: str
    channel: str
    conversions: float
    revenue: float
    net_revenue: float
    currency: str = ""


@dataclass(frozen=True)
class ReportOptions:
    """What to report on: some models only (empty: all), conversions of UTC days since/until (inclusive)."""

    models: tuple[str, ...] = ()
    since: date | None = None
    until: date | None = None

    def day_filter(self, day: str) -> str:
        """SQL condition on the day expression ``day`` (``1`` when there are no bounds)."""
        return day_range(day, self.since, self.until)

    def model_filter(self) -> str:
        """SQL condition on ``model`` (``1`` for every model)."""
        if not self.models:
            return "1"
        return "model IN (" + ", ".join(sql_string(m) for m in self.models) + ")"


def report_queries(db: str, options: ReportOptions | None = None) -> dict[str, str]:
    """The SQL behind the report, on the analysts' views (``split`` on ``o2o_split``)."""
    opts = options or ReportOptions()
    conversion_days = opts.day_filter("toDate(c.occurred_at)")
    return {
        "split": f"""
            SELECT model, conversion_world, touch_world, channel,
                   sum(conversions) AS conversions, sum(revenue) AS revenue, sum(net_revenue) AS net_revenue,
                   currency
            FROM {db}.o2o_split
            WHERE {opts.day_filter("day")} AND {opts.model_filter()}
            GROUP BY model, conversion_world, touch_world, channel, currency""",
        "o2o_labels": f"""
            SELECT c.o2o_label AS o2o_label, c.currency AS currency, count() AS conversions,
                   sum(c.revenue) AS revenue,
                   avg(c.path_length) AS avg_path_length,
                   avgIf(toUnixTimestamp64Milli(c.occurred_at) - toUnixTimestamp64Milli(f.first_touch_at),
                         f.conversion_id != '') / 86400000 AS avg_days_to_convert
            FROM {db}.conversions AS c
            LEFT JOIN (
                SELECT conversion_id, min(touch_at) AS first_touch_at
                FROM {db}.attribution GROUP BY conversion_id
            ) AS f ON f.conversion_id = c.conversion_id
            WHERE {conversion_days}
            GROUP BY o2o_label, currency ORDER BY conversions DESC, o2o_label, currency""",
        "totals": f"""
            SELECT c.currency AS currency, count() AS conversions, sum(c.revenue) AS revenue,
                   uniqExact(c.person_id) AS customers, countIf(c.path_length = 0) AS unattributed
            FROM {db}.conversions AS c WHERE {conversion_days} GROUP BY currency ORDER BY currency""",
        "dead_letters": f"""
            SELECT reason, count() AS n FROM {db}.dead_letters
            WHERE {opts.day_filter("toDate(received_at)")} GROUP BY reason ORDER BY n DESC, reason""",
        "activation_lift": f"""
            SELECT rule, sale, messaged, held_out,
                   round(100 * messaged_rate, 1) AS messaged_pct,
                   round(100 * held_out_rate, 1) AS held_out_pct,
                   round(100 * lift, 1) AS lift_pts, round(100 * lift_low, 1) AS lift_low_pts,
                   round(100 * lift_high, 1) AS lift_high_pts,
                   {_per_currency("messaged_revenue_per_person")} AS messaged_revenue_per_person,
                   {_per_currency("held_out_revenue_per_person")} AS held_out_revenue_per_person
            FROM {db}.activation_lift ORDER BY rule, indexOf(['all', 'online', 'store'], sale)""",
    }


def _per_currency(column: str) -> str:
    """SQL: a currency -> amount map as text, ``EUR 25.00; USD 3.10`` (never summed across currencies)."""
    return (f"arrayStringConcat(arrayMap((c, v) -> concat(c, ' ', toString(round(v, {REVENUE_DIGITS}))), "
            f"mapKeys({column}), mapValues({column})), '; ')")  # fmt: skip


def _number(value: Any) -> float:
    number = float(value) if value is not None else 0.0
    return 0.0 if math.isnan(number) else number


def _round(value: float, digits: int) -> float:
    return round(value, digits) + 0.0  # + 0.0: no "-0.0"


def split_rows(rows: Iterable[Sequence[Any]]) -> list[SplitRow]:
    """Rows of the ``split`` query as :class:`SplitRow` (None and NaN measures as 0)."""
    return [
        SplitRow(
            str(r[0]),
            str(r[1]),
            str(r[2]),
            str(r[3]),
            _number(r[4]),
            _number(r[5]),
            _number(r[6]),
            str(r[7]) if len(r) > 7 else "",
        )
        for r in rows
    ]


def report_models(rows: Sequence[SplitRow], configured: Sequence[str], requested: Sequence[str]) -> list[str]:
    """Model columns: the requested ones; else those with credits (configured first); else the configured."""
    if requested:
        return list(dict.fromkeys(requested))
    present = {r.model for r in rows}
    if not present:
        return list(configured)
    return [m for m in configured if m in present] + sorted(present - set(configured))


def aggregate(
    rows: Iterable[SplitRow], key: Callable[[SplitRow], Any], measure: Callable[[SplitRow], float]
) -> dict[Any, dict[str, float]]:
    """Sum of ``measure`` per ``key`` of a row and model: {key: {model: total}}."""
    cells: dict[Any, dict[str, float]] = {}
    for row in rows:
        per_model = cells.setdefault(key(row), {})
        per_model[row.model] = per_model.get(row.model, 0.0) + measure(row)
    return cells


def _parts(key: Any) -> tuple[Any, ...]:
    return key if isinstance(key, tuple) else (key,)


def pivot(
    cells: dict[Any, dict[str, float]],
    models: Sequence[str],
    digits: int,
    labels: Sequence[str] = ("channel",),
) -> Table:
    """{row key: {model: value}} as a table, one column per model.

    A key is a name or a tuple (name, currency, ...) filling the ``labels``
    columns; rows go by the key's later parts (the currency), then biggest
    total first, then name.
    """

    def order(key: Any) -> tuple[Any, ...]:
        parts = _parts(key)
        return (parts[1:], -sum(cells[key].get(m, 0.0) for m in models), parts[0])

    rows = [
        [*_parts(k), *(_round(cells[k].get(m, 0.0), digits) for m in models)]
        for k in sorted(cells, key=order)
    ]
    return [*labels, *models], rows


def channel_tables(rows: Sequence[SplitRow], models: Sequence[str]) -> dict[str, Table]:
    """Per channel, every model side by side.

    ``revenue``, ``net_revenue`` and ``conversions`` (credited), and
    ``instore_by_channel``: revenue of in-store sales credited to online channels.
    """
    by_channel = attrgetter("channel")
    money = attrgetter("channel", "currency")
    labels = ("channel", "currency")
    instore = [r for r in rows if (r.conversion_world, r.touch_world) == ("offline", "online")]
    return {
        "revenue": pivot(aggregate(rows, money, lambda r: r.revenue), models, REVENUE_DIGITS, labels),
        "net_revenue": pivot(aggregate(rows, money, lambda r: r.net_revenue), models, REVENUE_DIGITS, labels),
        "conversions": pivot(aggregate(rows, by_channel, lambda r: r.conversions), models, CREDIT_DIGITS),
        "instore_by_channel": pivot(
            aggregate(instore, money, lambda r: r.revenue), models, REVENUE_DIGITS, labels
        ),
    }


def split_tables(rows: Sequence[SplitRow], models: Sequence[str]) -> dict[str, Table]:
    """The O2O split by model: credited revenue (``o2o_split``) and its share in % (``o2o_split_share``).

    Per currency (``""`` when there are no credits at all), one row per
    (conversion_world, touch_world) of :data:`SPLIT_ORDER`, zeros included. A
    share is of the credited revenue of the row's conversion world in that
    currency under that model (the two rows of a world add up to 100); None
    when that world has no credited revenue.
    """
    cells = aggregate(rows, lambda r: (r.conversion_world, r.touch_world, r.currency), lambda r: r.revenue)
    world_totals = aggregate(rows, lambda r: (r.conversion_world, r.currency), lambda r: r.revenue)
    columns = ["conversion_world", "touch_world", "currency", *models]
    amounts: list[list[Any]] = []
    shares: list[list[Any]] = []
    for currency in sorted({r.currency for r in rows}) or [""]:
        for world, touch in SPLIT_ORDER:
            values = [cells.get((world, touch, currency), {}).get(m, 0.0) for m in models]
            totals = [world_totals.get((world, currency), {}).get(m, 0.0) for m in models]
            amounts.append([world, touch, currency, *(_round(v, REVENUE_DIGITS) for v in values)])
            percents = [
                _round(100.0 * v / t, SHARE_DIGITS) if t > 0 else None
                for v, t in zip(values, totals, strict=True)
            ]
            shares.append([world, touch, currency, *percents])
    return {"o2o_split": (columns, amounts), "o2o_split_share": (list(columns), shares)}


def label_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """The ``o2o_labels`` query's rows, averages rounded (None when no conversion had a path)."""
    out: list[list[Any]] = []
    for row in rows:
        cells = list(row)
        for index, name in enumerate(columns):
            if name.startswith("avg_"):
                value = cells[index]
                number = None if value is None else float(value)
                cells[index] = None if number is None or math.isnan(number) else _round(number, DAYS_DIGITS)
            elif name == "revenue":
                cells[index] = _round(_number(cells[index]), REVENUE_DIGITS)
        out.append(cells)
    return list(columns), out


def assemble(
    split: Sequence[SplitRow],
    models: Sequence[str],
    others: dict[str, Table],
    only: Sequence[str] = (),
) -> dict[str, Table]:
    """Every table of the report in :data:`TITLES` order (only the ``only`` keys when given)."""
    tables = {**channel_tables(split, models), **split_tables(split, models), **others}
    keys = [k for k in TITLES if (not only or k in only) and k in tables]
    return {k: tables[k] for k in keys}


def build_tables(
    settings: Settings, options: ReportOptions | None = None, only: Sequence[str] = ()
) -> dict[str, Table]:
    """Run the report's queries; returns the tables by key (see :data:`TITLES`)."""
    from pipeline.clickhouse.client import QueryError
    from pipeline.clickhouse.query_server import query_any

    opts = options or ReportOptions()
    db = settings.clickhouse_database
    queries = report_queries(db, opts)
    split: list[SplitRow] = []
    if not only or set(only) & CREDIT_TABLES:
        try:
            _cols, raw = query_any(settings, queries["split"])
        except QueryError as exc:
            if "o2o_split" in str(exc) and "UNKNOWN_TABLE" in f"{exc.name} {exc}":
                raise QueryError(
                    f"{db}.o2o_split does not exist: run `o2o init` to apply migration 0009"
                ) from exc
            raise
        split = split_rows(raw)
    models = report_models(split, settings.models, opts.models)
    others: dict[str, Table] = {}
    for key in ("o2o_labels", "totals", "dead_letters", "activation_lift"):
        if only and key not in only:
            continue
        cols, rows = query_any(settings, queries[key])
        if key == "activation_lift" and not rows:
            continue  # no activation decisions: no section
        cols = cols or list(QUERY_COLUMNS[key])  # an empty result may come without column names
        others[key] = (
            label_table(cols, rows) if key == "o2o_labels" else (list(cols), [list(r) for r in rows])
        )
    return assemble(split, models, others, only)


def build_report(settings: Settings, options: ReportOptions | None = None) -> dict[str, Table]:
    """The report as titled (columns, rows) tables, in print order."""
    return {TITLES[key]: table for key, table in build_tables(settings, options).items()}


def render_report(tables: dict[str, Table], fmt: str, width: int | None = None) -> str:
    """The tables (by key) as text: titled rich tables, ``# key`` headed TSV blocks, or one JSON object.

    JSON: ``{"<key>": [{"<column>": value, ...}, ...], ...}``.
    """
    from pipeline.clickhouse.format import dumps, render, render_json

    if fmt == "json":
        parts = [f"{dumps(key).decode()}: {render_json(cols, rows)}" for key, (cols, rows) in tables.items()]
        return "{\n" + ",\n".join(parts) + "\n}" if parts else "{}"
    blocks = []
    for key, (cols, rows) in tables.items():
        if fmt == "table":
            blocks.append(f"{TITLES.get(key, key)}\n{render(cols, rows, fmt, width)}")
        else:
            blocks.append(f"# {key}\n{render(cols, rows, fmt)}")
    return "\n\n".join(blocks)
