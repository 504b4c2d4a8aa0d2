"""The dashboard's journey, data-quality and activation pages."""

from __future__ import annotations

from pipeline.dashboard.filters import Filters
from pipeline.dashboard.model import Chart, Column, Page, Section


def journeys(f: Filters) -> Page:
    """Path length and time to convert per O2O label."""
    conversions = f.conversions()
    return Page(
        "journeys",
        "Customers' journeys",
        "How long and how winding the road to a sale is, per O2O label.",
        (
            Section(
                "labels",
                "Path length and time to convert, per O2O label",
                f"""SELECT c.o2o_label AS o2o_label, count() AS conversions,
                       avg(c.path_length) AS avg_path_length,
                       avgIf(dateDiff('second', t.first_touch_at, c.occurred_at),
                             t.conversion_id != '') / 86400
                           AS avg_days_to_convert
                FROM {{db}}.conversions AS c
                LEFT JOIN (
                    SELECT conversion_id, min(touch_at) AS first_touch_at FROM {{db}}.attribution
                        GROUP BY conversion_id
                ) AS t ON t.conversion_id = c.conversion_id
                WHERE {conversions}
                GROUP BY o2o_label ORDER BY conversions DESC, o2o_label""",
                (
                    Column("o2o_label", "O2O label"),
                    Column("conversions", "Sales", "int"),
                    Column("avg_path_length", "Touches (average)", "number"),
                    Column("avg_days_to_convert", "Days from first touch (average)", "number"),
                ),
                Chart("bars", ("o2o_label",), ("avg_days_to_convert",)),
                note="Touches count the sale's own session; days run from the first credited touch.",
                filters=("since", "until", "store"),
            ),
            Section(
                "path_lengths",
                "Sales by number of touches",
                f"""SELECT toString(c.path_length) AS touches, count() AS conversions
                FROM {{db}}.conversions AS c WHERE {conversions}
                GROUP BY c.path_length ORDER BY c.path_length""",
                (Column("touches", "Touches"), Column("conversions", "Sales", "int")),
                Chart("bars", ("touches",), ("conversions",)),
                filters=("since", "until", "store"),
            ),
        ),
    )


def quality(f: Filters) -> Page:
    """Dead letters, very late events and identity conflicts."""
    return Page(
        "quality",
        "Data quality",
        "What was rejected, what came too late, which identities could not be linked.",
        (
            Section(
                "dead_letters",
                "Dead letters by reason and source",
                f"""SELECT reason, topic AS source, count() AS dead_letters FROM {{db}}.dead_letters
                WHERE {f.days("received_at")} GROUP BY reason, source
                    ORDER BY dead_letters DESC, reason, source""",
                (
                    Column("reason", "Reason"),
                    Column("source", "Topic"),
                    Column("dead_letters", "Dead letters", "int"),
                ),
                Chart("bars", ("reason", "source"), ("dead_letters",)),
                note="`o2o dlq list` shows each with its detail; "
                "`o2o dlq replay` sends them again once fixed.",
            ),
            Section(
                "dead_letters_daily",
                "Dead letters by day",
                f"""SELECT toDate(received_at) AS day, reason, count() AS dead_letters
                    FROM {{db}}.dead_letters
                WHERE {f.days("received_at")} GROUP BY day, reason ORDER BY day, reason""",
                (
                    Column("day", "Day", "day"),
                    Column("reason", "Reason"),
                    Column("dead_letters", "Dead letters", "int"),
                ),
                Chart("lines", ("day",), ("dead_letters",), series="reason"),
            ),
            Section(
                "late",
                "Very late events by day and source",
                f"""SELECT toDate(occurred_at) AS day, source, count() AS very_late FROM {{db}}.events
                WHERE late = 1 AND {f.days("occurred_at")} GROUP BY day, source ORDER BY day, source""",
                (
                    Column("day", "Day", "day"),
                    Column("source", "Source"),
                    Column("very_late", "Very late events", "int"),
                ),
                Chart("lines", ("day",), ("very_late",), series="source"),
                note="Stored, but later than the allowed lateness: no session was re-cut for them.",
            ),
            Section(
                "conflicts",
                "Identity conflicts",
                f"""SELECT reason, id_type, count() AS conflicts FROM {{db}}.identity_conflicts
                WHERE {f.days("occurred_at")} GROUP BY reason, id_type
                    ORDER BY conflicts DESC, reason, id_type""",
                (
                    Column("reason", "Reason"),
                    Column("id_type", "Identifier"),
                    Column("conflicts", "Conflicts", "int"),
                ),
                Chart("bars", ("reason", "id_type"), ("conflicts",)),
                note="unique_id: two persons hold different user or loyalty ids; shared_identifier: "
                "an identifier seen with too many persons (a shared tablet) stopped linking.",
            ),
        ),
    )


def activation(f: Filters) -> Page:
    """Decisions, suppressions by guard, and the lift against the holdout."""
    return Page(
        "activation",
        "Activation",
        "Messages decided on live journeys, what the guards held back, and what they did.",
        (
            Section(
                "decisions",
                "Decisions by rule and outcome",
                f"""SELECT rule, outcome, count() AS decisions, uniqExact(person_id) AS persons
                    FROM {{db}}.activations
                WHERE {f.days("decided_at")} AND {f.equals("store_id", "store")}
                GROUP BY rule, outcome ORDER BY rule, decisions DESC, outcome""",
                (
                    Column("rule", "Rule"),
                    Column("outcome", "Outcome"),
                    Column("decisions", "Decisions", "int"),
                    Column("persons", "Persons", "int"),
                ),
                Chart("bars", ("rule", "outcome"), ("decisions",)),
                filters=("since", "until", "store"),
            ),
            Section(
                "suppressed",
                "Suppressed decisions by guard",
                f"""SELECT reason AS guard, count() AS decisions FROM {{db}}.activations
                WHERE outcome = 'suppressed' AND {f.days("decided_at")} AND {f.equals("store_id", "store")}
                GROUP BY guard ORDER BY decisions DESC, guard""",
                (Column("guard", "Guard"), Column("decisions", "Decisions", "int")),
                Chart("bars", ("guard",), ("decisions",)),
                filters=("since", "until", "store"),
            ),
            Section(
                "lift",
                "Lift against the holdout, 7 days after a decision",
                """SELECT rule, sale, messaged, held_out, 100 * messaged_rate AS messaged_pct,
                      100 * held_out_rate AS held_out_pct, 100 * lift AS lift_pts,
                      100 * lift_low AS lift_low_pts, 100 * lift_high AS lift_high_pts
               FROM {db}.activation_lift ORDER BY rule, indexOf(['all', 'online', 'store'], sale)""",
                (
                    Column("rule", "Rule"),
                    Column("sale", "Sale"),
                    Column("messaged", "Messaged", "int"),
                    Column("held_out", "Held out", "int"),
                    Column("messaged_pct", "Bought, messaged", "pct"),
                    Column("held_out_pct", "Bought, held out", "pct"),
                    Column("lift_pts", "Lift (points)", "number"),
                    Column("lift_low_pts", "95% low", "number"),
                    Column("lift_high_pts", "95% high", "number"),
                ),
                Chart("bars", ("rule", "sale"), ("messaged_pct", "held_out_pct")),
                filters=(),
            ),
        ),
    )
