"""The dashboard on a known O2O story: the HTML file and every served page in headless Chromium.

The story runs once through the real broker into chDB; the pages' figures
are checked against the story's known values and against ClickHouse, a
screenshot of each page is taken, and any console error (a script, a
blocked resource) fails the test.
"""

from __future__ import annotations

import re
import select
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from pipeline.config import Settings, load_settings
from pipeline.dashboard.numbers import money
from pipeline.dashboard.pages import SLUGS
from tests.conftest import TEST_GROUP_SESSION_TIMEOUT, at, o2o, query, start_o2o, stop_o2o
from tests.conftest import story_event as ev

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"  # Debian's chromium, chromium-driver
S1 = {"context": {"store_id": "s1"}, "properties": {"store_id": "s1", "geofence_id": "g1"}}
S2 = {"context": {"store_id": "s2"}, "properties": {"store_id": "s2", "geofence_id": "g2"}}
EVENTS: list[dict[str, Any] | bytes] = [
    # Bob clicks a paid search ad, logs in; the next day Anna sells him 60 EUR in store s1.
    ev("b1", "web", "page_view", at(), {"anonymous_id": "cb"},
       context={"campaign": {"source": "google", "medium": "cpc", "name": "winter"},
                "page": {"url": "https://shop.example/", "referrer": "https://www.google.com/"}}),
    ev("b2", "web", "login", at(minutes=5), {"anonymous_id": "cb", "user_id": "bob"}),
    ev("b3", "pos", "purchase", at(days=1, hours=1), {"loyalty_id": "LB", "user_id": "bob"},
       properties={"transaction_id": "tb", "store_id": "s1", "revenue": 60.0, "currency": "EUR",
                   "staff_id": "anna"}),
    # Carol walks through store s2 and, a day later, orders 1,090 EUR in the app.
    ev("c1", "geofence", "enter", at(days=2), {"device_id": "dc"}, **S2),
    ev("c2", "geofence", "exit", at(days=2, minutes=20), {"device_id": "dc"}, **S2),
    ev("c3", "app", "order_completed", at(days=3), {"device_id": "dc", "user_id": "carol"},
       properties={"order_id": "oc", "revenue": 1090.0, "currency": "EUR", "fulfillment": "delivery"}),
    # Dave orders 30 USD on the web: never added to euros.
    ev("d1", "web", "page_view", at(days=1), {"anonymous_id": "cd"},
       context={"page": {"url": "https://shop.example/us"}}),
    ev("d2", "web", "order_completed", at(days=1, minutes=10), {"anonymous_id": "cd", "user_id": "dave"},
       properties={"order_id": "od", "revenue": 30.0, "currency": "USD", "fulfillment": "delivery"}),
    # Erin orders 200 EUR online to collect in s1; Anna hands it over a day later and sells 25 EUR on top.
    ev("e1", "app", "order_completed", at(days=4), {"device_id": "de", "user_id": "erin"},
       properties={"order_id": "oe", "revenue": 200.0, "currency": "EUR",
                   "fulfillment": "click_and_collect"}),
    ev("e2", "pos", "click_and_collect_pickup", at(days=5), {"user_id": "erin"},
       properties={"order_id": "oe", "store_id": "s1", "upsell_revenue": 25.0, "currency": "EUR",
                   "staff_id": "anna"}),
    # Frank's click-and-collect order is never picked up.
    ev("f1", "web", "order_completed", at(days=4), {"anonymous_id": "cf", "user_id": "frank"},
       properties={"order_id": "of", "revenue": 50.0, "currency": "EUR", "fulfillment": "click_and_collect"}),
    # Gina claims a coupon in the app and redeems it with Ben at s1's till a day later; Bob returns 10 EUR.
    ev("g1", "app", "coupon_claimed", at(days=5), {"device_id": "dg"}, properties={"coupon_code": "CODE1"}),
    ev("g2", "pos", "purchase", at(days=6), {"loyalty_id": "LG"},
       properties={"transaction_id": "tg", "store_id": "s1", "revenue": 80.0, "currency": "EUR",
                   "staff_id": "ben", "coupon_code": "CODE1"}),
    ev("b4", "pos", "return", at(days=6, hours=2), {"loyalty_id": "LB"},
       properties={"transaction_id": "tb", "store_id": "s1", "revenue": 10.0, "currency": "EUR",
                   "staff_id": "anna"}),
    b"{not json",
]  # fmt: skip

# The overview's "Sales online and in store" table, as shown.
SALES = [
    ["in store", "EUR", "3", "€165.00", "3"],  # Bob 60, Erin's upsell 25, Gina 80
    ["online", "EUR", "3", "€1,340.00", "3"],  # Carol 1,090, Erin 200, Frank 50
    ["online", "USD", "1", "$30.00", "1"],
]


