"""``o2o bench --live``: how fresh ClickHouse is while the pipeline runs.

Starts ``o2o run all`` (not drain) on the bench prefix, waits until every
stage's consumer group is stable and the sink's query server answers, then
paces simulated events at ``--rate`` for ``--seconds`` with ``occurred_at`` =
now (:mod:`pipeline.bench_live_probe`), and prints p50/p95/p99 of the time
from sending an event until it is visible in ClickHouse ``events``, its
conversion in ``conversions`` and its credits in ``attribution``, over the
events sent in the steady part (10% to 90% of the sending time); where that
time goes, hop by hop, from the Kafka timestamps of the messages that carried
each event; with the activation stage running (``--activation``), the time
from send until the decision an event triggered is on ``activations``; the
CPU seconds per process and the records and bytes per sent event on every
topic.
"""

from __future__ import annotations

import time
from collections import Counter
from itertools import pairwise

from pipeline.bench import EndToEnd, watch_pipeline
from pipeline.bench_live_probe import PROGRESS_S, READY_LIMIT_S, LiveControl, LiveProbe, live_events
from pipeline.bench_parts import hold_merges, prepare
from pipeline.bench_probe import topic_census
from pipeline.bench_report import cpu_table, section, table, topic_table
from pipeline.bench_stats import hop_seconds, percentile
from pipeline.bench_steps import StepRunner
from pipeline.cli.common import console
from pipeline.config import Settings
from pipeline.kafka import topics
from pipeline.model.rows import ROW_TABLES_BY_NAME

STEADY = (0.1, 0.9)
MEASURED_TABLES = ("events_store", "conversions_store", "attribution_store")
# where an event is seen on its way, and the stage that worked on it since the point before
HOPS = (
    ("sent", ""),
    (topics.VALID, "ingest"),
    (topics.IDENTIFIED, "identity"),
    (ROW_TABLES_BY_NAME["events"].topic, "journeys"),
    ("visible", "sink and ClickHouse"),
)
KIND_LABELS = {
    "events": "events (row in `events`)",
    "conversions": "conversions (row in `conversions`)",
    "credits": "credits (rows in `attribution`)",
}


def run_live(
    runner: StepRunner,
    settings: Settings,
    rate: int,
    seconds: float,
    bound: float,
    seed: int,
    stack_limit: float,
) -> None:
    """Prepare, simulate, run the pipeline while sending and polling, then print the figures."""
    where = runner.run(
        "start the stack; reset the bench prefix and database", prepare, settings, timeout=stack_limit
    )
    console.print(f"using {where}")
    runner.run("hold ClickHouse merges of the measured tables", hold_merges, settings, *MEASURED_TABLES)
    count = max(1, round(rate * seconds))
    events = runner.run(f"simulate {count:,} events for the live run", live_events, settings, count, seed)
    probe = LiveProbe(settings, events, rate, bound)
    control = LiveControl(settings, probe, min(READY_LIMIT_S, runner.timeout))
    # ready, then sending (allowing it to fall behind by half), the bound, and stopping
    limit = control.ready_limit + seconds * 1.5 + bound + 90
    try:
        e2e = watch_pipeline(
            runner, settings, f"live: run all, {rate:,} events/s for {seconds:g} s", [], limit, control
        )
    finally:
        probe.stop.set()
        probe.join(10)
    if probe.error is not None:
        from pipeline.bench_steps import StepFailed

        raise StepFailed(f"live bench {probe.error}")
    _print_live(probe, control, e2e, settings, rate, bound)
    points = [settings.topic(name) for name, _label in HOPS[1:-1]]
    decisions = settings.topic(topics.ACTIVATIONS)
    stamped = [*points, decisions] if "activation" in settings.stages else points
    census = runner.run("read every topic back", topic_census, settings, [], 10.0, stamped)
    _print_hops(probe, census.stamps, points)
    if "activation" in settings.stages:
        _print_decisions(probe, census.stamps.get(decisions, {}))
    sent = max(len(probe.sent), 1)
    cpu_table(
        "CPU seconds per process (live run: start-up, sending, shutdown)",
        e2e.procs, e2e.broker_label, e2e.seconds, e2e.children_cpu, e2e.own_cpu, sent,
    )  # fmt: skip
    topic_table("records and bytes per sent event, by topic (live run)", census, sent, settings.topic_prefix)
    section("steps", [(name, f"{s:.1f} s") for name, s in runner.done])


