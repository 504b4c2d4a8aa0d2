"""The dashboard's pure parts: filters from the URL, numbers for people, charts, pages, HTML."""

from __future__ import annotations

import re
from datetime import date

import pytest

from pipeline.dashboard.charts import bar_chart, draw, every_day, flow_chart, line_chart
from pipeline.dashboard.filters import FilterError, Filters
from pipeline.dashboard.html import Result, document, render_section
from pipeline.dashboard.model import Chart, Column, Section
from pipeline.dashboard.numbers import cell, money, percent
from pipeline.dashboard.pages import SLUGS, build_pages

MODELS = ("first_touch", "last_touch", "linear")


def test_filters_come_from_the_url_and_go_back_into_it() -> None:
    params = {"since": "2026-11-01", "until": "2026-11-30", "model": "linear", "store": "s1", "channel": ""}
    filters = Filters.parse(params, MODELS)
    assert filters == Filters("linear", date(2026, 11, 1), date(2026, 11, 30), "s1", "")
    assert filters.query() == "?since=2026-11-01&until=2026-11-30&model=linear&store=s1"
    assert Filters.parse({}, MODELS) == Filters("first_touch")
    assert filters.days("c.occurred_at") == (
        "toDate(c.occurred_at) >= toDate('2026-11-01') AND toDate(c.occurred_at) <= toDate('2026-11-30')"
    )
    assert filters.equals("c.store_id", "store") == "c.store_id = 's1'"
    assert filters.equals("a.channel", "channel") == "1"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"model": "magic"}, "unknown model 'magic'"),
        ({"since": "yesterday"}, "since='yesterday' is not a YYYY-MM-DD day"),
        ({"since": "2026-12-02", "until": "2026-12-01"}, "is after until"),
        ({"store": "s1' OR 1=1 --"}, "is not a store id"),
    ],
)
def test_bad_filters_are_refused_with_the_reason(params: dict[str, str], message: str) -> None:
    with pytest.raises(FilterError, match=re.escape(message)):
        Filters.parse(params, MODELS)


def test_numbers_for_people() -> None:
    assert money(1234567.5, "EUR") == "€1,234,567.50"
    assert money(-10, "USD") == "-$10.00"
    assert money(-0.001, "GBP") == "£0.00"
    assert money(3, "CHF") == "CHF 3.00"
    assert percent(12.345) == "12.3 %"
    assert percent(-0.01) == "0.0 %" and money(-0.001, "EUR") == "€0.00" and percent(-1.25) == "-1.2 %"
    assert cell("int", 12345.0) == "12,345"
    assert cell("number", float("nan")) == "\u2013"
    assert cell("day", "2026-11-01T00:00:00") == "2026-11-01"
    assert cell("text", "") == "\u2013"


def test_charts_draw_one_panel_per_currency_and_never_mix_them() -> None:
    columns = (Column("world", "Sold"), Column("currency", "Currency"), Column("revenue", "Revenue", "money"))
    rows = [
        {"world": "online", "currency": "EUR", "revenue": 1090.0},
        {"world": "in store", "currency": "EUR", "revenue": 60.0},
        {"world": "online", "currency": "USD", "revenue": 30.0},
    ]
    panels = draw("Sales", Chart("bars", ("world",), ("revenue",), panels="currency"), columns, rows)
    assert [panel for panel, _svg in panels] == ["EUR", "USD"]
    eur, usd = (svg for _panel, svg in panels)
    assert "€1,090.00" in eur and "€60.00" in eur and "$" not in eur
    assert "$30.00" in usd and "€" not in usd
    assert 'role="img"' in eur and "<title>Sales (EUR)</title>" in eur


def test_bars_lines_and_flows_scale_to_their_values() -> None:
    svg = bar_chart("t", ["a", "b"], [("x", [10.0, 5.0])], str)
    widths = [float(w) for w in re.findall(r'<rect x="\d+" y="[\d.]+" width="([\d.]+)"', svg)]
    assert widths[0] == pytest.approx(2 * widths[1])
    many = bar_chart("t", ["a"], [(f"model_{i}", [1.0]) for i in range(9)], str)
    legend_rows = set(re.findall(r'<rect x="[\d.]+" y="([\d.]+)" width="12"', many))
    assert len(legend_rows) == 2  # nine names do not fit one row
    lines = line_chart("t", ["2026-11-01", "2026-11-02"], [("x", [0.0, 4.0])], str)
    assert lines.count("<circle") == 2 and "<polyline" in lines
    flow = flow_chart("t", [(["paid_search", "store"], "purchase in store", 3.0)], lambda v: f"{v:.0f}")
    assert list(re.findall(r">([^<>]+)</text>", flow)) == [
        "paid_search",
        "store",
        "purchase in store",
        "3",
    ]
    assert flow.count('class="arrow"') == 2


