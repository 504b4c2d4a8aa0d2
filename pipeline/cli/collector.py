"""``o2o collector``: the HTTP collector (contract v1 events and the Segment tracking API)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import click

from pipeline.cli.common import handle_errors, settings_of
from pipeline.config import default_salt_warning
from pipeline.errors import ConfigError
from pipeline.model.contract import SOURCES

log = logging.getLogger(__name__)


def parse_write_keys(pairs: Iterable[str]) -> dict[str, str]:
    """``["web=KEY", ...]`` (SOURCE=KEY; also comma-separated in one string) -> ``{KEY: source}``."""
    keys: dict[str, str] = {}
    for pair in pairs:
        for part in pair.split(","):
            part = part.strip()
            if not part:
                continue
            source, sep, key = part.partition("=")
            source, key = source.strip(), key.strip()
            if not sep or not key:
                raise ConfigError(f"write key {part.split('=')[0]!r}...: expected SOURCE=KEY")
            if source not in SOURCES:
                raise ConfigError(f"write key for unknown source {source!r} (known: {', '.join(SOURCES)})")
            if keys.get(key, source) != source:
                raise ConfigError(f"one write key is given for two sources ({keys[key]} and {source})")
            keys[key] = source
    return keys


@click.command()
@click.option("--host", default=None, help="Interface to listen on (default: 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default: 8080).")
@click.option(
    "--write-key",
    "write_key_pairs",
    multiple=True,
    metavar="SOURCE=KEY",
    help="A write key and the source of its events (web, app, geofence, pos); repeatable. "
    "Prefer O2O_COLLECTOR_WRITE_KEYS: the command line is visible to other users.",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(1024),
    default=None,
    help="Largest request body, also once decompressed (default: 16 MiB, or O2O_MAX_EVENT_BYTES if larger).",
)
@click.pass_context
@handle_errors
def collector(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    write_key_pairs: tuple[str, ...],
    max_body_bytes: int | None,
) -> None:
    """Serve the HTTP collector: POST /v1/events and the Segment API (/v1/track, /v1/batch, ...).

    Trackers authenticate with a write key (HTTP Basic user name, or
    `writeKey` in the body); each key maps to the source of its events.
    Requests are answered once Kafka acknowledged their events. Health at
    /healthz, Prometheus metrics at /metrics. Stop with Ctrl-C or SIGTERM:
    in-flight requests finish and the producer is flushed.
    """
    import uvicorn

    from pipeline.collector.app import create_app
    from pipeline.collector.kafka_sink import KafkaSink

    settings = settings_of(ctx)
    # Settings the collector will read once config.py declares them (see the module docstring).
    configured = str(getattr(settings, "collector_write_keys", "") or "")
    write_keys = parse_write_keys([configured, *write_key_pairs])
    if not write_keys:
        raise ConfigError("no write keys: pass --write-key SOURCE=KEY or set O2O_COLLECTOR_WRITE_KEYS")
    host = host or str(getattr(settings, "collector_host", "127.0.0.1"))
    port = port or int(getattr(settings, "collector_port", 8080))
    max_body = max_body_bytes or int(getattr(settings, "collector_max_body_bytes", 0) or 0) or None
    delivery_timeout_ms = int(getattr(settings, "collector_delivery_timeout_ms", 30_000))
    warning = default_salt_warning(settings, listen_host=host)  # refused off this machine: before Kafka
    if warning:
        log.warning("collector: %s", warning)
    sink = KafkaSink(settings, delivery_timeout_ms=delivery_timeout_ms)
    app = create_app(settings, write_keys, sink, max_body_bytes=max_body)
    log.info("collector listening on http://%s:%d", host, port)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        lifespan="on",
        timeout_graceful_shutdown=30,
        server_header=False,
    )


def register(group: click.Group) -> None:
    """Add ``collector`` to the root group."""
    group.add_command(collector)
