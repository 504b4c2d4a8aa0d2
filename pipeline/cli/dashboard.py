"""``o2o dashboard``: the web dashboard for store, marketing and e-commerce teams."""

from __future__ import annotations

import click

from pipeline.cli.common import console, handle_errors, settings_of
from pipeline.errors import ConfigError

DEFAULT_PORT = 8050


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. The dashboard has no login: keep it on loopback, or put it "
              "behind a proxy that authenticates.")  # fmt: skip
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port to listen on (0: any free port).")  # fmt: skip
@click.pass_context
@handle_errors
def dashboard(ctx: click.Context, host: str, port: int) -> None:
    """Serve the O2O dashboard (read-only) until Ctrl-C.

    \b
    Pages: /            overview: revenue online and in store, the O2O split, by day
           /attribution every model per channel, data-driven weights, top paths
           /stores      visits to purchase, sales, online influence, click and
                        collect, coupons, staff
           /journeys    path length and days to convert per O2O label
           /quality     dead letters, very late events, identity conflicts
           /activation  decisions, suppressions by guard, lift against the holdout

    Filters go in the URL so a view can be shared: ?since=YYYY-MM-DD&until=
    YYYY-MM-DD&model=linear&store=s1&channel=email. Queries take the read-only
    path of `o2o sql`, so the dashboard works while the pipeline runs. The same
    pages as one offline file: `o2o report --format html --out FILE`.
    """
    from pipeline.dashboard.server import DashboardServer

    settings = settings_of(ctx)
    try:
        server = DashboardServer(settings, host, port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    console.print(f"[green]O2O dashboard[/] at {server.url} (Ctrl-C to stop)")
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def register(group: click.Group) -> None:
    """Add the ``dashboard`` command to the root group."""
    group.add_command(dashboard)
