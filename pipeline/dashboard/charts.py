"""Charts as inline SVG: bars, lines by day and path flows, drawn from a section's rows.

No script and no external file: a chart is text inside the page. Each has a
``<title>`` and ``aria-label`` saying what it shows; the section's table below
it holds the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, timedelta
from html import escape
from typing import Any

from pipeline.dashboard import numbers
from pipeline.dashboard.model import Chart, Column

PALETTE = ("#1f5fa8", "#c2410c", "#15803d", "#7c3aed", "#b91c1c", "#0f766e", "#a16207", "#4b5563",
           "#be185d", "#1e3a8a")  # fmt: skip
"""Series colours, each at least 4.5:1 against white."""
STORE_COLOUR = "#c2410c"
ONLINE_COLOUR = "#1f5fa8"
END_COLOUR = "#1f2937"
WIDTH = 680
LABEL_WIDTH = 190
CHAR_WIDTH = 7.0
MAX_DAYS = 1100
"""Line charts fill in the days without rows for ranges up to this long."""
Series = list[tuple[str, list[float]]]
Formatter = Callable[[float], str]


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{escape(text)}</text>'


def _svg(title: str, height: float, body: list[str]) -> str:
    label = escape(title, quote=True)
    return (
        f'<svg class="chart" role="img" aria-label="{label}" viewBox="0 0 {WIDTH} {height:.0f}" '
        f'width="{WIDTH}" height="{height:.0f}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def _legend(series: Series, y: float) -> tuple[list[str], float]:
    if len(series) < 2:
        return [], y
    parts, x = [], float(LABEL_WIDTH)
    for index, (name, _values) in enumerate(series):
        width = 36 + CHAR_WIDTH * len(name)
        if x + width > WIDTH and x > LABEL_WIDTH:  # wrap to the next legend row
            x, y = float(LABEL_WIDTH), y + 18
        colour = PALETTE[index % len(PALETTE)]
        parts.append(f'<rect x="{x:.1f}" y="{y - 10:.1f}" width="12" height="12" fill="{colour}"/>')
        parts.append(_text(x + 16, y, name))
        x += width
    return parts, y + 14


def bar_chart(title: str, categories: Sequence[str], series: Series, fmt: Formatter) -> str:
    """Horizontal bars: one group per category, one bar per series, each with its value written."""
    body, top = _legend(series, 14)
    top += 4
    peak = max((abs(v) for _name, values in series for v in values), default=0.0) or 1.0
    scale = (WIDTH - LABEL_WIDTH - 110) / peak
    bar, gap = 14, 10
    y = top
    for index, category in enumerate(categories):
        group = len(series) * (bar + 2)
        body.append(_text(LABEL_WIDTH - 8, y + group / 2 + 4, _clip(category, 26), "end"))
        for number, (_name, values) in enumerate(series):
            value = values[index]
            length = abs(value) * scale
            body.append(
                f'<rect x="{LABEL_WIDTH}" y="{y:.1f}" width="{length:.1f}" height="{bar}" '
                f'fill="{PALETTE[number % len(PALETTE)]}"/>'
            )
            body.append(_text(LABEL_WIDTH + length + 6, y + bar - 3, fmt(value), extra=' class="value"'))
            y += bar + 2
        y += gap
    return _svg(title, y + 4, body)


def line_chart(title: str, days: Sequence[str], series: Series, fmt: Formatter) -> str:
    """Lines over days: the y axis from 0 to the highest value, a dot and its value on the last day."""
    body, top = _legend(series, 14)
    left, right, height = 90.0, WIDTH - 90.0, 200.0
    top += 10
    bottom = top + height
    peak = max((v for _name, values in series for v in values), default=0.0) or 1.0

    def x_of(i: int) -> float:
        return left + (right - left) * (i / (len(days) - 1) if len(days) > 1 else 0.5)

    def y_of(v: float) -> float:
        return bottom - height * max(v, 0.0) / peak

    for fraction in (0.0, 0.5, 1.0):
        y = y_of(peak * fraction)
        body.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        body.append(_text(left - 6, y + 4, fmt(peak * fraction), "end"))
    step = max(1, len(days) // 6)
    for i, day in enumerate(days):
        last = i == len(days) - 1
        if last or (i % step == 0 and len(days) - 1 - i >= step / 2):  # no label crowding the last one
            body.append(_text(x_of(i), bottom + 16, day, "middle"))
    for number, (_name, values) in enumerate(series):
        colour = PALETTE[number % len(PALETTE)]
        points = " ".join(f"{x_of(i):.1f},{y_of(v):.1f}" for i, v in enumerate(values))
        body.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for i, v in enumerate(values):
            body.append(f'<circle cx="{x_of(i):.1f}" cy="{y_of(v):.1f}" r="3" fill="{colour}"/>')
        if values:
            body.append(
                _text(
                    x_of(len(values) - 1) + 6,
                    y_of(values[-1]) + 4,
                    fmt(values[-1]),
                    extra=f' fill="{colour}" class="value"',
                )
            )
    return _svg(title, bottom + 26, body)


def flow_chart(title: str, paths: Sequence[tuple[list[str], str, float]], fmt: Formatter) -> str:
    """Each path as boxes of its touches (store visits in their own colour) flowing into its sale."""
    body: list[str] = []
    y = 6.0
    for steps, end, count in paths:
        x = 6.0
        for index, step in enumerate([*steps, end]):
            last = index == len(steps)
            colour = END_COLOUR if last else STORE_COLOUR if step == "store" else ONLINE_COLOUR
            width = 16 + CHAR_WIDTH * len(step)
            if x + width > WIDTH - 80:
                body.append(_text(x, y + 18, "…"))
                break
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="26" rx="4" fill="{colour}"/>'
            )
            body.append(_text(x + width / 2, y + 17, step, "middle", ' fill="#ffffff"'))
            x += width
            if not last:
                body.append(f'<path d="M{x + 2:.1f},{y + 13:.1f} h10 l-4,-4 m4,4 l-4,4" class="arrow"/>')
                x += 16
        body.append(_text(WIDTH - 6, y + 18, fmt(count), "end", ' class="value"'))
        y += 34
    return _svg(title, y + 2, body)


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def _formatter(columns: dict[str, Column], name: str, currency: str) -> Formatter:
    kind = columns[name].kind if name in columns else "number"
    return lambda value: numbers.cell(kind, value, currency)


def draw(
    title: str, chart: Chart, columns: Sequence[Column], rows: Sequence[dict[str, Any]]
) -> list[tuple[str, str]]:
    """(panel, SVG) of the chart for these rows: one per value of ``chart.panels`` (else panel "")."""
    by_name = {column.name: column for column in columns}
    panels: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        panels.setdefault(str(row.get(chart.panels, "")) if chart.panels else "", []).append(row)
    svgs: list[tuple[str, str]] = []
    for panel, panel_rows in panels.items():
        heading = f"{title} ({panel})" if panel else title
        currency = panel if chart.panels == "currency" else ""
        fmt = _formatter(by_name, chart.values[0], currency)
        if chart.kind == "flow":
            paths = [
                (str(r[chart.label[0]]).split(" > "), str(r[chart.end]), numbers.plain(r[chart.values[0]]))
                for r in panel_rows
            ]
            svgs.append((panel, flow_chart(heading, paths, fmt)))
            continue
        labels = [" · ".join(numbers.cell("text", r.get(c)) for c in chart.label) for r in panel_rows]
        if chart.kind == "lines":
            svgs.append((panel, line_chart(heading, *_by_day(chart, by_name, labels, panel_rows), fmt)))
            continue
        series = [(_label(by_name, v), [numbers.plain(r.get(v)) for r in panel_rows]) for v in chart.values]
        svgs.append((panel, bar_chart(heading, labels, series, fmt)))
    return svgs


def every_day(days: Sequence[str]) -> list[str]:
    """The days from the first to the last of ``days`` (ISO dates), none left out.

    A day without rows had nothing (no revenue, no dead letter): drawn as 0,
    and the x axis stays proportional to time. Labels that are not dates, or
    a range over :data:`MAX_DAYS`, are kept as they are.
    """
    try:
        parsed = sorted({date.fromisoformat(day[:10]) for day in days})
    except ValueError:
        return list(dict.fromkeys(days))
    if not parsed or (parsed[-1] - parsed[0]).days > MAX_DAYS:
        return [d.isoformat() for d in parsed]
    return [(parsed[0] + timedelta(days=n)).isoformat() for n in range((parsed[-1] - parsed[0]).days + 1)]


def _by_day(
    chart: Chart, by_name: dict[str, Column], labels: Sequence[str], rows: Sequence[dict[str, Any]]
) -> tuple[list[str], Series]:
    """Every day of the range and one line per series (``chart.series`` values, else value columns)."""
    days = every_day([label[:10] for label in labels])
    index = {day: i for i, day in enumerate(days)}
    lines: dict[str, list[float]] = {}
    for label, row in zip(labels, rows, strict=True):
        if chart.series:
            points = [(str(row.get(chart.series)), chart.values[0])]
        else:
            points = [(_label(by_name, column), column) for column in chart.values]
        for name, column in points:
            values = lines.setdefault(name, [0.0] * len(days))
            values[index[label[:10]]] += numbers.plain(row.get(column))
    return days, list(lines.items())


def _label(by_name: dict[str, Column], name: str) -> str:
    """How a value column is called in a legend."""
    return by_name[name].label if name in by_name else name
