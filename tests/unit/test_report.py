"""The report's pure parts: SQL filters, pivots, the O2O split, rendering, option checks."""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.report import (
    TITLES,
    ReportOptions,
    SplitRow,
    aggregate,
    assemble,
    channel_tables,
    label_table,
    pivot,
    render_report,
    report_models,
    report_queries,
    split_rows,
    split_tables,
)

MODELS = ["first_touch", "linear"]

# An in-store sale of 50 after a paid search session and the visit itself, with
# a return of 20; an online order of 80 after a store visit and a direct session.
ROWS = [
    SplitRow("first_touch", "offline", "online", "paid_search", 1.0, 50.0, 30.0, "EUR"),
    SplitRow("first_touch", "offline", "store", "store", 0.0, 0.0, 0.0, "EUR"),
    SplitRow("first_touch", "online", "store", "store", 1.0, 80.0, 80.0, "EUR"),
    SplitRow("first_touch", "online", "online", "direct", 0.0, 0.0, 0.0, "EUR"),
    SplitRow("linear", "offline", "online", "paid_search", 0.5, 25.0, 15.0, "EUR"),
    SplitRow("linear", "offline", "store", "store", 0.5, 25.0, 15.0, "EUR"),
    SplitRow("linear", "online", "store", "store", 0.5, 40.0, 40.0, "EUR"),
    SplitRow("linear", "online", "online", "direct", 0.5, 40.0, 40.0, "EUR"),
]


def test_no_options_filter_nothing() -> None:
    options = ReportOptions()
    assert options.day_filter("day") == "1"
    assert options.model_filter() == "1"


def test_days_and_models_become_sql_conditions() -> None:
    options = ReportOptions(models=("linear", "it's"), since=date(2026, 11, 1), until=date(2026, 11, 30))
    assert options.day_filter("day") == "day >= toDate('2026-11-01') AND day <= toDate('2026-11-30')"
    assert options.model_filter() == "model IN ('linear', 'it\\'s')"


def test_queries_use_the_split_view_and_the_filters() -> None:
    queries = report_queries("shop", ReportOptions(models=("linear",), since=date(2026, 11, 2)))
    assert set(queries) == {"split", "o2o_labels", "totals", "dead_letters", "activation_lift"}
    assert "FROM shop.o2o_split" in queries["split"]
    assert "model IN ('linear')" in queries["split"]
    assert "day >= toDate('2026-11-02')" in queries["split"]
    assert "toDate(c.occurred_at) >= toDate('2026-11-02')" in queries["o2o_labels"]
    assert "toDate(c.occurred_at) >= toDate('2026-11-02')" in queries["totals"]
    assert "toDate(received_at) >= toDate('2026-11-02')" in queries["dead_letters"]
    assert "model IN" not in queries["o2o_labels"]  # labels do not depend on the model


def test_split_rows_read_missing_and_nan_measures_as_zero() -> None:
    rows = split_rows([("linear", "offline", "online", "email", None, float("nan"), 3)])
    assert rows == [SplitRow("linear", "offline", "online", "email", 0.0, 0.0, 3.0)]


def test_model_columns() -> None:
    configured = ["first_touch", "last_touch", "linear"]
    assert report_models(ROWS, configured, []) == ["first_touch", "linear"]
    assert report_models(ROWS, configured, ["linear", "w_shaped", "linear"]) == ["linear", "w_shaped"]
    old = [*ROWS, SplitRow("custom", "online", "online", "direct", 1.0, 1.0, 1.0)]
    assert report_models(old, configured, []) == ["first_touch", "linear", "custom"]
    assert report_models([], configured, []) == configured


def test_aggregate_sums_per_key_and_model() -> None:
    cells = aggregate(ROWS, lambda r: r.conversion_world, lambda r: r.revenue)
    assert cells == {
        "offline": {"first_touch": 50.0, "linear": 50.0},
        "online": {"first_touch": 80.0, "linear": 80.0},
    }


def test_pivot_orders_by_total_then_name_rounds_and_fills_zeros() -> None:
    cells = {
        "b": {"linear": 1.004},
        "a": {"linear": 1.0, "first_touch": 0.004},
        "d": {"linear": 2.0, "other": 9.0},  # models not shown do not count
        "c": {"first_touch": -0.001},
    }
    columns, rows = pivot(cells, MODELS, 2)
    assert columns == ["channel", "first_touch", "linear"]
    assert rows == [["d", 0.0, 2.0], ["a", 0.0, 1.0], ["b", 0.0, 1.0], ["c", 0.0, 0.0]]
    assert str(rows[2][1]) == "0.0"  # no negative zero


def test_channel_tables_put_every_model_side_by_side() -> None:
    tables = channel_tables(ROWS, MODELS)
    assert tables["revenue"] == (
        ["channel", "currency", *MODELS],
        [["store", "EUR", 80.0, 65.0], ["paid_search", "EUR", 50.0, 25.0], ["direct", "EUR", 0.0, 40.0]],
    )
    assert tables["net_revenue"][1] == [
        ["store", "EUR", 80.0, 55.0],
        ["paid_search", "EUR", 30.0, 15.0],
        ["direct", "EUR", 0.0, 40.0],
    ]
    assert tables["conversions"][1] == [["store", 1.0, 1.0], ["paid_search", 1.0, 0.5], ["direct", 0.0, 0.5]]
    assert tables["instore_by_channel"][1] == [["paid_search", "EUR", 50.0, 25.0]]


