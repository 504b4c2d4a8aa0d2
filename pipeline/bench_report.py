"""Printing ``o2o bench``'s figures: sections of ``label  value`` lines and small tables, on stdout.

Every section starts with a ``## title`` line so that scripts (and the
integration test) can find it; numbers use thousands separators.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from pipeline.bench_probe import Census, ProcessSampler
from pipeline.bench_stats import per_event


def section(title: str, rows: Sequence[tuple[str, str]]) -> None:
    """A ``## title`` line, then aligned ``label  value`` lines."""
    click.echo(f"\n## {title}")
    if not rows:
        return
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        click.echo(f"{label:<{width}}  {value}")


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], note: str = "") -> None:
    """A ``## title`` line, an optional note, then a table: first column left, the others right-aligned."""
    click.echo(f"\n## {title}")
    if note:
        click.echo(note)
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    for line in (headers, *rows):
        cells = [f"{cell:<{widths[i]}}" if i == 0 else f"{cell:>{widths[i]}}" for i, cell in enumerate(line)]
        click.echo("  ".join(cells).rstrip())


def cpu_table(
    title: str,
    procs: ProcessSampler,
    broker_label: str,
    seconds: float,
    children_cpu: float,
    own_cpu: float,
    events: int,
) -> None:
    """CPU seconds per stage (sampled), the broker, the exact total of the tree, and the bench's own."""
    rows: list[list[str]] = []
    order = ["ingest", "identity", "journeys", "attribution", "sink", "run all (supervisor)"]
    by_label = procs.by_label()
    labels = [label for label in order if label in by_label] + sorted(set(by_label) - set(order))
    sampled = 0.0
    for label in labels:
        count, cpu, peak = by_label[label]
        sampled += cpu
        rows.append([label, str(count), f"{cpu:,.1f}", f"{cpu / seconds:.2f}", f"{cpu / events * 1e6:,.0f}",
                     f"{peak / 2**20:,.0f}"])  # fmt: skip
    if procs.broker is not None:
        cpu = procs.broker_cpu
        rows.append([broker_label, "1", f"{cpu:,.1f}", f"{cpu / seconds:.2f}", f"{cpu / events * 1e6:,.0f}",
                     f"{procs.broker_peak_rss / 2**20:,.0f}"])  # fmt: skip
    rows.append(
        [
            "all stage processes (exact, rusage)",
            "",
            f"{children_cpu:,.1f}",
            f"{children_cpu / seconds:.2f}",
            f"{children_cpu / events * 1e6:,.0f}",
            f"{procs.peak_rss / 2**20:,.0f}",
        ]
    )
    rows.append(
        ["o2o bench itself (sampling, sending)", "1", f"{own_cpu:,.1f}", f"{own_cpu / seconds:.2f}", "", ""]
    )
    table(
        title,
        ["process", "procs", "CPU s", "cores", "CPU µs/event", "peak RSS MiB"],
        rows,
        note=(
            f"over {seconds:.1f} s of wall time; per stage sampled every 0.25 s (up to 0.25 s of a "
            f"process's end is missed: {max(children_cpu - sampled, 0):.1f} s in all), exact total from "
            "getrusage of the finished tree; broker: CPU time while the run ran. Peak RSS: each "
            "process's own peak, summed per row (the total row: the peak of the sum)"
        ),
    )


def topic_table(title: str, census: Census, events: int, prefix: str) -> None:
    """Messages, records and bytes per input event of every topic under ``prefix``."""
    rows = [
        [
            row.topic,
            f"{row.messages:.3f}",
            f"{row.records:.3f}",
            f"{row.payload_bytes:,.0f}",
            "n/a" if row.disk_bytes is None else f"{row.disk_bytes:,.0f}",
        ]
        for row in per_event(census.counts, events, prefix)
    ]
    totals = [
        "all topics",
        f"{sum(c.messages for c in census.counts) / events:.3f}",
        f"{sum(c.records for c in census.counts) / events:.3f}",
        f"{sum(c.payload_bytes for c in census.counts) / events:,.0f}",
        "n/a" if not census.disk_known else f"{sum(c.disk_bytes or 0 for c in census.counts) / events:,.0f}",
    ]
    table(
        title,
        ["topic", "messages", "records", "payload B", "disk B"],
        [*rows, totals],
        note=(
            f"per input event ({events:,}); messages: end minus start offsets; records: read back, "
            "batch envelopes unpacked; payload B: key + value as read (uncompressed); disk B: the "
            "broker's log segments (lz4-compressed batches with their headers)"
            + ("" if census.complete else "; WARNING: some partitions could not be read to the end")
        ),
    )
