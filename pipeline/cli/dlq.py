"""``o2o dlq``: look at dead letters and replay them into the raw topics."""

from __future__ import annotations

import click

from pipeline.cli.common import console, handle_errors, settings_of

SOURCE_CHOICE = click.Choice(["web", "app", "geofence", "pos"])


def _since(value: str | None) -> int | None:
    from pipeline.ingest.dead_letters import parse_since

    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None


@click.group()
def dlq() -> None:
    """Dead letters: events ingest rejected, with a typed reason and the original bytes.

    `o2o dlq list` shows what was rejected and why; fix the producer or the
    settings, then `o2o dlq replay` sends the payloads through ingest again.
    """


@dlq.command("list")
@click.option("--limit", type=click.IntRange(0), default=20, show_default=True, help="Sample rows to show.")
@click.option("--reason", help="Only this reason (malformed_json, schema_violation, unknown_type, ...).")
@click.option("--source", type=SOURCE_CHOICE, help="Only dead letters from this source's raw topic.")
@click.option("--since", help="Only dead letters received at or after this ISO time (naive: UTC).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
@handle_errors
def dlq_list(
    ctx: click.Context, limit: int, reason: str | None, source: str | None, since: str | None, fmt: str
) -> None:
    """Count dead letters by reason and source and show the newest samples.

    Reads ClickHouse's `dead_letters` view, so it shows what the sink has
    written; it works while the pipeline runs on the embedded engine.
    """
    import orjson

    from pipeline.clickhouse.format import render
    from pipeline.ingest.dead_letters import DeadLetterFilter, list_dead_letters

    settings = settings_of(ctx)
    summary = list_dead_letters(settings, DeadLetterFilter(reason, source, _since(since)), limit)
    if fmt == "json":
        click.echo(orjson.dumps(summary.as_json(), option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{summary.total} dead letters")
    click.echo(
        render(
            ["reason", "source", "count", "first", "last"],
            [[g.reason, g.source, g.count, g.first_at, g.last_at] for g in summary.groups],
            "table",
        )
    )
    if summary.samples:
        click.echo("\nnewest samples")
        click.echo(
            render(
                ["reason", "detail", "origin", "received_at", "payload"],
                [[s.reason, s.detail, s.origin, s.received_at, s.payload] for s in summary.samples],
                "table",
            )
        )


@dlq.command("replay")
@click.option("--reason", help="Only dead letters of this reason.")
@click.option("--source", type=SOURCE_CHOICE, help="Only dead letters from this source's raw topic.")
@click.option("--since", help="Only dead letters received at or after this ISO time (naive: UTC).")
@click.option("--dry-run", is_flag=True, help="Count what would be re-sent; send nothing.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
@handle_errors
def dlq_replay(
    ctx: click.Context, reason: str | None, source: str | None, since: str | None, dry_run: bool, fmt: str
) -> None:
    """Re-send chosen dead letters, byte for byte, to the raw topic they came from.

    Reads the dead-letter topic from its oldest retained message up to its end
    when the command starts (a throw-away consumer group that commits nothing,
    so running stages are not disturbed), keeps those matching --reason,
    --source and --since, and produces each original payload with its
    original key to its original raw topic. Ingest then judges it again:
    fixed input goes on, still-bad input becomes a new dead letter.

    Replaying twice duplicates nothing downstream: one replay sends identical
    payloads once, ingest drops exact duplicates by event_id within its dedup
    window, and every row written to ClickHouse has a deterministic id and
    version, so the tables collapse repeats and the views count each event
    once. Dead letters themselves are kept per raw message, so a payload
    rejected again appears under its new raw position.
    """
    import orjson

    from pipeline.clickhouse.format import render
    from pipeline.ingest.dead_letters import DeadLetterFilter, replay

    settings = settings_of(ctx)
    result = replay(settings, DeadLetterFilter(reason, source, _since(since)), dry_run=dry_run)
    if fmt == "json":
        click.echo(orjson.dumps(result.as_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        if result.resent:
            click.echo(render(["reason", "count"], [[r, n] for r, n in result.resent.most_common()], "table"))
        verb = "would re-send" if dry_run else "re-sent"
        click.echo(
            f"{verb} {result.total} of {result.matched} matching dead letters "
            f"({result.scanned} read, {result.duplicates} identical repeats skipped)"
        )
    if result.not_replayable:
        console.print(
            f"[yellow]{result.not_replayable} dead letters did not come from a raw topic of "
            f"{settings.topic_prefix!r} and were skipped[/]"
        )


def register(group: click.Group) -> None:
    """Add the ``dlq`` group to the root group."""
    group.add_command(dlq)