def test_amounts_are_never_added_across_currencies() -> None:
    usd = [SplitRow("linear", "offline", "online", "paid_search", 1.0, 30.0, 30.0, "USD")]
    tables = {**channel_tables([*ROWS, *usd], MODELS), **split_tables([*ROWS, *usd], MODELS)}
    assert tables["revenue"][1] == [
        ["store", "EUR", 80.0, 65.0],
        ["paid_search", "EUR", 50.0, 25.0],
        ["direct", "EUR", 0.0, 40.0],
        ["paid_search", "USD", 0.0, 30.0],
    ]
    assert tables["conversions"][1][0] == ["paid_search", 1.0, 1.5]  # counts add up across currencies
    assert [row[:3] for row in tables["o2o_split"][1]][4:] == [
        ["offline", "online", "USD"], ["offline", "store", "USD"],
        ["online", "store", "USD"], ["online", "online", "USD"],
    ]  # fmt: skip
    assert tables["o2o_split"][1][4][3:] == [0.0, 30.0]
    assert tables["o2o_split_share"][1][4][3:] == [None, 100.0]  # of the USD in-store sales only
    assert tables["o2o_split_share"][1][0][3:] == [100.0, 50.0]


def test_split_tables_give_amounts_and_shares_per_conversion_world() -> None:
    tables = split_tables(ROWS, MODELS)
    columns, amounts = tables["o2o_split"]
    assert columns == ["conversion_world", "touch_world", "currency", *MODELS]
    assert amounts == [
        ["offline", "online", "EUR", 50.0, 25.0],
        ["offline", "store", "EUR", 0.0, 25.0],
        ["online", "store", "EUR", 80.0, 40.0],
        ["online", "online", "EUR", 0.0, 40.0],
    ]
    assert tables["o2o_split_share"][1] == [
        ["offline", "online", "EUR", 100.0, 50.0],
        ["offline", "store", "EUR", 0.0, 50.0],
        ["online", "store", "EUR", 100.0, 50.0],
        ["online", "online", "EUR", 0.0, 50.0],
    ]


def test_split_share_is_none_without_credited_revenue_and_thirds_round() -> None:
    rows = [
        SplitRow("linear", "offline", "online", "email", 1.0, 10.0, 10.0),
        SplitRow("linear", "offline", "store", "store", 2.0, 20.0, 20.0),
    ]
    shares = split_tables(rows, ["linear", "first_touch"])["o2o_split_share"][1]
    assert shares == [
        ["offline", "online", "", 33.3, None],
        ["offline", "store", "", 66.7, None],
        ["online", "store", "", None, None],
        ["online", "online", "", None, None],
    ]


def test_label_table_rounds_averages_and_keeps_missing_ones_empty() -> None:
    columns = ["o2o_label", "conversions", "revenue", "avg_path_length", "avg_days_to_convert"]
    rows: list[tuple[Any, ...]] = [
        ("online_to_offline", 2, 150.004, 2.5, 1.0069444),
        ("online_only", 1, 10.0, 0.0, float("nan")),
        ("mixed", 1, 5.0, 3.0, None),
    ]
    assert label_table(columns, rows) == (
        columns,
        [
            ["online_to_offline", 2, 150.0, 2.5, 1.01],
            ["online_only", 1, 10.0, 0.0, None],
            ["mixed", 1, 5.0, 3.0, None],
        ],
    )


def test_assemble_keeps_the_print_order_and_only() -> None:
    others = {"totals": (["conversions"], [[2]]), "o2o_labels": (["o2o_label"], [["online_only"]])}
    tables = assemble(ROWS, MODELS, others)
    assert list(tables) == [k for k in TITLES if k not in ("dead_letters", "activation_lift")]
    only = assemble(ROWS, MODELS, others, only=["totals", "o2o_split"])
    assert list(only) == ["o2o_split", "totals"]


def test_json_is_one_object_of_tables() -> None:
    tables = assemble(ROWS, MODELS, {"totals": (["conversions", "revenue"], [[2, 130.0]])})
    document = orjson.loads(render_report(tables, "json"))
    assert list(document) == list(tables)
    assert document["o2o_split"][0] == {
        "conversion_world": "offline",
        "touch_world": "online",
        "currency": "EUR",
        "first_touch": 50.0,
        "linear": 25.0,
    }
    assert document["totals"] == [{"conversions": 2, "revenue": 130.0}]
    assert document["instore_by_channel"] == [
        {"channel": "paid_search", "currency": "EUR", "first_touch": 50.0, "linear": 25.0}
    ]
    assert orjson.loads(render_report({}, "json")) == {}


def test_tsv_heads_each_table_with_its_key() -> None:
    text = render_report(split_tables(ROWS, MODELS), "tsv")
    blocks = text.split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == ["# o2o_split", "# o2o_split_share"]
    assert blocks[0].splitlines()[1] == "conversion_world\ttouch_world\tcurrency\tfirst_touch\tlinear"
    assert blocks[0].splitlines()[2] == "offline\tonline\tEUR\t50.0\t25.0"


def test_table_format_titles_each_table() -> None:
    text = render_report(split_tables(ROWS, MODELS), "table", width=100)
    assert text.startswith(TITLES["o2o_split"] + "\n")
    assert TITLES["o2o_split_share"] in text
    assert "conversion_world" in text and "4 rows" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nope"], "unknown model nope"),
        (["--only", "pivot"], "unknown table pivot"),
        (["--since", "2026-13-01"], "is not a YYYY-MM-DD day"),
        (["--since", "2026-11-02", "--until", "2026-11-01"], "--since is after --until"),
        (["--format", "xml"], "xml"),
    ],
)
def test_bad_options_are_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["report", *args])
    assert result.exit_code == 2
    assert message in result.output
