"""``o2o demo`` and ``o2o bench``: the whole pipeline on the local stack."""

from __future__ import annotations

import time

import click

from pipeline.cli.common import console, handle_errors, settings_of
from pipeline.cli.data import progress_bar
from pipeline.config import Settings


def prepare(settings: Settings, reset: bool) -> None:
    """Start the local broker, optionally wipe this prefix's topics and database, then init."""
    from pipeline.clickhouse.client import connect
    from pipeline.clickhouse.migrations import apply_migrations
    from pipeline.kafka.admin import ensure_topics
    from pipeline.kafka.reset import delete_prefixed
    from pipeline.stack.local_kafka import LocalKafka

    status = LocalKafka(settings).up(progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    console.print(f"Kafka {status.version} at {status.bootstrap}")
    if reset:
        deleted = delete_prefixed(settings)
        console.print(f"reset: deleted {len(deleted)} topics under {settings.topic_prefix!r}")
    ensure_topics(settings)
    with connect(settings) as ch:
        if reset:
            ch.command(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
        apply_migrations(ch)


def run_drained(settings: Settings, total_events: int) -> float:
    """Run every stage until drained, showing which stages finished; returns seconds."""
    from pipeline.runtime.stages import run_all

    start = time.monotonic()
    with progress_bar() as bar:
        task = bar.add_task("stages drained", total=len(settings.stages))
        run_all(settings, drain=True, on_progress=lambda _s, done: bar.update(task, completed=len(done)))
        bar.update(task, completed=len(settings.stages))
    return time.monotonic() - start


@click.command()
@click.option("--customers", type=click.IntRange(1), default=2000, show_default=True)
@click.option("--days", type=click.IntRange(1), default=30, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--keep", is_flag=True, help="Keep earlier demo data instead of starting afresh.")
@click.pass_context
@handle_errors
def demo(ctx: click.Context, customers: int, days: int, seed: int, keep: bool) -> None:
    """Stack up, init, simulate customers, run every stage until drained, print the report.

    Starts afresh each time (deletes the topics under the prefix and the
    ClickHouse database) unless --keep.
    """
    from pipeline.clickhouse.format import render
    from pipeline.dashboard.build import render_file
    from pipeline.dashboard.filters import Filters
    from pipeline.producer import send_events
    from pipeline.report import build_report
    from pipeline.simulate import count_estimate, simulate

    settings = settings_of(ctx)
    started = time.monotonic()
    prepare(settings, reset=not keep)
    with progress_bar() as bar:
        task = bar.add_task("simulating and producing", total=count_estimate(customers, days))
        n = send_events(settings, simulate(customers, days, seed), on_sent=lambda k: bar.advance(task, k))
        bar.update(task, completed=n, total=n)
    seconds = run_drained(settings, n)
    console.print(f"{n} events through every stage in {seconds:.1f} s ({n / seconds:,.0f} events/s)")
    for title, (columns, rows) in build_report(settings).items():
        click.echo(f"\n{title}")
        click.echo(render(columns, rows, "table"))
    page = settings.state_dir / "dashboard.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(render_file(settings, Filters(settings.models[0])), encoding="utf-8")
    elapsed = time.monotonic() - started
    console.print(f"\ndashboard (every page, one file): {page.resolve().as_uri()}", soft_wrap=True)
    console.print(
        f"demo finished in {elapsed:.0f} s; try: o2o dashboard (the same pages served, with filters), "
        f"o2o sql 'SELECT * FROM {{db}}.sessions LIMIT 5', "
        "or o2o attribution fit --report (Markov and Shapley on the demo's paths)"
    )


def register(group: click.Group) -> None:
    """Add these commands to the root group."""
    from pipeline.bench import bench

    group.add_command(demo)
    group.add_command(bench)
