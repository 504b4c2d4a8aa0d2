"""``o2o``: run the local stack, the stages, and query the results.

Every command reads its settings from ``O2O_*`` environment variables and an
optional TOML file (``--config`` or ``O2O_CONFIG``); see ``docs/configuration.md``.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import date
from pathlib import Path

import click

from pipeline.cli.common import console, handle_errors, settings_of
from pipeline.config import STAGES, Settings

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
@click.option(
    "--secure",
    is_flag=True,
    help="Also listen with SASL_SSL on O2O_KAFKA_SECURE_PORT (default: broker port + 2): a local CA, a "
    "broker certificate for localhost and 127.0.0.1 and a SCRAM user `o2o` are made once under "
    "<state dir>/kafka/secure, whose client.env holds the O2O_ settings that reach it.",
)
@click.pass_context
@handle_errors
def stack_up(ctx: click.Context, secure: bool) -> None:
    """Fetch (once, cached) and start the local broker; returns when it accepts connections."""
    from pipeline.stack.local_kafka import LocalKafka

    status = LocalKafka(settings_of(ctx)).up(
        progress=lambda msg: console.print(f"[dim]{msg}[/]"), secure=secure
    )
    console.print(f"[green]Kafka {status.version} running[/] at {status.bootstrap} (pid {status.pid})")
    if status.secure_bootstrap is not None:
        env = settings_of(ctx).state_dir / "kafka" / "secure" / "client.env"
        console.print(f"SASL_SSL at {status.secure_bootstrap}: `set -a; . {env}; set +a` sets the clients up")


@stack.command("certs")
@click.option(
    "--out",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for the files (created; existing files are kept).",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    required=True,
    help="A name (or IP address) the broker is reached by; repeat for each.",
)
@click.option(
    "--shared",
    is_flag=True,
    help="Leave the certificates and passwords readable by every user (private keys of the CA and "
    "the OAuth issuer stay 0600): for a volume only the broker's and the pipeline's containers "
    "mount, when they run as different users.",
)
@handle_errors
def stack_certs(folder: Path, hosts: tuple[str, ...], shared: bool) -> None:
    """Make a CA, a broker certificate for HOSTs and the user `o2o`'s password in a folder, once.

    The files of `o2o stack up --secure`, for a broker elsewhere: the SASL_SSL
    option of docker compose (deploy/compose-kafka-sasl-ssl.yml) runs it in a
    one-shot container. Reruns keep what exists, so clients keep their trust.
    """
    from pipeline.stack.secure_listener import ensure_secure_folder

    files = ensure_secure_folder(folder, hosts, shared=shared)
    for path in sorted(files.folder.iterdir()):
        click.echo(f"{path} {oct(path.stat().st_mode & 0o777)}")


@stack.command("oauth-issuer")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="Port on loopback (0: any)."
)
@click.option(
    "--lifetime", type=click.IntRange(60, 86400), default=3600, show_default=True, help="Token lifetime, s."
)
@click.pass_context
@handle_errors
def stack_oauth_issuer(ctx: click.Context, port: int, lifetime: int) -> None:
    """Serve OAuth tokens for the secure listener's OAUTHBEARER login, on 127.0.0.1, until stopped.

    The client-credentials grant for the client `o2o` (its secret in <state
    dir>/kafka/secure/oauth-client-secret); tokens are JWTs signed with the key
    whose public half the broker of `o2o stack up --secure` trusts. Prints the
    O2O_ settings that switch a client of client.env from SCRAM to OAUTHBEARER.
    """
    import signal

    from pipeline.stack.oauth_issuer import OAuthIssuer, oauth_client_settings
    from pipeline.stack.secure_listener import ensure_secure_files

    files = ensure_secure_files(settings_of(ctx).state_dir).issuer
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # before the server's threads inherit the mask
    issuer = OAuthIssuer(files, port=port, lifetime=lifetime).start()
    for name, value in oauth_client_settings(files, issuer.token_endpoint).items():
        click.echo(f"{name}={value}")
    sys.stdout.flush()
    stopped = signal.sigwait(stop_signals)
    issuer.stop()
    figures = (signal.Signals(stopped).name, issuer.issued, issuer.refused)
    log.info("token endpoint stopped by %s: %d tokens issued, %d refused", *figures)


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
@click.option(
    "--add-partitions",
    is_flag=True,
    help="Give existing topics the partitions O2O_PARTITIONS declares. Without it, init refuses: "
    "adding partitions moves keys and splits the stateful stages' state.",
)
@click.pass_context
@handle_errors
def init(ctx: click.Context, add_partitions: bool) -> None:
    """Create or update every topic and apply the ClickHouse migrations (idempotent).

    Existing topics keep their partition count unless --add-partitions
    (docs/operations.md#changing-the-partition-count).
    """
    from pipeline.clickhouse.client import connect
    from pipeline.clickhouse.migrations import apply_migrations
    from pipeline.kafka.admin import ensure_topics

    settings = settings_of(ctx)
    result = ensure_topics(settings, add_partitions=add_partitions)
    changed = {k: v for k, v in result.items() if v != "ok"}
    console.print(f"topics: {len(result)} declared, {len(changed)} created or updated")
    with connect(settings) as ch:
        applied = apply_migrations(ch)
    console.print(f"ClickHouse {settings.clickhouse_database}: {len(applied)} migrations applied")


@cli.command()
@click.argument("stage", type=click.Choice([*STAGES, "all"]))
@click.option("--drain", is_flag=True, help="Process what is in the input topics, flush, write, exit 0.")
@click.option("--after", multiple=True, hidden=True, help="(run all) wait for these stages to drain first.")
@click.option(
    "--copy",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Which of a stage's processes this is (0, 1, ...); picks its metrics port (docs/operations.md).",
)
@click.pass_context
@handle_errors
def run(ctx: click.Context, stage: str, drain: bool, after: tuple[str, ...], copy: int) -> None:
    """Run STAGE (ingest, identity, journeys, attribution, sink, activation) or all of them.

    Without --drain a stage is a long-lived consumer; stop it with Ctrl-C or
    SIGTERM. `all` runs each stage as its own process, or as several that
    share its partitions (O2O_WORKERS_JOURNEYS and the like;
    O2O_IDENTITY_WORKERS for identity); activation only when O2O_ACTIVATION_RULES names a
    rules file (docs/activation.md). Start more processes of a stage by hand
    with `run STAGE --copy N`: they split its input partitions.
    """
    from pipeline.runtime.stages import run_all, run_stage

    settings = settings_of(ctx)
    if stage == "all":
        run_all(settings, drain=drain)
    else:
        run_stage(settings, stage, drain=drain, after=after, copy=copy)


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
    "--model",
    "models",
    multiple=True,
    metavar="MODEL",
    help="Only this attribution model (repeatable; default: every model with credits, as in O2O_MODELS).",
)
@click.option("--since", metavar="DATE", help="Only conversions on or after this UTC day (YYYY-MM-DD).")
@click.option("--until", metavar="DATE", help="Only conversions on or before this UTC day (YYYY-MM-DD).")
@click.option(
    "--only",
    multiple=True,
    metavar="TABLE",
    help="Only this table (repeatable): revenue, net_revenue, conversions, o2o_split, "
    "o2o_split_share, instore_by_channel, o2o_labels, totals, dead_letters.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "tsv", "json", "html"]),
    default="table",
    show_default=True,
    help="table: titled tables; tsv: a '# <table>' line before each; json: one object, table -> rows; "
    "html: every page of the dashboard in one self-contained file (needs --out).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True),
    help="Write to this file instead of printing (required with --format html).",
)
@click.pass_context
@handle_errors
def report(
    ctx: click.Context,
    models: tuple[str, ...],
    since: str | None,
    until: str | None,
    only: tuple[str, ...],
    fmt: str,
    out: str | None,
) -> None:
    """Every attribution model side by side per channel, and the online-to-offline split.

    \b
    Tables, one column per model where it says "by model":
      revenue             credited revenue per channel
      net_revenue         the same, net of returns (attribution_adjustments)
      conversions         credited conversions per channel (fractional credits)
      o2o_split           credited revenue of in-store sales (conversion world
                          'offline': pos, geofence) and online orders ('online':
                          web, app), by the credited touch: 'online' (a digital
                          session) or 'store' (a store visit)
      o2o_split_share     the same as % of the conversion world's credited revenue
      instore_by_channel  in-store revenue credited to each online channel
      o2o_labels          conversions, revenue, average path length (touches,
                          own session included) and average days from the first
                          touch to the conversion, per O2O label
      totals              conversions, revenue, customers, unattributed conversions
      dead_letters        rejected messages by reason

    Amounts are per currency (a currency column), never added across
    currencies; credited conversions are counts and add up.
    Credit tables read the `o2o_split` view; conversions with nothing to credit
    are only in o2o_labels and totals. --since/--until select conversions by
    their UTC day (returns follow their conversion; dead letters go by the day
    they were received); --model does not change o2o_labels and totals.
    """
    from datetime import date

    from pipeline.config import ATTRIBUTION_MODELS
    from pipeline.report import TITLES, ReportOptions, build_tables, render_report

    unknown = [m for m in models if m not in ATTRIBUTION_MODELS]
    if unknown:
        raise click.BadParameter(
            f"unknown model {', '.join(unknown)}; known: {', '.join(ATTRIBUTION_MODELS)}",
            param_hint="--model",
        )
    unknown = [t for t in only if t not in TITLES]
    if unknown:
        raise click.BadParameter(
            f"unknown table {', '.join(unknown)}; known: {', '.join(TITLES)}", param_hint="--only"
        )
    days: dict[str, date | None] = {}
    for name, text in (("--since", since), ("--until", until)):
        try:
            days[name] = date.fromisoformat(text.strip()) if text is not None else None
        except ValueError:
            raise click.BadParameter(f"{text!r} is not a YYYY-MM-DD day", param_hint=name) from None
    first, last = days["--since"], days["--until"]
    if first is not None and last is not None and first > last:
        raise click.BadParameter("--since is after --until", param_hint="--since")
    settings = settings_of(ctx)
    if fmt == "html":
        if only:
            raise click.BadParameter("--format html writes every page; leave out --only", param_hint="--only")
        _write_html(settings, models, first, last, out)
        return
    options = ReportOptions(models=models, since=first, until=last)
    text = render_report(build_tables(settings, options, only), fmt)
    if out is None:
        click.echo(text)
    else:
        Path(out).write_text(text + "\n", encoding="utf-8")
        console.print(f"report written to {out}")


def _write_html(settings: Settings, models: tuple[str, ...], first: date | None, last: date | None,
                out: str | None) -> None:  # fmt: skip
    """The dashboard's pages in one file, for the first --model (else the first configured one)."""
    from pipeline.dashboard.build import render_file
    from pipeline.dashboard.filters import Filters

    if out is None:
        raise click.UsageError("--format html needs --out FILE")
    if len(models) > 1:
        raise click.BadParameter("--format html shows one model: give --model once", param_hint="--model")
    filters = Filters(models[0] if models else settings.models[0], first, last)
    Path(out).write_text(render_file(settings, filters), encoding="utf-8")
    console.print(f"dashboard written to {Path(out).resolve()}")


def full_cli() -> click.Group:
    """The root group with every command registered (safe to call more than once)."""
    from pipeline.cli import activations, attribution, collector, dashboard, data, demo, dlq, privacy, status

    for module in (attribution, privacy, data, demo, collector, dlq, activations, status, dashboard):
        module.register(cli)
    return cli


def main() -> None:
    """Entry point of the ``o2o`` console script."""
    full_cli()(prog_name="o2o")


if __name__ == "__main__":
    main()