def _print_live(
    probe: LiveProbe, control: LiveControl, e2e: EndToEnd, settings: Settings, rate: int, bound: float
) -> None:
    sent = len(probe.sent)
    send_s, lo, hi = _steady(probe)
    query_ms = [s * 1000 for s in probe.query_s]
    path = "the sink's query server" if settings.embedded_clickhouse else "the ClickHouse server"
    section(
        f"live: sending through EventProducer ({rate:,} events/s asked)",
        [
            (
                "pipeline start-up (launch until every group is stable and the query server answers)",
                f"{control.ready_at or 0:.1f} s",
            ),
            ("sent", f"{sent:,} events in {send_s:.1f} s ({sent / send_s:,.0f} events/s achieved)"),
            (
                "steady part (the percentiles below)",
                f"events sent {STEADY[0] * send_s:.1f} s to {STEADY[1] * send_s:.1f} s after the first",
            ),
            (
                "queries",
                f"a count every {PROGRESS_S:g} s, then when each row was stored, through {path} (the "
                f"path of `o2o sql`): {len(query_ms):,} queries, p50 {_p(query_ms, 50, '.0f')} ms, "
                f"p99 {_p(query_ms, 99, '.0f')} ms, {probe.query_errors} failed",
            ),
            ("sink flush interval (O2O_SINK_FLUSH_SECONDS)", f"{settings.sink_flush_seconds:g} s"),
            (
                "messages not yet committed when sending ended, by stage",
                ", ".join(f"{stage} {lag:,}" for stage, lag in (control.lag_at_send_end or {}).items()),
            ),
            ("pipeline stopped after", f"{e2e.seconds:.1f} s"),
        ],
    )
    rows = []
    missing = []
    for kind, seen in probe.kinds.items():
        if seen.missing:
            top = Counter(seen.missing).most_common(4)
            missing.append((kind, ", ".join(f"{what} {count:,}" for what, count in top)))
        latencies = [lat for sent_at, lat in seen.latencies if lo <= sent_at <= hi]
        expected = sum(1 for sent_at in seen.expected if lo <= sent_at <= hi)
        rows.append(
            [
                KIND_LABELS[kind],
                f"{expected:,}",
                f"{len(latencies):,}",
                _p(latencies, 50),
                _p(latencies, 95),
                _p(latencies, 99),
                _p(latencies, 100),
                f"{expected - len(latencies):,}",
                f"{len(seen.latencies):,}/{len(seen.expected):,}",
            ]
        )
    table(
        "live: seconds from send until visible in ClickHouse",
        [
            "visible",
            "expected",
            "seen",
            "p50",
            "p95",
            "p99",
            "max",
            f"not visible within {bound:g} s",
            "all sent",
        ],
        rows,
        note=(
            "over the events sent in the steady part; expected: every accepted event, its "
            "conversion when it is one (with analytics consent), its credits when it also has "
            "marketing consent (a conversion without any touchpoint gets none, so it counts as not "
            "visible); visible = first stored (`inserted_at` of the storage table, merges held off); "
            "credits: once the conversion row is stored too; all sent: seen/expected over the whole run"
        ),
    )
    if missing:
        section(f"live: not visible within {bound:g} s, by source/type (whole run, most frequent)", missing)


def _print_hops(probe: LiveProbe, stamps: dict[str, dict[str, int]], points: list[str]) -> None:
    """Where the time from send to visible in ``events`` goes: one row per hop."""
    _send_s, lo, hi = _steady(probe)
    sent = {event_id: at for event_id, at, _c, _credits in probe.sent if lo <= at <= hi}
    passed = [{event_id: ms / 1000 for event_id, ms in stamps.get(point, {}).items()} for point in points]
    chain = [sent, *passed, probe.visible_at]
    rows = []
    for ((start, _), (end, stage)), hop in zip(pairwise(HOPS), hop_seconds(chain, sent), strict=True):
        hop_name = f"{stage}: {_point(start)} -> {_point(end)}"
        rows.append([hop_name, f"{len(hop):,}", _p(hop, 50), _p(hop, 95), _p(hop, 99)])
    table(
        "live: where the time goes, hop by hop (seconds)",
        ["hop", "events", "p50", "p95", "p99"],
        rows,
        note=(
            "over the events sent in the steady part; an event passes a topic when the first message "
            "carrying it was produced (its Kafka timestamp, set by the stage that wrote it), so a hop "
            "holds the wait before the stage read it, its batch and reordering, and the commit of the "
            "batch before; visible: the first `inserted_at` of its row in `events`; events without "
            "analytics consent go from ingest straight to `rows.events`"
        ),
    )


def _print_decisions(probe: LiveProbe, decided: dict[str, int]) -> None:
    """Seconds from sending an event until the decision it triggered is on ``activations``."""
    _send_s, lo, hi = _steady(probe)
    sent = {event_id: at for event_id, at, _c, _credits in probe.sent}
    steady = [decided[e] / 1000 - at for e, at in sent.items() if e in decided and lo <= at <= hi]
    everything = sum(1 for e in decided if e in sent)
    table(
        "live: seconds from send until the decision is on `activations`",
        ["decisions", "p50", "p95", "p99", "max", "all sent"],
        [
            [
                f"{len(steady):,}",
                _p(steady, 50),
                _p(steady, 95),
                _p(steady, 99),
                _p(steady, 100),
                f"{everything:,} of {len(sent):,} events triggered a decision",
            ]
        ],
        note=(
            "over the events sent in the steady part that triggered a rule: the Kafka timestamp of the "
            "decision (sent, held out or suppressed) minus the event's send time; delayed decisions "
            "(a rule's delay_minutes) are left out"
        ),
    )


def _steady(probe: LiveProbe) -> tuple[float, float, float]:
    """How long sending took, and the send times that bound its steady part."""
    send_s = max((probe.send_end or time.time()) - probe.send_start, 1e-9)
    lo, hi = (probe.send_start + f * send_s for f in STEADY)
    return send_s, lo, hi


def _point(name: str) -> str:
    return name if name in ("sent", "visible") else f"`{name}`"


def _p(values: list[float], q: float, fmt: str = ".3f") -> str:
    return "-" if not values else format(percentile(values, q), fmt)
