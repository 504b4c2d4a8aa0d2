"""``o2o status``: one screen for operations, once, refreshed, or as JSON."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

import click
from rich.console import Group
from rich.table import Table
from rich.text import Text

from pipeline.cli.common import handle_errors, settings_of
from pipeline.status import RECENT_SECONDS, Status, as_json, gather


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _clock(at: float | None) -> str:
    return "-" if at is None else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _owned(partitions: Sequence[str], inputs: set[str]) -> list[str]:
    """A member's ``topic[...]`` entries of the stage's input topics (not its changelogs)."""
    return [entry for entry in partitions if entry.split("[", 1)[0] in inputs]


def render_status(status: Status, partitions: bool) -> Group:
    """The status as rich tables: Kafka, stages (and partitions), ClickHouse, alerts."""
    parts: list[Table | Text] = []
    if status.broker_error:
        parts.append(Text(f"Kafka {status.bootstrap_servers}: {status.broker_error}", style="bold red"))
    else:
        dead = "-" if status.dead_letters_recent is None else str(status.dead_letters_recent)
        parts.append(Text(f"Kafka {status.bootstrap_servers}: cluster {status.cluster_id}, controller "
                          f"{status.controller}, brokers {'; '.join(status.brokers)}; dead letters in the "
                          f"last {RECENT_SECONDS // 60} min: {dead}"))  # fmt: skip
        stages = Table(title="stages", title_justify="left")
        for column in ("stage", "group state", "processes", "lag", "oldest unacknowledged",
                       "acknowledged up to", "lost to retention"):  # fmt: skip
            stages.add_column(column, justify="right" if column in ("lag", "lost to retention") else "left")
        for s in status.stages:
            inputs = {p.topic for p in s.lag.partitions}
            processes = "\n".join(
                f"{m.client_id}@{m.host.lstrip('/')} {' '.join(_owned(m.partitions, inputs))}"
                for m in s.members
            )
            row = (s.stage, s.state, processes or "none", f"{s.lag.lag:,}", _age(s.oldest_age_seconds))
            stages.add_row(
                *row,
                _clock(s.lag.newest_acknowledged_at),
                f"{s.lag.lost:,}",
                style="red" if s.near_retention or s.lag.lost else None,
            )
        parts.append(stages)
        if partitions:
            table = Table(title="partitions", title_justify="left")
            for column in (
                "stage",
                "topic",
                "partition",
                "start",
                "committed",
                "end",
                "lag",
                "oldest unacknowledged",
            ):
                table.add_column(column, justify="left" if column in ("stage", "topic") else "right")
            for s in status.stages:
                for p in s.lag.partitions:
                    if p.end == 0:
                        continue  # never held a record
                    age = (
                        None
                        if p.oldest_unacknowledged_at is None or not p.lag
                        else status.at - p.oldest_unacknowledged_at
                    )
                    committed = "-" if p.committed is None else str(p.committed)
                    offsets = (str(p.partition), str(p.start), committed, str(p.end))
                    table.add_row(s.stage, p.topic, *offsets, f"{p.lag:,}", _age(age))
            parts.append(table)
    ch = status.clickhouse
    if not ch.read:
        parts.append(Text("ClickHouse: not read (--no-clickhouse)"))
    elif ch.error:
        parts.append(Text(f"ClickHouse: {ch.error}", style="bold red"))
    else:
        active = sum(n for _t, n, _r in ch.parts)
        recent = f"last {RECENT_SECONDS // 60} min: {ch.events_stored:,} events stored"
        late = f"{ch.very_late_events:,} very late"
        fresh = f"received to stored p50 {_age(ch.freshness_p50)} p99 {_age(ch.freshness_p99)}"
        summary = f"{active} active parts in {len(ch.parts)} tables, {ch.merges} merges running"
        parts.append(Text(f"ClickHouse: {summary}; {recent}, {late}, {fresh}"))
    alerts = status.alerts
    parts.append(
        Text(
            "\n".join(f"ALERT {a}" for a in alerts) if alerts else "no alerts",
            style="bold red" if alerts else "green",
        )
    )
    return Group(*parts)


@click.command()
@click.option("--json", "as_json_output", is_flag=True, help="Print one JSON object instead of tables.")
@click.option(
    "--watch", type=click.FloatRange(min=1), metavar="SECONDS", help="Refresh every SECONDS until Ctrl-C."
)
@click.option(
    "--partitions",
    is_flag=True,
    help="Also show the offsets and lag of every input partition that held records.",
)
@click.option("--no-clickhouse", is_flag=True, help="Leave ClickHouse out (Kafka only; faster).")
@click.pass_context
@handle_errors
def status(
    ctx: click.Context, as_json_output: bool, watch: float | None, partitions: bool, no_clickhouse: bool
) -> None:
    """Show the broker, every stage's processes, lag and backlog age, and ClickHouse.

    For each stage (a consumer group): its state, its processes with the
    partitions each owns, the records not yet acknowledged, how long ago the
    oldest of them was written, when the newest acknowledged record was
    written (Kafka keeps no commit time), and records deleted by retention
    before the stage read them. Then dead letters and very late events of
    the last five minutes, how long events took from receipt to ClickHouse,
    and ClickHouse's active parts and running merges. Alerts: an unreachable
    part, records lost to retention, a backlog older than O2O_LAG_ALERT_SHARE
    of its topic's retention. Exits 1 when there are alerts (without --watch).
    """
    import orjson
    from rich.console import Console
    from rich.live import Live

    settings = settings_of(ctx)
    if watch is None:
        reading = gather(settings, clickhouse=not no_clickhouse)
        if as_json_output:
            click.echo(orjson.dumps(as_json(reading), option=orjson.OPT_INDENT_2).decode())
        else:
            Console().print(render_status(reading, partitions))
        if reading.alerts:
            raise SystemExit(1)
        return
    try:
        if as_json_output:
            while True:  # one JSON object per line and reading
                click.echo(orjson.dumps(as_json(gather(settings, clickhouse=not no_clickhouse))).decode())
                time.sleep(watch)
        with Live(Text("reading..."), auto_refresh=False) as live:
            while True:
                live.update(
                    render_status(gather(settings, clickhouse=not no_clickhouse), partitions), refresh=True
                )
                time.sleep(watch)
    except KeyboardInterrupt:
        pass


def register(group: click.Group) -> None:
    """Add the ``status`` command to the root group."""
    group.add_command(status)
