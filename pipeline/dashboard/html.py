"""Dashboard pages as HTML: one page per request, or every page in one self-contained file.

Styles are inline and charts are inline SVG: the output needs no network,
no script and no other file. Navigation is plain links and a GET form, so
the keyboard reaches everything and a filtered view is a URL to share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from pipeline.dashboard import numbers
from pipeline.dashboard.charts import draw
from pipeline.dashboard.filters import Filters
from pipeline.dashboard.model import Page, Section

STYLE = """
:root { color: #1f2937; background: #ffffff;
        font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
body { margin: 0; }
a { color: #1d4ed8; }
a:focus, button:focus, input:focus, select:focus { outline: 3px solid #f59e0b; outline-offset: 2px; }
.skip { position: absolute; left: -999px; }
.skip:focus { left: 8px; top: 8px; background: #fff; padding: 4px; }
header { background: #111827; color: #f9fafb; padding: 12px 24px; }
header h1 { margin: 0; font-size: 20px; } header p { margin: 2px 0 0; color: #d1d5db; }
nav ul { display: flex; flex-wrap: wrap; gap: 4px; list-style: none; margin: 0; padding: 8px 24px;
         background: #e5e7eb; }
nav a { display: block; padding: 6px 12px; border-radius: 4px; text-decoration: none; color: #111827; }
nav a[aria-current="page"] { background: #111827; color: #ffffff; }
main { padding: 8px 24px 32px; max-width: 1100px; }
form.filters { display: flex; flex-wrap: wrap; gap: 12px; align-items: end; padding: 12px 0; }
form.filters label { display: flex; flex-direction: column; font-size: 13px; }
section { border-top: 1px solid #d1d5db; margin-top: 20px; } h2 { font-size: 17px; margin: 16px 0 4px; }
.note, .filters-applied { color: #4b5563; font-size: 13px; margin: 2px 0 8px; }
.error { color: #991b1b; background: #fef2f2; padding: 8px; border-radius: 4px; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e5e7eb; text-align: left; }
th { background: #f3f4f6; } td.num { text-align: right; }
figure { margin: 8px 0; } figcaption { font-weight: 600; font-size: 13px; }
svg.chart { display: block; max-width: 100%; height: auto; margin: 8px 0; font-size: 12px; }
svg.chart text:not([fill]) { fill: #1f2937; } svg.chart text.value { font-weight: 600; }
svg.chart .grid { stroke: #d1d5db; } svg.chart .arrow { stroke: #4b5563; stroke-width: 2; fill: none; }
"""

NUMERIC = frozenset({"int", "number", "money", "pct"})
FILTER_NAMES = {"since": "days", "model": "model", "store": "store", "channel": "channel"}
"""A section's filters as the page names them (``until`` goes with ``since``)."""


@dataclass(frozen=True)
class Result:
    """A section's answer: its rows as dicts, or why there are none."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""


@dataclass(frozen=True)
class FormChoices:
    """What the filter form offers: the models, the stores and channels seen in the data."""

    models: Sequence[str]
    stores: Sequence[str] = ()
    channels: Sequence[str] = ()


def table(section: Section, rows: Sequence[dict[str, Any]]) -> str:
    """The section's rows as a table with formatted numbers."""
    head = "".join(f'<th scope="col">{escape(c.label)}</th>' for c in section.columns)
    body = []
    for row in rows:
        cells = []
        for column in section.columns:
            text = numbers.cell(column.kind, row.get(column.name), str(row.get("currency") or ""))
            css = ' class="num"' if column.kind in NUMERIC else ""
            cells.append(f"<td{css}>{escape(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    caption = f'<caption class="note">{escape(section.title)}: the numbers</caption>'
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_section(section: Section, result: Result) -> str:
    """One section: title, note, charts and table (or the error, or "no data")."""
    parts = [
        f'<section id="{escape(section.key)}" aria-labelledby="h-{escape(section.key)}">',
        f'<h2 id="h-{escape(section.key)}">{escape(section.title)}</h2>',
    ]
    if section.note:
        parts.append(f'<p class="note">{escape(section.note)}</p>')
    honoured = [FILTER_NAMES[name] for name in FILTER_NAMES if name in section.filters]
    parts.append(
        f'<p class="filters-applied">Filters used: {escape(", ".join(honoured))}</p>'
        if honoured
        else '<p class="filters-applied">Not filtered (the same for every filter)</p>'
    )
    if result.error:
        parts.append(f'<p class="error" role="alert">Could not read this: {escape(result.error)}</p>')
    elif not result.rows:
        parts.append('<p class="note">No data for these filters.</p>')
    else:
        if section.chart is not None:
            for panel, svg in draw(section.title, section.chart, section.columns, result.rows):
                caption = f"<figcaption>{escape(panel)}</figcaption>" if panel else ""
                parts.append(f"<figure>{caption}{svg}</figure>")
        parts.append(table(section, result.rows))
    parts.append("</section>")
    return "".join(parts)


def render_page_body(page: Page, results: dict[str, Result]) -> str:
    """A page's heading, purpose and sections."""
    sections = "".join(render_section(s, results.get(s.key, Result())) for s in page.sections)
    return f'<h1 class="page">{escape(page.title)}</h1><p class="note">{escape(page.purpose)}</p>{sections}'


def filter_form(filters: Filters, choices: FormChoices) -> str:
    """The GET form that reloads the page with other filters."""

    def options(name: str, values: Sequence[str], current: str, blank: str) -> str:
        items = [f'<option value="">{escape(blank)}</option>'] if blank else []
        for value in values:
            selected = " selected" if value == current else ""
            items.append(f'<option value="{escape(value, quote=True)}"{selected}>{escape(value)}</option>')
        return f'<label>{escape(name.title())}<select name="{name}">{"".join(items)}</select></label>'

    since = filters.since.isoformat() if filters.since else ""
    until = filters.until.isoformat() if filters.until else ""
    return (
        '<form class="filters" method="get" aria-label="Filters">'
        f'<label>Since (UTC day)<input type="date" name="since" value="{since}"></label>'
        f'<label>Until (UTC day)<input type="date" name="until" value="{until}"></label>'
        + options("model", choices.models, filters.model, "")
        + options("store", choices.stores, filters.store, "every store")
        + options("channel", choices.channels, filters.channel, "every channel")
        + '<button type="submit">Apply</button> <a href="?">Reset</a></form>'
    )


def document(
    title: str,
    subtitle: str,
    nav: Sequence[tuple[str, str, bool]],
    content: str,
    form: str = "",
) -> str:
    """A whole HTML document: header, navigation (href, text, current), optional form, content."""
    links = "".join(
        f'<li><a href="{escape(href, quote=True)}"{" aria-current=page" if current else ""}>'
        f"{escape(text)}</a></li>"
        for href, text, current in nav
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        '<a class="skip" href="#main">Skip to content</a>'
        f"<header><h1>O2O dashboard</h1><p>{escape(subtitle)}</p></header>"
        f'<nav aria-label="Pages"><ul>{links}</ul></nav>'
        f'<main id="main">{form}{content}</main></body></html>'
    )
