"""``o2o forget``: erase a person everywhere and keep them out; ``o2o export``: show what is stored."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.common import console, handle_errors, settings_of


@click.command()
@click.option(
    "--id",
    "specs",
    multiple=True,
    required=True,
    metavar="TYPE:VALUE",
    help="An identifier of the person (repeatable): email:alice@example.com, user_id:u1, "
    "loyalty_id:L1, phone:+4917..., device_id:..., anonymous_id:..., payment_token:...",
)
@click.option("--dry-run", is_flag=True, help="Show what would be removed; change nothing.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to wait, after publishing the suppression, for every running stage that reads it "
    "(ingest, identity, sink) to have read it before erasing; then the erasure goes ahead with a warning.",
)
@click.pass_context
@handle_errors
def forget(ctx: click.Context, specs: tuple[str, ...], dry_run: bool, fmt: str, wait: float) -> None:
    """Erase the persons holding these identifiers, and keep them out from now on.

    \b
    - finds every person holding one of the identifiers (email, phone and
      payment token are normalised and hashed like ingest does), with every
      person id merged into them and all their identifiers;
    - adds their hashed identifiers to the suppression list: later events
      carrying one become dead letters with reason `suppressed`, and the
      stages and the sink drop what they still had in flight; waits (--wait)
      until every running stage that reads the list has read it;
    - drops them from the state of identity, journeys and attribution;
    - then deletes their rows from every ClickHouse table (events, sessions,
      conversions, attribution, adjustments, identities, merges, conflicts)
      and dead letters naming their identifiers.
    Prints what it removed. Running it again removes nothing more.
    Works while the pipeline runs (the sink's query server erases on chDB).
    """
    import orjson

    from pipeline.clickhouse.format import render
    from pipeline.clickhouse.query_server import erase_any, query_any
    from pipeline.identity.erasure import find, identifier_key, publish, wait_until_read
    from pipeline.ingest.normalize import EventNormalizer

    settings = settings_of(ctx)
    normalizer = EventNormalizer.from_settings(settings)
    keys = [identifier_key(spec, normalizer) for spec in specs]
    db = settings.clickhouse_database
    erasure = find(lambda sql: query_any(settings, sql)[1], db, keys)
    read: list[str] = []
    late: list[str] = []
    if not dry_run:
        # suppress first: rows the stages and the sink still had in flight are then
        # dropped as the suppression reaches them, instead of landing after the delete
        publish(settings, erasure)
        read, late = wait_until_read(settings, wait)
        if late and fmt != "json":
            console.print(
                f"[yellow]warning:[/] {', '.join(late)} had not read the suppression after {wait:g} s; "
                "rows still in flight there may be stored after this erasure: run the same "
                "`o2o forget` again once they have"
            )
    counts = erase_any(settings, sorted(erasure.person_ids), sorted(erasure.identifiers), dry_run)
    summary = {
        "persons": sorted(erasure.persons),
        "person_ids": len(erasure.person_ids),
        "identifiers_suppressed": len(erasure.identifiers),
        "rows": counts,
        "dry_run": dry_run,
        "suppression_read_by": read,  # running stages that read the suppression before the erasure
        "suppression_not_read_by": late,
    }
    if fmt == "json":
        click.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
        return
    what = "would remove" if dry_run else "removed"
    if not erasure.persons:
        console.print("no stored person holds these identifiers")
    else:
        console.print(
            f"{len(erasure.persons)} person(s) ({len(erasure.person_ids)} ids with merged ones), "
            f"{len(erasure.identifiers)} identifier(s)"
        )
    click.echo(render(["table", f"rows {what}"], sorted(counts.items()), "table"))
    if not dry_run:
        console.print(
            f"suppressed {len(erasure.identifiers)} identifier(s): later events carrying them become "
            "dead letters (reason suppressed)"
            + (f"; read by the running {', '.join(read)} before the erasure" if read else "")
        )


@click.command()
@click.option("--id", "specs", multiple=True, required=True, metavar="TYPE:VALUE",
              help="An identifier of the person (repeatable), as for `o2o forget`.")  # fmt: skip
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the document to this file (created 0600) instead of standard output.")  # fmt: skip
@click.pass_context
@handle_errors
def export(ctx: click.Context, specs: tuple[str, ...], output: Path | None) -> None:
    """Everything stored about the persons holding these identifiers, as one JSON document.

    \b
    For a data subject's right of access and portability. The persons are
    found as `o2o forget` finds them (every person id merged into them, all
    their identifiers), and the document holds every row `o2o forget` would
    delete: events (each with its consent flags: the consent history),
    sessions, conversions, credits and adjustments, identities, aliases of
    merged persons, identity conflicts, and dead letters naming one of the
    identifiers; every stored version of a row, identifiers hashed as stored.
    Changes nothing. Works while the pipeline runs.
    """
    from datetime import UTC, datetime

    import orjson

    from pipeline.clickhouse.query_server import query_any
    from pipeline.identity.erasure import export_document, find, identifier_key
    from pipeline.ingest.normalize import EventNormalizer
    from pipeline.private_files import write_private_file

    settings = settings_of(ctx)
    normalizer = EventNormalizer.from_settings(settings)
    keys = [identifier_key(spec, normalizer) for spec in specs]
    db = settings.clickhouse_database
    erasure = find(lambda sql: query_any(settings, sql)[1], db, keys)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    document = export_document(lambda sql: query_any(settings, sql), db, erasure, now)
    data = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    if output is None:
        click.echo(data.decode(), nl=False)
        return
    write_private_file(output, data)
    rows = sum(len(r) for r in document["rows"].values())
    console.print(f"{len(erasure.persons)} person(s), {rows} row(s) written to {output}")


@click.command()
@click.option("--id", "specs", multiple=True, metavar="TYPE:VALUE",
              help="An identifier of the person (repeatable), as for `o2o forget`.")  # fmt: skip
@click.option("--lift", is_flag=True, help="Lift the restriction of these persons instead.")
@click.option("--list", "show", is_flag=True, help="Only list the restricted person ids.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
@handle_errors
def restrict(ctx: click.Context, specs: tuple[str, ...], lift: bool, show: bool, fmt: str) -> None:
    """Restrict the processing of the persons holding these identifiers (or lift it with --lift).

    \b
    For a data subject's right to restriction. Their data is kept and goes on
    flowing into ClickHouse, but until the restriction is lifted:
    - the activation stage decides nothing for them: each rule they trigger
      gives a `suppressed` decision with reason `restricted`, and no message;
    - `o2o attribution fit` leaves their paths out of the Markov and Shapley fits.
    The persons are found as `o2o forget` finds them (every person id merged
    into them); a person merged into another after this is not restricted
    under the new id: run it again then. Works while the pipeline runs; the
    activation stage reads the change within a second.
    """
    import orjson

    from pipeline.clickhouse.query_server import query_any
    from pipeline.identity.erasure import Suppressions, find, identifier_key, publish_restriction
    from pipeline.ingest.normalize import EventNormalizer

    settings = settings_of(ctx)
    if show:
        privacy = Suppressions(settings, "restrict-list").load()
        privacy.close()
        listed = sorted(privacy.restricted)
        click.echo(orjson.dumps(listed).decode() if fmt == "json" else "\n".join(listed))
        return
    if not specs:
        raise click.UsageError("name the persons with --id (or use --list)")
    normalizer = EventNormalizer.from_settings(settings)
    keys = [identifier_key(spec, normalizer) for spec in specs]
    found = find(lambda sql: query_any(settings, sql)[1], settings.clickhouse_database, keys)
    if found.person_ids:
        publish_restriction(settings, found.person_ids, lift)
    summary = {"persons": sorted(found.persons), "person_ids": sorted(found.person_ids), "lifted": lift}
    if fmt == "json":
        click.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    elif not found.person_ids:
        console.print("no stored person holds these identifiers: nothing restricted")
    else:
        done = "lifted the restriction of" if lift else "restricted"
        console.print(f"{done} {len(found.persons)} person(s) ({len(found.person_ids)} ids with merged ones)")


def register(group: click.Group) -> None:
    """Add ``o2o forget``, ``o2o export`` and ``o2o restrict`` to the CLI."""
    group.add_command(forget)
    group.add_command(export)
    group.add_command(restrict)