@pytest.fixture(scope="module")
def story(kafka_bootstrap: str, chdb_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The story, drained into its own database and topics."""
    tag = uuid.uuid4().hex[:10]
    settings = load_settings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t{tag}.",
        clickhouse_database=f"t_{tag}",
        clickhouse_dsn=f"chdb://{chdb_folder}",
        state_dir=tmp_path_factory.mktemp("dashboard") / "state",
        partitions=2,
        sink_flush_seconds=0.3,
        sink_batch_rows=3,  # the sink inserts within a batch of messages: nothing lost or doubled
        group_session_timeout_seconds=TEST_GROUP_SESSION_TIMEOUT,
    )
    events = settings.state_dir.parent / "events.jsonl"
    events.write_bytes(b"".join((e if isinstance(e, bytes) else orjson.dumps(e)) + b"\n" for e in EVENTS))
    o2o(settings, "init")
    o2o(settings, "produce", "--file", str(events))
    o2o(settings, "run", "all", "--drain")
    return settings


def clickhouse_sales(settings: Settings) -> list[list[str]]:
    """The sales table computed straight from ClickHouse, formatted like the page."""
    rows = query(settings, """
        SELECT if(source IN ('pos', 'geofence'), 'in store', 'online') AS world, currency, count(),
               sum(revenue), uniqExact(person_id)
        FROM {db}.conversions GROUP BY world, currency ORDER BY currency, world""")  # fmt: skip
    return [[w, c, f"{n:,}", money(r, c), f"{p:,}"] for w, c, n, r, p in rows]


def table_rows(root: Any, section: str) -> list[list[str]]:
    """The text of a section's table body cells (selenium element or parsed HTML text)."""
    rows = root.find_elements(By.CSS_SELECTOR, f"#{section} tbody tr")
    return [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")] for row in rows]


def test_the_html_file_is_self_contained_and_shows_the_story(story: Settings, tmp_path: Path) -> None:
    out = tmp_path / "o2o.html"
    o2o(story, "report", "--format", "html", "--out", str(out), "--model", "linear")
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script|<link|<img|<iframe|\ssrc=|url\(", text, re.I)  # nothing to fetch
    assert all(f'id="page-{slug}"' in text for slug in SLUGS)
    assert "model linear" in text
    assert clickhouse_sales(story) == SALES
    numeric = ' class="num"'
    for row in SALES:
        assert "".join(f"<td{numeric if i > 1 else ''}>{cell}</td>" for i, cell in enumerate(row)) in text
    # the O2O split under linear: Bob's and Gina's sales half online, half the visit; an upsell at a
    # pickup is credited to the visit alone
    split = '<td class="num">1.00</td><td class="num">€70.00</td>'
    assert f"<td>in store</td><td>online touch</td><td>EUR</td>{split}" in text
    assert "malformed_json" in text and "<svg" in text


def test_the_kpi_views_are_exact_on_the_story(story: Settings) -> None:
    online = "SELECT order_id, kind, fulfillment FROM {db}.conversions WHERE source IN ('web', 'app')"
    assert query(story, online + " ORDER BY order_id") == [
        ("oc", "order", "delivery"), ("od", "order", "delivery"),
        ("oe", "order", "click_and_collect"), ("of", "order", "click_and_collect"),
    ]  # fmt: skip
    assert query(story, """
        SELECT order_id, picked_up, store_id, pickup_staff_id, upsell_revenue, hours_to_pickup,
               days_waiting >= 7
        FROM {db}.click_and_collect ORDER BY order_id""") == [
        ("oe", 1, "s1", "anna", 25.0, 24.0, 0),
        ("of", 0, "", "", 0.0, None, 1),
    ]  # fmt: skip
    assert query(story, """
        SELECT coupon_code, redeemed, redeemed_source, redeemed_store_id, revenue, currency, hours_to_redeem
        FROM {db}.coupons""") == [("CODE1", 1, "pos", "s1", 80.0, "EUR", 24.0)]  # fmt: skip
    assert query(story, """
        SELECT store_id, staff_id, currency, sum(sales), sum(sales_revenue), sum(pickups), sum(upsells),
               sum(upsell_revenue), sum(returns), sum(returned_revenue)
        FROM {db}.staff_performance GROUP BY store_id, staff_id, currency ORDER BY staff_id""") == [
        ("s1", "anna", "EUR", 1, 60.0, 1, 1, 25.0, 1, 10.0),
        ("s1", "ben", "EUR", 1, 80.0, 0, 0, 0.0, 0, 0.0),
    ]  # fmt: skip
    assert query(story, """
        SELECT store_id, model, currency, online_orders, credited_revenue FROM {db}.store_influence
        WHERE model IN ('first_touch', 'last_touch') ORDER BY store_id, model""") == [
        ("s2", "first_touch", "EUR", 1, 1090.0),
        ("s2", "last_touch", "EUR", 1, 0.0),
    ]  # fmt: skip
    visits = query(story, """
        SELECT store_id, count(), countIf(conversions > 0), uniqExact(person_id) FROM {db}.sessions
        WHERE kind = 'store_visit' GROUP BY store_id ORDER BY store_id""")  # fmt: skip
    daily = query(story, """
        SELECT store_id, sum(visits), sum(visits_with_purchase), sum(first_visits)
        FROM {db}.store_visits_daily GROUP BY store_id ORDER BY store_id""")  # fmt: skip
    assert daily == visits
    assert daily[1] == ("s2", 1, 0, 1) and daily[0][0] == "s1" and daily[0][2] == 3  # Bob, Erin, Gina bought


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """Headless Chromium with the browser console's log."""
    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), "install Debian's chromium, chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,2000",
                 f"--user-data-dir={tmp_path / 'chromium'}"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def dashboard(story: Settings) -> Iterator[str]:
    """``o2o dashboard`` on a free port; its address."""
    child = start_o2o(story, "dashboard", "--port", "0")
    try:
        assert child.stderr is not None
        deadline, seen = time.monotonic() + 60, ""
        while "(Ctrl-C" not in seen and time.monotonic() < deadline and child.poll() is None:
            if select.select([child.stderr], [], [], 1)[0]:
                seen += child.stderr.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+/)", seen)
        assert match, seen
        yield match.group(1)
    finally:
        stop_o2o(child)


def test_every_page_in_a_real_browser(story: Settings, dashboard: str, browser: webdriver.Chrome,
                                      tmp_path: Path) -> None:  # fmt: skip
    for slug in SLUGS:
        browser.get(dashboard + ("" if slug == "overview" else slug))
        assert browser.find_element(By.CSS_SELECTOR, "main h1").text
        assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".error")] == []
        browser.save_screenshot(str(tmp_path / f"{slug}.png"))
        assert (tmp_path / f"{slug}.png").stat().st_size > 10_000
    browser.get(dashboard)
    assert table_rows(browser, "sales") == SALES == clickhouse_sales(story)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#sales svg[role=img]")) == 2  # a chart per currency
    assert table_rows(browser, "fulfillment") == [
        ["click_and_collect", "EUR", "2", "€250.00", "66.7 %", "1", "33.3 %"],
        ["delivery", "EUR", "1", "€1,090.00", "33.3 %", "0", "0.0 %"],
        ["delivery", "USD", "1", "$30.00", "100.0 %", "0", "0.0 %"],
    ]

    stores = dashboard + "stores?store=s2&model=first_touch"
    browser.get(stores)
    visits = table_rows(browser, "visits")
    expected = query(story, """SELECT count(), countIf(conversions > 0) FROM {db}.sessions
                               WHERE kind = 'store_visit' AND store_id = 's2'""")  # fmt: skip
    assert expected == [(1, 0)]
    assert visits == [["s2", "1", "0", "0.0 %", "1", "0"]]
    influence = table_rows(browser, "influence")
    assert influence[0][:4] == [
        "s2",
        "EUR",
        "1",
        "€1,090.00",
    ]  # Carol's app order after her visit, first touch
    assert table_rows(browser, "store_sales") == []  # s1's sales are filtered out
    browser.get(dashboard + "stores?store=s1")
    assert table_rows(browser, "click_and_collect") == [
        ["s1", "EUR", "1", "1", "100.0 %", "24.00", "0", "1", "€25.00", "100.0 %"]
    ]
    assert table_rows(browser, "coupons") == [["direct", "1", "1", "100.0 %", "24.00"]]
    assert table_rows(browser, "coupon_redemptions") == [["s1", "EUR", "1", "€80.00", "24.00"]]
    # first touch credits Bob's web session with Anna's sale, Gina's app claim with Ben's;
    # the upsell stays with the store visit
    assert table_rows(browser, "staff") == [
        ["s1", "ben", "EUR", "1", "€80.00", "0", "0", "€0.00", "0", "€0.00", "€80.00"],
        ["s1", "anna", "EUR", "1", "€60.00", "1", "1", "€25.00", "1", "€10.00", "€60.00"],
    ]
    used = browser.find_element(By.CSS_SELECTOR, "#influence .filters-applied").text
    assert used == "Filters used: days, store"

    # the filters travel with the navigation; the keyboard reaches the skip link first
    browser.get(stores)
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    assert browser.switch_to.active_element.text == "Skip to content"
    link = browser.find_element(By.LINK_TEXT, "Attribution")
    assert link.get_attribute("href") == dashboard + "attribution?model=first_touch&store=s2"
    link.send_keys(Keys.ENTER)
    assert browser.current_url == dashboard + "attribution?model=first_touch&store=s2"
    assert browser.find_element(By.CSS_SELECTOR, "select[name=model]").get_attribute("value") == "first_touch"

    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    bad = httpx.get(dashboard + "?since=yesterday")
    assert bad.status_code == 400 and "is not a YYYY-MM-DD day" in bad.text
    assert httpx.get(dashboard + "nowhere").status_code == 404
    port = dashboard.rsplit(":", 1)[1].strip("/")
    rebound = httpx.get(dashboard, headers={"Host": f"attacker.example:{port}"})  # DNS rebinding
    assert rebound.status_code == 403 and "<table" not in rebound.text
