"""``o2o attribution``: fit the data-driven models on the stored paths."""

from __future__ import annotations

import click

from pipeline.cli.common import console, handle_errors, settings_of


@click.group()
def attribution() -> None:
    """Data-driven attribution: Markov removal effects and Shapley values.

    `o2o attribution fit` reads every person's sessions from ClickHouse, fits
    the models on the paths they form and publishes the fit: the attribution
    stage credits new conversions under `markov` and `shapley` with the newest
    fit (until the first fit those models have no credits), and the sink
    stores every fit in the `attribution_models` table.
    """


@attribution.command("fit")
@click.option(
    "--model",
    "kinds",
    type=click.Choice(["markov", "shapley"]),
    multiple=True,
    help="Fit only this model (repeatable). Default: both.",
)
@click.option(
    "--order",
    type=click.IntRange(1, 4),
    default=1,
    show_default=True,
    help="Markov order (memory in touches).",
)
@click.option("--since", help="Only sessions that started on or after this UTC day (YYYY-MM-DD).")
@click.option("--report", is_flag=True, help="Print each channel's weight under every fitted model.")
@click.option("--dry-run", is_flag=True, help="Fit and print, but publish nothing.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "tsv", "json"]), default="table", show_default=True
)
@click.pass_context
@handle_errors
def fit(
    ctx: click.Context,
    kinds: tuple[str, ...],
    order: int,
    since: str | None,
    report: bool,
    dry_run: bool,
    fmt: str,
) -> None:
    """Fit Markov (removal effect) and Shapley models on the paths stored in ClickHouse.

    \b
    Paths: each person's sessions in time order; a session with a conversion
    ends a path (it converted), the sessions after a person's last conversion
    form a path without conversion. Works while the pipeline runs.
    The method and its limits: docs/attribution.md.
    """
    from datetime import UTC, datetime
    from typing import cast

    from pipeline.attribution.datadriven import ModelKind
    from pipeline.attribution.fitting import fit_models, load_corpus, publish
    from pipeline.clickhouse.format import render

    settings = settings_of(ctx)
    since_ms = 0
    if since:
        try:
            since_ms = int(datetime.strptime(since, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() * 1000)
        except ValueError:
            raise click.BadParameter(
                f"{since!r} is not a day like 2026-11-01", param_hint="--since"
            ) from None
    with console.status("reading paths from ClickHouse ..."):
        corpus = load_corpus(settings, since_ms)
    conversions = sum(p.conversions for p in corpus)
    journeys = sum(p.conversions + p.nulls for p in corpus)
    console.print(f"{journeys:,.0f} paths ({len(corpus):,} distinct), {conversions:,.0f} with a conversion")
    if conversions == 0:
        raise click.ClickException("no path ends in a conversion yet: nothing to fit")
    chosen = [cast(ModelKind, k) for k in (kinds or ("markov", "shapley"))]
    fits = fit_models(corpus, chosen, order)
    for fitted in fits:
        console.print(f"fitted {fitted.kind}: version {fitted.version}")
    if not dry_run:
        publish(settings, fits)
        console.print("published: new conversions are credited with these fits")
    if report or dry_run:
        channels = sorted(
            {c for f in fits for c in f.weights}, key=lambda c: -max(f.weights.get(c, 0.0) for f in fits)
        )
        rows = [[c, *(round(f.weights.get(c, 0.0), 4) for f in fits)] for c in channels]
        click.echo(render(["channel", *(f.kind for f in fits)], rows, fmt))


def register(group: click.Group) -> None:
    """Add ``o2o attribution`` to the CLI."""
    group.add_command(attribution)
