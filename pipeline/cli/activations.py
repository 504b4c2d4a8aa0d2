"""``o2o activations``: follow the activation decisions and deliver them to a webhook."""

from __future__ import annotations

import time

import click

from pipeline.cli.common import console, handle_errors, settings_of

OUTCOMES = ("sent", "holdout", "suppressed")


@click.group()
def activations() -> None:
    """Activation decisions: the `activations` topic the activation stage writes.

    `o2o activations tail` prints them as they are made; `o2o activations
    deliver --webhook URL` posts them to another system. See docs/activation.md.
    """


@activations.command("tail")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest decision kept, not at the newest.")
@click.option("--max", "limit", type=click.IntRange(1), help="Stop after this many decisions.")
@click.option("--idle-exit", type=click.FloatRange(0.1), help="Stop after this many seconds without one.")
@click.option("--format", "fmt", type=click.Choice(["line", "json"]), default="line", show_default=True,
              help="A line per decision, or its record (schemas/outputs/activation.json).")  # fmt: skip
@click.pass_context
@handle_errors
def tail(
    ctx: click.Context, from_beginning: bool, limit: int | None, idle_exit: float | None, fmt: str
) -> None:
    """Print decisions as the activation stage makes them, until Ctrl-C.

    Reads the topic without a consumer group: it commits nothing and
    disturbs no one.
    """
    import orjson
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

    from pipeline.kafka import topics
    from pipeline.kafka.admin import partition_counts
    from pipeline.kafka.clients import make_consumer

    settings = settings_of(ctx)
    name = settings.topic(topics.ACTIVATIONS)
    count = partition_counts(settings).get(name)
    if not count:
        raise click.ClickException(f"topic {name} does not exist; run `o2o init`")
    consumer = make_consumer(settings, f"{settings.group('activations-tail')}-{time.time_ns()}",
                             **{"enable.auto.commit": False})  # fmt: skip
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    consumer.assign([TopicPartition(name, p, start) for p in range(count)])
    shown, last = 0, time.monotonic()
    try:
        while limit is None or shown < limit:
            message = consumer.poll(0.5)
            value = message.value() if message is not None and message.error() is None else None
            if value is None:
                if idle_exit is not None and time.monotonic() - last >= idle_exit:
                    break
                continue
            last = time.monotonic()
            shown += 1
            if fmt == "json":
                click.echo(value.decode())
                continue
            d = orjson.loads(value)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d["decided_at"] / 1000))
            why = f" ({d['reason']})" if d["reason"] else ""
            click.echo(f"{stamp}Z {d['rule']} {d['channel']} {d['outcome']}{why} person={d['person_id']}"
                       f"{' store=' + d['store_id'] if d['store_id'] else ''}"
                       f"{' coupon=' + d['coupon'] if d['coupon'] else ''}")  # fmt: skip
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


@activations.command("deliver")
@click.option("--webhook", "url", required=True, help="URL each decision is posted to (JSON, POST).")
@click.option("--outcome", "outcomes", multiple=True, type=click.Choice(OUTCOMES), default=("sent",),
              show_default=True, help="Outcomes to post; repeat for several.")  # fmt: skip
@click.option("--header", "headers", multiple=True, metavar="NAME:VALUE",
              help="Extra header on every post (an Authorization token, say); repeatable.")  # fmt: skip
@click.option("--max-attempts", type=click.IntRange(1), default=8, show_default=True,
              help="Tries per decision: 0.5 s apart, doubling to 30 s, or the Retry-After.")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(0.1), default=10.0, show_default=True,
              help="Seconds one post may take.")  # fmt: skip
@click.option("--drain", is_flag=True, help="Deliver what the topic holds now, then exit.")
@click.pass_context
@handle_errors
def deliver(
    ctx: click.Context, url: str, outcomes: tuple[str, ...], headers: tuple[str, ...], max_attempts: int,
    timeout: float, drain: bool,
) -> None:  # fmt: skip
    """Post decisions to a webhook, each at most once, recording every delivery status.

    A status (`sending`, then `delivered` or `failed`) is written to the
    `activation.deliveries` topic, and so to the ClickHouse view
    `activation_deliveries`, before the next step. A decision found
    `sending` after a restart is recorded `unknown` and not posted again.
    Each post carries the decision id as its `Idempotency-Key` header.
    """
    from pipeline.activation.delivery import RetryPolicy
    from pipeline.activation.webhook import WebhookDelivery

    extra: dict[str, str] = {}
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"{header!r} is not NAME:VALUE", param_hint="--header")
        extra[name.strip()] = value.strip()
    policy = RetryPolicy(max_attempts=max_attempts)
    delivery = WebhookDelivery(settings_of(ctx), url, frozenset(outcomes), extra, policy, timeout)
    counts = delivery.run(drain=drain)
    kinds = ("delivered", "failed", "unknown", "retries")
    summary = ", ".join(f"{counts[k]} {k}" for k in kinds if counts[k])
    console.print(f"deliver: {summary or 'nothing to deliver'}")


def register(cli: click.Group) -> None:
    """Add ``o2o activations`` to the root group."""
    cli.add_command(activations)
