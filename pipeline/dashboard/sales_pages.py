"""The sales pages of the dashboard: overview and attribution.

Each page is :class:`~pipeline.dashboard.model.Section` queries on the
analysts' views (``{db}`` for the database). Revenue is never added across
currencies: every query that sums revenue groups by ``currency``, and charts
draw one panel per currency.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.clickhouse.format import sql_string
from pipeline.dashboard.filters import Filters
from pipeline.dashboard.model import Chart, Column, Page, Section
from pipeline.dashboard.sql import IN_STORE, per_model

PATHS_SHOWN = 12


def overview(f: Filters) -> Page:
    """Revenue online and in store, the O2O split under the chosen model, fulfillment, the trend by day."""
    world = f"if({IN_STORE}, 'in store', 'online')"
    return Page(
        "overview",
        "Overview",
        "Revenue online and in store, and how each side led to the other's sales.",
        (
            Section(
                "sales",
                "Sales online and in store",
                f"""SELECT {world} AS world, c.currency AS currency, count() AS conversions,
                       sum(c.revenue) AS revenue, uniqExact(c.person_id) AS customers
                FROM {{db}}.conversions AS c WHERE {f.conversions()}
                GROUP BY world, currency ORDER BY currency, world""",
                (
                    Column("world", "Sold"),
                    Column("currency", "Currency"),
                    Column("conversions", "Sales", "int"),
                    Column("revenue", "Revenue", "money"),
                    Column("customers", "Customers", "int"),
                ),
                Chart("bars", ("world",), ("revenue",), panels="currency"),
                filters=("since", "until", "store"),
            ),
            Section(
                "o2o_split",
                f"O2O split: credited revenue by sale and touch ({f.model})",
                f"""SELECT {world} AS sale, if(a.channel = 'store', 'store visit', 'online touch') AS touch,
                       c.currency AS currency, sum(a.credit) AS credited_sales,
                       sum(a.revenue_credit) AS credited_revenue,
                       100 * credited_revenue
                           / sum(credited_revenue) OVER (PARTITION BY sale, currency) AS share
                FROM {{db}}.attribution AS a INNER JOIN {{db}}.conversions AS c
                    ON c.conversion_id = a.conversion_id
                WHERE a.model = {sql_string(f.model)} AND {f.conversions()}
                GROUP BY sale, touch, currency ORDER BY currency, sale, touch""",
                (
                    Column("sale", "Sale"),
                    Column("touch", "Credited touch"),
                    Column("currency", "Currency"),
                    Column("credited_sales", "Credited sales", "number"),
                    Column("credited_revenue", "Credited revenue", "money"),
                    Column("share", "Share of the sale's revenue", "pct"),
                ),
                Chart("bars", ("sale", "touch"), ("credited_revenue",), panels="currency"),
                note="An in-store sale credited to an online touch is online's influence on the store, and "
                "an online order credited to a store visit the store's influence online.",
                filters=("since", "until", "store", "model"),
            ),
            Section(
                "fulfillment",
                "Online orders by fulfillment, and those picked up in store",
                f"""SELECT if(c.fulfillment != '', c.fulfillment, if(e.said = '', 'not said', e.said)) AS way,
                       c.currency AS currency, count() AS orders, sum(c.revenue) AS revenue,
                       100 * orders / sum(orders) OVER (PARTITION BY currency) AS share,
                       sum(k.picked_up) AS picked_up,
                       100 * picked_up / sum(orders) OVER (PARTITION BY currency) AS picked_up_share
                FROM {{db}}.conversions AS c
                LEFT JOIN (SELECT order_id, picked_up FROM {{db}}.click_and_collect) AS k
                    ON k.order_id = c.order_id
                LEFT JOIN (
                    SELECT event_id, JSONExtractString(properties, 'fulfillment') AS said
                    FROM {{db}}.events WHERE type = 'order_completed'
                ) AS e ON e.event_id = c.event_id
                WHERE c.kind = 'order' AND {f.days("c.occurred_at")}
                GROUP BY way, currency ORDER BY currency, orders DESC, way""",
                (
                    Column("way", "Fulfillment"),
                    Column("currency", "Currency"),
                    Column("orders", "Orders", "int"),
                    Column("revenue", "Revenue", "money"),
                    Column("share", "Share of online orders", "pct"),
                    Column("picked_up", "Picked up in store", "int"),
                    Column("picked_up_share", "Picked up, share of online orders", "pct"),
                ),
                Chart("bars", ("way",), ("orders", "picked_up"), panels="currency"),
                note="Click and collect per store, with time to pickup and upsells: the Stores page. "
                "Orders stored before migration 0020 take their fulfillment from the order event.",
            ),
            Section(
                "trend",
                "Revenue by day",
                f"""SELECT toDate(c.occurred_at) AS day, c.currency AS currency,
                       sumIf(c.revenue, NOT {IN_STORE}) AS online, sumIf(c.revenue, {IN_STORE}) AS in_store
                FROM {{db}}.conversions AS c WHERE {f.conversions()}
                GROUP BY day, currency ORDER BY currency, day""",
                (
                    Column("day", "Day", "day"),
                    Column("currency", "Currency"),
                    Column("online", "Online", "money"),
                    Column("in_store", "In store", "money"),
                ),
                Chart("lines", ("day",), ("online", "in_store"), panels="currency"),
                filters=("since", "until", "store"),
            ),
        ),
    )


def attribution(f: Filters, models: Sequence[str]) -> Page:
    """Every model side by side per channel, the data-driven models' weights, the common paths."""
    return Page(
        "attribution",
        "Attribution",
        "Credited revenue under every model, and the paths that lead to sales.",
        (
            Section(
                "by_model",
                "Credited revenue per channel, every model",
                f"""SELECT a.channel AS channel, c.currency AS currency,
                       {per_model(models, "a.revenue_credit")}
                FROM {{db}}.attribution AS a INNER JOIN {{db}}.conversions AS c
                    ON c.conversion_id = a.conversion_id
                WHERE {f.conversions()} AND {f.equals("a.channel", "channel")}
                GROUP BY channel, currency ORDER BY currency, `{models[0]}` DESC, channel""",
                (
                    Column("channel", "Channel"),
                    Column("currency", "Currency"),
                    *(Column(m, m, "money") for m in models),
                ),
                Chart("bars", ("channel",), tuple(models), panels="currency"),
                filters=("since", "until", "store", "channel"),
            ),
            Section(
                "weights",
                "Channel weights of the latest Markov and Shapley fits",
                """SELECT kind, channel, weight, model_version, fitted_at
               FROM {db}.attribution_model_weights WHERE latest ORDER BY kind, weight DESC, channel""",
                (
                    Column("kind", "Model"),
                    Column("channel", "Channel"),
                    Column("weight", "Weight", "number"),
                    Column("model_version", "Fit"),
                    Column("fitted_at", "Fitted at"),
                ),
                Chart("bars", ("channel",), ("weight",), panels="kind"),
                note="Fits come from `o2o attribution fit`; none yet means the rule models only.",
                filters=(),
            ),
            Section(
                "paths",
                f"The {PATHS_SHOWN} most common paths to a sale",
                f"""SELECT p.path AS path, if({IN_STORE}, 'purchase in store', 'order online') AS sale,
                       c.o2o_label AS o2o_label, c.currency AS currency,
                       count() AS conversions, sum(c.revenue) AS revenue
                FROM {{db}}.conversion_paths AS p INNER JOIN {{db}}.conversions AS c
                    ON c.conversion_id = p.conversion_id
                WHERE {f.conversions()}
                GROUP BY path, sale, o2o_label, currency ORDER BY conversions DESC, path
                    LIMIT {PATHS_SHOWN}""",
                (
                    Column("path", "Touches"),
                    Column("sale", "Sale"),
                    Column("o2o_label", "O2O label"),
                    Column("currency", "Currency"),
                    Column("conversions", "Sales", "int"),
                    Column("revenue", "Revenue", "money"),
                ),
                Chart("flow", ("path",), ("conversions",), end="sale", panels="currency"),
                filters=("since", "until", "store"),
            ),
        ),
    )
