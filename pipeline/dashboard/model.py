"""What a dashboard page is made of: sections of a query, its columns and its chart.

Pure data: nothing here talks to ClickHouse or writes HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Column:
    """A result column as people see it: ``kind`` says how to format it.

    Kinds: ``text``, ``int``, ``number`` (two decimals), ``money`` (with the
    currency of the row's ``currency`` column), ``pct``, ``day``.
    """

    name: str
    label: str
    kind: str = "text"


@dataclass(frozen=True)
class Chart:
    """What to draw from a section's rows, above its table.

    ``bars``: one bar group per row, labelled by the ``label`` columns, one bar
    per ``values`` column. ``lines``: ``label`` is the day on the x axis, one
    line per ``values`` column, or per value of ``series`` (then ``values`` has
    one column). ``flow``: each row's ``label`` column is a path of steps
    separated by `` > ``, ending in the row's ``end`` column. With ``panels``,
    one chart per value of that column (a currency, a model kind).
    """

    kind: str
    label: tuple[str, ...]
    values: tuple[str, ...]
    series: str = ""
    panels: str = ""
    end: str = ""


@dataclass(frozen=True)
class Section:
    """One block of a page: a query, its columns, an optional chart and a note."""

    key: str
    title: str
    sql: str
    columns: tuple[Column, ...]
    chart: Chart | None = None
    note: str = ""
    filters: tuple[str, ...] = ("since", "until")  # the filters this section honours


@dataclass(frozen=True)
class Page:
    """A page of the dashboard: a path, a title, a one-line purpose and its sections."""

    slug: str
    title: str
    purpose: str
    sections: tuple[Section, ...] = field(default_factory=tuple)
