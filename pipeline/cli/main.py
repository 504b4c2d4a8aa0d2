"""``o2o``: run the local stack, the stages, and query the results.

Every command reads its settings from ``O2O_*`` environment variables and an
optional TOML file (``--config`` or ``O2O_CONFIG``); see ``docs/configuration.md``.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from pipeline.cli.common import console, handle_errors, settings_of
from pipeline.config import STAGES

log = logging.getLogger("pipeline")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", type=click.Path(dir_okay=False), help="TOML settings file (default: ./o2o.toml).")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Logging level (default: O2O_LOG_LEVEL or INFO).",
)
@click.pass_context
def cli(ctx: click.Context, config: str | None, log_level: str | None) -> None:
    """O2O customer-journey pipeline: Kafka in, identity, sessions, attribution, ClickHouse out.

    Quick start: `o2o demo` starts a local Kafka broker, simulates customers,
    runs every stage and prints the attribution report.
    """
    if config:
        os.environ["O2O_CONFIG"] = config
    if log_level:
        os.environ["O2O_LOG_LEVEL"] = log_level.upper()
    level = os.environ.get("O2O_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if level != "DEBUG":
        # the libraries under the stages talk a lot at INFO; keep their warnings
        for name in ("faust", "mode", "aiokafka", "clickhouse_connect", "uvicorn.access"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # timers that overrun under load are expected on a busy 2-core machine
        logging.getLogger("mode.timers").setLevel(logging.ERROR)
    ctx.ensure_object(dict)


@cli.group()
def stack() -> None:
    """The local Apache Kafka broker (KRaft, loopback), fetched from Maven Central."""


@stack.command("up")
@click.pass_context
@handle_errors
def stack_up(ctx: click.Context) -> None:
    """Fetch (once, cached) and start the local broker; returns when it accepts connections."""
    from pipeline.stack.local_kafka import LocalKafka

    status = LocalKafka(settings_of(ctx)).up(progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    console.print(f"[green]Kafka {status.version} running[/] at {status.bootstrap} (pid {status.pid})")


@stack.command("status")
@click.pass_context
@handle_errors
def stack_status(ctx: click.Context) -> None:
    """Show whether the local broker runs, where, and with which data folder."""
    from pipeline.stack.local_kafka import LocalKafka

    status = LocalKafka(settings_of(ctx)).status()
    for key, value in vars(status).items():
        click.echo(f"{key}: {value}")
    if not status.running:
        raise SystemExit(3)


@stack.command("down")
@click.option("--purge", is_flag=True, help="Also delete the broker's data and logs.")
@click.pass_context
@handle_errors
def stack_down(ctx: click.Context, purge: bool) -> None:
    """Stop the local broker cleanly (data kept unless --purge)."""
    from pipeline.stack.local_kafka import LocalKafka

    LocalKafka(settings_of(ctx)).down(purge=purge)
    console.print("Kafka stopped" + (" and purged" if purge else ""))


@cli.command()
@click.pass_context
@handle_errors
def init(ctx: click.Context) -> None:
    """Create or update every topic and apply the ClickHouse migrations (idempotent)."""
    from pipeline.clickhouse.client import connect
    from pipeline.clickhouse.migrations import apply_migrations
    from pipeline.kafka.admin import ensure_topics

    settings = settings_of(ctx)
    result = ensure_topics(settings)
    changed = {k: v for k, v in result.items() if v != "ok"}
    console.print(f"topics: {len(result)} declared, {len(changed)} created or updated")
    with connect(settings) as ch:
        applied = apply_migrations(ch)
    console.print(f"ClickHouse {settings.clickhouse_database}: {len(applied)} migrations applied")


@cli.command()
@click.argument("stage", type=click.Choice([*STAGES, "all"]))
@click.option("--drain", is_flag=True, help="Process what is in the input topics, flush, write, exit 0.")
@click.option("--after", multiple=True, hidden=True, help="(run all) wait for these stages to drain first.")
@click.pass_context
@handle_errors
def run(ctx: click.Context, stage: str, drain: bool, after: tuple[str, ...]) -> None:
    """Run STAGE (ingest, identity, journeys, attribution, sink) or all of them.

    Without --drain a stage is a long-lived consumer; stop it with Ctrl-C or
    SIGTERM. `all` runs each stage as its own process.
    """
    from pipeline.runtime.stages import run_all, run_stage

    settings = settings_of(ctx)
    if stage == "all":
        run_all(settings, drain=drain)
    else:
        run_stage(settings, stage, drain=drain, after=after)


@cli.command()
@click.argument("query")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "tsv", "json"]), default="table", show_default=True
)
@click.pass_context
@handle_errors
def sql(ctx: click.Context, query: str, fmt: str) -> None:
    """Run a read-only QUERY against ClickHouse and print the result.

    Works while the pipeline runs on the embedded engine: the sink process
    answers for it. `{db}` in the query is replaced by the configured database.
    """
    from pipeline.clickhouse.format import render
    from pipeline.clickhouse.query_server import query_any

    settings = settings_of(ctx)
    columns, rows = query_any(settings, query.replace("{db}", settings.clickhouse_database))
    click.echo(render(list(columns), [list(r) for r in rows], fmt))


@cli.command()
@click.option(
    "--format", "fmt", type=click.Choice(["table", "tsv", "json"]), default="table", show_default=True
)
@click.pass_context
@handle_errors
def report(ctx: click.Context, fmt: str) -> None:
    """Print conversions and credited revenue per channel for each model, and the O2O split."""
    from pipeline.clickhouse.format import render
    from pipeline.report import build_report

    for title, (columns, rows) in build_report(settings_of(ctx)).items():
        if fmt == "table":
            click.echo(f"\n{title}")
        click.echo(render(columns, rows, fmt))


def main() -> None:
    """Entry point of the ``o2o`` console script."""
    from pipeline.cli import collector, data, demo, dlq

    data.register(cli)
    demo.register(cli)
    collector.register(cli)
    dlq.register(cli)
    cli(prog_name="o2o")


if __name__ == "__main__":
    main()
