"""Runs a page's queries and renders it: one page for the server, every page for the HTML file.

Queries go through :func:`~pipeline.clickhouse.query_server.query_many`, the
read-only path of ``o2o sql``: a ClickHouse server directly, the sink's query
server while it runs, or the chDB folder opened for the moment.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pipeline.clickhouse.client import QueryError
from pipeline.clickhouse.query_server import query_many
from pipeline.config import Settings
from pipeline.dashboard.filters import Filters
from pipeline.dashboard.html import FormChoices, Result, document, filter_form, render_page_body
from pipeline.dashboard.model import Page
from pipeline.dashboard.pages import SLUGS, build_pages

log = logging.getLogger(__name__)

CHOICES_SQL = (
    "SELECT store_id FROM (SELECT store_id FROM {db}.conversions WHERE store_id != '' "
    "UNION DISTINCT SELECT store_id FROM {db}.sessions WHERE store_id != '') ORDER BY store_id LIMIT 500",
    "SELECT DISTINCT channel FROM {db}.attribution ORDER BY channel LIMIT 200",
)


def _as_dicts(columns: list[str], rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


def read_page(settings: Settings, page: Page) -> dict[str, Result]:
    """Every section's rows; a section whose query fails gets its error, the others their rows."""
    sqls = [section.sql for section in page.sections]
    try:
        answers = query_many(settings, sqls)
        return {s.key: Result(_as_dicts(*answer)) for s, answer in zip(page.sections, answers, strict=True)}
    except QueryError:
        pass  # find which one: run them one by one
    results = {}
    for section in page.sections:
        try:
            (answer,) = query_many(settings, [section.sql])
            results[section.key] = Result(_as_dicts(*answer))
        except QueryError as exc:
            log.warning("dashboard: section %s of %s failed: %s", section.key, page.slug, exc)
            results[section.key] = Result(error=str(exc))
    return results


def form_choices(settings: Settings) -> FormChoices:
    """The filter form's options: configured models, stores and channels present in the data.

    When they cannot be read, the form offers the models only (the sections say what failed).
    """
    try:
        stores, channels = query_many(settings, CHOICES_SQL)
    except QueryError as exc:
        log.warning("dashboard: could not read the stores and channels for the filters: %s", exc)
        return FormChoices(settings.models)
    return FormChoices(settings.models, [str(r[0]) for r in stores[1]], [str(r[0]) for r in channels[1]])


def _subtitle(settings: Settings, filters: Filters) -> str:
    return f"database {settings.clickhouse_database} · {filters.describe()}"


def render_served_page(settings: Settings, slug: str, filters: Filters) -> str:
    """One page as the server sends it: navigation links keep the filters; the form changes them."""
    pages = build_pages(filters, settings.models)
    page = pages[slug]
    body = render_page_body(page, read_page(settings, page))
    nav = [("/" if s == "overview" else f"/{s}") + filters.query() for s in SLUGS]
    links = [(href, pages[s].title, s == slug) for href, s in zip(nav, SLUGS, strict=True)]
    form = filter_form(filters, form_choices(settings))
    return document(f"{page.title} · O2O dashboard", _subtitle(settings, filters), links, body, form)


def render_file(settings: Settings, filters: Filters, now: datetime | None = None) -> str:
    """Every page in one self-contained HTML document, the navigation jumping between them."""
    pages = build_pages(filters, settings.models)
    bodies = [
        f'<div id="page-{slug}" class="page">'
        f"{render_page_body(pages[slug], read_page(settings, pages[slug]))}"
        "</div>"
        for slug in SLUGS
    ]
    links = [(f"#page-{slug}", pages[slug].title, False) for slug in SLUGS]
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = f"{_subtitle(settings, filters)} · written {stamp}"
    return document("O2O dashboard", subtitle, links, "".join(bodies))
