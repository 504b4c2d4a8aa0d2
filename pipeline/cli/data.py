"""``o2o simulate`` and ``o2o produce``: events into the raw topics."""

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


def register(group: click.Group) -> None:
    """Add these commands to the root group."""
    group.add_command(simulate)
    group.add_command(produce)
