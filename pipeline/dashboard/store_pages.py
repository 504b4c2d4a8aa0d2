"""The dashboard's stores page: visits, sales, online influence, click and collect, coupons, staff.

Built on the KPI views of migration 0018 (``store_visits_daily``,
``store_influence``, ``click_and_collect``, ``coupons``, ``staff_performance``);
amounts per currency.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.clickhouse.format import sql_string
from pipeline.dashboard.filters import Filters
from pipeline.dashboard.model import Chart, Column, Page, Section
from pipeline.dashboard.sql import IN_STORE, per_model

NOT_COLLECTED_DAYS = 7
"""A click-and-collect order waiting this many days counts as not collected."""


def stores(f: Filters, models: Sequence[str]) -> Page:
    """Per store: visits to purchase, sales, online influence, click and collect, coupons and staff."""
    store = f.equals("store_id", "store")
    return Page("stores", "Stores", "What each store sells, converts and influences online.", (
        Section(
            "visits", "Store visits to purchase",
            f"""SELECT store_id, sum(visits) AS visits, sum(visits_with_purchase) AS visits_with_purchase,
                       100 * visits_with_purchase / visits AS conversion_rate,
                       sum(first_visits) AS first_visits, sum(returning_visits) AS returning_visits
                FROM {{db}}.store_visits_daily WHERE {f.days('day')} AND {store}
                GROUP BY store_id ORDER BY visits DESC, store_id""",
            (Column("store_id", "Store"), Column("visits", "Visits", "int"),
             Column("visits_with_purchase", "With a purchase", "int"),
             Column("conversion_rate", "Conversion", "pct"),
             Column("first_visits", "First visits", "int"), Column("returning_visits", "Returning", "int")),
            Chart("bars", ("store_id",), ("visits", "visits_with_purchase")),
            note="Visits are geofence and till sessions; a first visit is a person's first to that store.",
            filters=("since", "until", "store"),
        ),
        Section(
            "store_sales", "Sales in store",
            f"""SELECT c.store_id AS store_id, c.currency AS currency, count() AS sales,
                       sum(c.revenue) AS revenue, uniqExact(c.person_id) AS customers
                FROM {{db}}.conversions AS c
                WHERE {IN_STORE} AND {f.conversions()}
                GROUP BY store_id, currency ORDER BY currency, revenue DESC, store_id""",
            (Column("store_id", "Store"), Column("currency", "Currency"), Column("sales", "Sales", "int"),
             Column("revenue", "Revenue", "money"), Column("customers", "Customers", "int")),
            Chart("bars", ("store_id",), ("revenue",), panels="currency"),
            filters=("since", "until", "store"),
        ),
        Section(
            "influence", "Online sales a store influenced: revenue credited to its visits, every model",
            f"""SELECT store_id, currency, max(online_orders) AS online_orders,
                       {per_model(models, 'credited_revenue')}
                FROM (
                    SELECT store_id, currency, model, sum(online_orders) AS online_orders,
                           sum(credited_revenue) AS credited_revenue
                    FROM {{db}}.store_influence WHERE {f.days('day')} AND {store}
                    GROUP BY store_id, currency, model
                )
                GROUP BY store_id, currency ORDER BY currency, online_orders DESC, store_id""",
            (Column("store_id", "Store"), Column("currency", "Currency"),
             Column("online_orders", "Online orders after a visit", "int"),
             *(Column(m, m, "money") for m in models)),
            Chart("bars", ("store_id",), tuple(models), panels="currency"),
            note="Web and app orders whose path holds a visit to the store, and what each model credits "
            "to those visits.",
            filters=("since", "until", "store"),
        ),
        Section(
            "click_and_collect", "Click and collect",
            f"""SELECT store_id, currency, count() AS orders, sum(picked_up) AS collected,
                       100 * collected / orders AS collected_pct,
                       quantileIf(0.5)(hours_to_pickup, picked_up = 1) AS median_hours_to_pickup,
                       countIf(picked_up = 0 AND days_waiting >= {NOT_COLLECTED_DAYS}) AS not_collected,
                       countIf(upsell_revenue > 0) AS upsells,
                       sumIf(upsell_revenue, upsell_currency IN (currency, '')) AS upsell_total,
                       100 * upsells / collected AS attach_rate
                FROM {{db}}.click_and_collect WHERE {f.days('ordered_at')} AND {store}
                GROUP BY store_id, currency ORDER BY currency, orders DESC, store_id""",
            (Column("store_id", "Store"), Column("currency", "Currency"), Column("orders", "Orders", "int"),
             Column("collected", "Picked up", "int"), Column("collected_pct", "Share picked up", "pct"),
             Column("median_hours_to_pickup", "Hours to pickup (median)", "number"),
             Column("not_collected", f"Waiting {NOT_COLLECTED_DAYS}+ days", "int"),
             Column("upsells", "Upsells", "int"), Column("upsell_total", "Upsell revenue", "money"),
             Column("attach_rate", "Attach rate", "pct")),
            Chart("bars", ("store_id",), ("orders", "collected", "upsells"), panels="currency"),
            note="Online orders to collect in store; the upsell is what the customer bought on top at "
            "the pickup, the attach rate the share of pickups with one. The store of an order not "
            "picked up is the one it names, if any.",
            filters=("since", "until", "store"),
        ),
        Section(
            "coupons", "Coupons by claim channel",
            f"""SELECT claim_channel, count() AS claimed, sum(redeemed) AS redeemed_count,
                       100 * redeemed_count / claimed AS redemption_rate,
                       quantileIf(0.5)(hours_to_redeem, redeemed = 1) AS median_hours_to_redeem
                FROM {{db}}.coupons WHERE {f.days('claimed_at')}
                GROUP BY claim_channel ORDER BY claimed DESC, claim_channel""",
            (Column("claim_channel", "Claimed through"), Column("claimed", "Claimed", "int"),
             Column("redeemed_count", "Redeemed", "int"), Column("redemption_rate", "Redemption rate", "pct"),
             Column("median_hours_to_redeem", "Hours to redeem (median)", "number")),
            Chart("bars", ("claim_channel",), ("claimed", "redeemed_count")),
            note="Coupons claimed in the chosen days, and how many of them were redeemed since.",
            filters=("since", "until"),
        ),
        Section(
            "coupon_redemptions", "Coupon redemptions by store",
            f"""SELECT if(redeemed_store_id = '', 'online', redeemed_store_id) AS store_id, currency,
                       count() AS redeemed_count, sum(revenue) AS revenue,
                       quantile(0.5)(hours_to_redeem) AS median_hours_to_redeem
                FROM {{db}}.coupons
                WHERE redeemed = 1 AND {f.days('redeemed_at')} AND {f.equals('redeemed_store_id', 'store')}
                GROUP BY store_id, currency ORDER BY currency, redeemed_count DESC, store_id""",
            (Column("store_id", "Redeemed in"), Column("currency", "Currency"),
             Column("redeemed_count", "Redeemed", "int"), Column("revenue", "Revenue", "money"),
             Column("median_hours_to_redeem", "Hours to redeem (median)", "number")),
            Chart("bars", ("store_id",), ("revenue",), panels="currency"),
            filters=("since", "until", "store"),
        ),
        Section(
            "staff", "Staff: sales, upsells and returns, and in-store revenue credited online",
            f"""SELECT p.store_id AS store_id, p.staff_id AS staff_id, p.currency AS currency,
                       sum(p.sales) AS sales, sum(p.sales_revenue) AS sales_revenue,
                       sum(p.pickups) AS pickups, sum(p.upsells) AS upsells,
                       sum(p.upsell_revenue) AS upsell_revenue, sum(p.returns) AS returns,
                       sum(p.returned_revenue) AS returned_revenue, any(o.credited_online) AS credited_online
                FROM {{db}}.staff_performance AS p
                LEFT JOIN (
                    SELECT c.store_id AS store_id, c.staff_id AS staff_id, c.currency AS currency,
                           sumIf(a.revenue_credit, a.channel != 'store') AS credited_online
                    FROM {{db}}.attribution AS a
                    INNER JOIN {{db}}.conversions AS c ON c.conversion_id = a.conversion_id
                    WHERE a.model = {sql_string(f.model)} AND c.staff_id != ''
                        AND {f.days('c.occurred_at')}
                    GROUP BY store_id, staff_id, currency
                ) AS o ON o.store_id = p.store_id AND o.staff_id = p.staff_id AND o.currency = p.currency
                WHERE {f.days('p.day')} AND {f.equals('p.store_id', 'store')}
                GROUP BY store_id, staff_id, currency ORDER BY currency, sales_revenue DESC, staff_id""",
            (Column("store_id", "Store"), Column("staff_id", "Staff"), Column("currency", "Currency"),
             Column("sales", "Sales", "int"), Column("sales_revenue", "Sales revenue", "money"),
             Column("pickups", "Pickups", "int"), Column("upsells", "Upsells", "int"),
             Column("upsell_revenue", "Upsell revenue", "money"), Column("returns", "Returns", "int"),
             Column("returned_revenue", "Returned", "money"),
             Column("credited_online", f"Credited to online touches ({f.model})", "money")),
            note="Credited to online touches: what the chosen model credits of this staff member's in-store "
            "sales and upsells to the digital sessions before the visit.",
            filters=("since", "until", "store", "model"),
        ),
    ))  # fmt: skip