def test_lines_split_by_a_series_column() -> None:
    columns = (Column("day", "Day", "day"), Column("reason", "Reason"), Column("n", "N", "int"))
    rows = [
        {"day": "2026-11-01", "reason": "malformed_json", "n": 2},
        {"day": "2026-11-02", "reason": "malformed_json", "n": 1},
        {"day": "2026-11-02", "reason": "unknown_type", "n": 5},
    ]
    ((_panel, svg),) = draw("Dead letters", Chart("lines", ("day",), ("n",), series="reason"), columns, rows)
    assert svg.count("<polyline") == 2 and "malformed_json" in svg and "unknown_type" in svg


def test_every_page_honours_its_filters_and_shows_every_model() -> None:
    filters = Filters("w_shaped", date(2026, 11, 1), None, "s1", "email")  # a model outside MODELS
    pages = build_pages(filters, MODELS)
    assert list(pages) == list(SLUGS)
    for page in pages.values():
        for section in page.sections:
            # a section uses exactly the filters it declares (and shows on the page)
            assert ("since" in section.filters) == ("toDate('2026-11-01')" in section.sql), section.key
            assert ("store" in section.filters) == ("= 's1'" in section.sql), section.key
            assert ("channel" in section.filters) == ("= 'email'" in section.sql), section.key
            assert ("model" in section.filters) == ("= 'w_shaped'" in section.sql), section.key
            if "revenue" in section.sql:
                assert "currency" in section.sql, section.key  # never summed across currencies
    by_model = pages["attribution"].sections[0]
    assert [c.name for c in by_model.columns][2:] == list(MODELS)
    assert "a.channel = 'email'" in by_model.sql
    assert "a.model = 'w_shaped'" in pages["overview"].sections[1].sql


def test_html_escapes_data_and_says_when_there_is_nothing() -> None:
    section = Section("s", "Stores", "SELECT 1", (Column("store_id", "Store"), Column("n", "N", "int")))
    html = render_section(section, Result([{"store_id": "<script>alert(1)</script>", "n": 1200}]))
    assert "<script>" not in html and "&lt;script&gt;" in html and '<td class="num">1,200</td>' in html
    assert "No data for these filters." in render_section(section, Result([]))
    assert 'role="alert"' in render_section(section, Result(error="boom"))
    assert '<p class="filters-applied">Filters used: days</p>' in html
    unfiltered = Section("w", "Weights", "SELECT 1", section.columns, filters=())
    assert "Not filtered" in render_section(unfiltered, Result([]))
    page = document("T", "sub", [("/", "Overview", True)], "<p>x</p>")
    assert page.startswith("<!DOCTYPE html>") and "aria-current=page" in page and 'href="#main"' in page


def test_lines_keep_time_proportional_and_draw_days_without_rows_as_zero() -> None:
    columns = (
        Column("day", "Day", "day"),
        Column("currency", "Currency"),
        Column("online", "Online", "money"),
    )
    rows = [
        {"day": "2026-11-01", "currency": "EUR", "online": 10.0},
        {"day": "2026-11-04", "currency": "EUR", "online": 40.0},
    ]
    ((_panel, svg),) = draw(
        "Revenue", Chart("lines", ("day",), ("online",), panels="currency"), columns, rows
    )
    circles = re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)"', svg)
    assert len(circles) == 4  # 1, 2, 3 and 4 November
    xs = [float(x) for x, _y in circles]
    assert xs[1] - xs[0] == pytest.approx(xs[3] - xs[2])
    ys = [float(y) for _x, y in circles]
    assert ys[1] == ys[2] == max(ys) and ys[0] > ys[3]  # the empty days sit at 0, below 10 and 40
    assert every_day(["2026-12-30", "2027-01-02"]) == ["2026-12-30", "2026-12-31", "2027-01-01", "2027-01-02"]
    assert every_day(["b", "a"]) == ["b", "a"]
