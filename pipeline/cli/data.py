"""``o2o simulate``, ``o2o produce`` and ``o2o replay``: events into the raw topics."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from pipeline.cli.common import console, handle_errors, settings_of


def progress_bar() -> Progress:
    """The progress bar every long command shows."""
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    )  # fmt: skip


@click.command()
@click.option(
    "--customers", type=click.IntRange(1), default=2000, show_default=True, help="Number of customers."
)
@click.option("--days", type=click.IntRange(1), default=30, show_default=True, help="Days of activity.")
@click.option("--seed", type=int, default=42, show_default=True, help="Random seed; same seed, same events.")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write JSON lines here instead of Kafka."
)
@click.pass_context
@handle_errors
def simulate(ctx: click.Context, customers: int, days: int, seed: int, out: Path | None) -> None:
    """Simulate realistic O2O customers (web, app, store visits, POS) deterministically."""
    import orjson

    from pipeline.producer import send_events
    from pipeline.simulate import count_estimate
    from pipeline.simulate import simulate as generate

    events = generate(customers=customers, days=days, seed=seed)
    with progress_bar() as bar:
        task = bar.add_task("simulating", total=count_estimate(customers, days))
        if out is not None:
            n = 0
            with out.open("wb") as fh:
                for event in events:
                    fh.write(orjson.dumps(event) + b"\n")
                    n += 1
                    if n % 5000 == 0:
                        bar.update(task, completed=n)
            bar.update(task, completed=n, total=n)
            console.print(f"wrote {n} events to {out}")
            return
        n = send_events(settings_of(ctx), events, on_sent=lambda k: bar.advance(task, k))
        bar.update(task, completed=n, total=n)
    console.print(f"produced {n} events")


@click.command()
@click.option("--file", "path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON lines, one contract event per line ('-' is not supported).")  # fmt: skip
@click.pass_context
@handle_errors
def produce(ctx: click.Context, path: Path) -> None:
    """Send contract events from a JSON-lines FILE to the raw topics (bad lines become dead letters)."""
    from pipeline.producer import send_events

    def lines() -> object:
        with path.open("rb") as fh:
            for line in fh:
                line = line.rstrip(b"\r\n")  # the rest is sent byte for byte
                if line.strip():
                    yield line

    total = sum(1 for line in path.open("rb") if line.strip())
    with progress_bar() as bar:
        task = bar.add_task("producing", total=total)
        n = send_events(settings_of(ctx), lines(), on_sent=lambda k: bar.advance(task, k))  # type: ignore[arg-type]
    console.print(f"produced {n} events from {path}")


@click.command()
@click.option(
    "--from-prefix",
    required=True,
    metavar="PREFIX",
    help="Topic prefix whose raw topics to copy (the old deployment's O2O_TOPIC_PREFIX, dot included).",
)
@click.option(
    "--source",
    "sources",
    multiple=True,
    type=click.Choice(["web", "app", "geofence", "pos"]),
    help="Only this source's raw topic (repeatable; default: all four).",
)
@click.option(
    "--follow",
    is_flag=True,
    help="Once copied, keep copying what producers still send there, until Ctrl-C or SIGTERM.",
)
@click.pass_context
@handle_errors
def replay(ctx: click.Context, from_prefix: str, sources: tuple[str, ...], follow: bool) -> None:
    """Copy the raw topics of --from-prefix into this prefix's, message for message.

    Run it against a new O2O_TOPIC_PREFIX and O2O_CLICKHOUSE_DATABASE (after
    `o2o init`), then run the pipeline there: every output is rebuilt with
    today's code and settings, for example after a bug fix or to change the
    partition count (docs/operations.md#replaying-the-raw-topics). Keys,
    values, headers and timestamps are kept.
    """
    from pipeline.kafka.raw_copy import copy_raw, raw_backlog

    settings = settings_of(ctx)
    with progress_bar() as bar:
        task = bar.add_task("copying", total=raw_backlog(settings, from_prefix, sources))
        copied = copy_raw(settings, from_prefix, sources, follow, on_copied=lambda k: bar.advance(task, k))
    by_source = ", ".join(f"{source} {n}" for source, n in sorted(copied.items())) or "nothing"
    console.print(
        f"copied {sum(copied.values())} messages from {from_prefix} to {settings.topic_prefix}: {by_source}"
    )


def register(group: click.Group) -> None:
    """Add these commands to the root group."""
    group.add_command(simulate)
    group.add_command(produce)
    group.add_command(replay)
