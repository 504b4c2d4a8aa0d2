"""The attribution report: conversions and credited revenue per channel for each model."""

from __future__ import annotations

from typing import Any

from pipeline.config import Settings


def report_queries(db: str) -> dict[str, str]:
    """The SQL behind the report, on the analysts' views."""
    return {
        "credits": f"""
            SELECT channel, model, sum(credit) AS conversions, sum(revenue_credit) AS revenue
            FROM {db}.attribution GROUP BY channel, model ORDER BY channel, model""",
        "totals": f"""
            SELECT count() AS conversions, sum(revenue) AS revenue,
                   uniqExact(person_id) AS customers FROM {db}.conversions""",
        "o2o": f"""
            SELECT o2o_label, count() AS conversions, sum(revenue) AS revenue
            FROM {db}.conversions GROUP BY o2o_label ORDER BY conversions DESC""",
        "dead_letters": f"SELECT reason, count() AS n FROM {db}.dead_letters GROUP BY reason ORDER BY n DESC",
    }


def pivot(rows: list[tuple[Any, ...]], models: list[str], measure: int) -> tuple[list[str], list[list[Any]]]:
    """Channel x model table of one measure (2: conversions, 3: revenue) of credit rows."""
    cells: dict[str, dict[str, float]] = {}
    for row in rows:
        cells.setdefault(row[0], {})[row[1]] = float(row[measure])
    order = sorted(cells, key=lambda ch: -sum(cells[ch].values()))
    digits = 1 if measure == 2 else 0
    table = [
        [channel, *(round(cells[channel].get(model, 0.0), digits) for model in models)] for channel in order
    ]
    return ["channel", *models], table


def build_report(settings: Settings) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """Run the report's queries; returns titled (columns, rows) tables."""
    from pipeline.clickhouse.query_server import query_any

    queries = report_queries(settings.clickhouse_database)
    out: dict[str, tuple[list[str], list[list[Any]]]] = {}
    _cols, credit_rows = query_any(settings, queries["credits"])
    models = [m for m in settings.models if any(r[1] == m for r in credit_rows)]
    out["Credited revenue per channel, by model"] = pivot(list(credit_rows), models, 3)
    out["Credited conversions per channel, by model"] = pivot(list(credit_rows), models, 2)
    for title, key in (
        ("Totals", "totals"),
        ("Online-to-offline split", "o2o"),
        ("Dead letters", "dead_letters"),
    ):
        cols, rows = query_any(settings, queries[key])
        out[title] = (list(cols), [list(r) for r in rows])
    return out
