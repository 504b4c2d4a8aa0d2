"""SQL pieces the dashboard's pages share."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.clickhouse.format import sql_string

IN_STORE = "c.source IN ('pos', 'geofence')"
"""SQL: the conversion ``c`` is a sale in a store (the others are web and app orders)."""


def per_model(models: Sequence[str], measure: str) -> str:
    """SQL: one column per model, named after it, summing ``measure`` over that model's rows."""
    return ", ".join(f"sumIf({measure}, model = {sql_string(m)}) AS `{m}`" for m in models)
