"""``o2o bench``: steady-state throughput, where the time and CPU go, and (``--live``) freshness.

The throughput run produces N simulated events, then runs ``o2o run all
--drain`` while sampling the offsets every stage's consumer group commits.
Reading the topics back afterwards turns the sink's committed offsets into
rows consumed, which gives the phases of the run: start-up (launch until the
first output), the steady window (10% to 90% of the sink's input) and the
drain tail. A bare confluent-kafka passthrough of the same events in the same
invocation is the baseline. Every step runs within a time limit
(:mod:`pipeline.bench_steps`). Timings are printed, never asserted in tests.
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import psutil
from rich.progress import Progress, TaskID

from pipeline.bench_probe import Census, OffsetSampler, ProcessSampler, broker_process
from pipeline.bench_stats import Phases, records_consumed, steady_window
from pipeline.bench_steps import StepRunner
from pipeline.cli.common import console, handle_errors, settings_of
from pipeline.config import Settings

STACK_TIMEOUT_S = 300.0
#: asked every tick while the pipeline runs: (seconds, offsets, progress, task) -> stop it now?
StopCheck = Callable[[float, OffsetSampler, Progress, TaskID], bool]


EXAMPLE_ACTIVATION_RULES = Path(__file__).resolve().parents[1] / "deploy" / "activation-rules.toml"


def bench_settings(base: Settings) -> Settings:
    """The bench's own topic prefix, consumer groups and database."""
    return base.model_copy(
        update={"topic_prefix": "bench.", "consumer_group_prefix": "bench.", "clickhouse_database": "bench"}
    )


def default_timeout(events: int) -> float:
    """Seconds each step may take by default: 2 minutes plus 1 ms per event."""
    return 120.0 + events / 1000


@dataclass
class EndToEnd:
    """What the bench saw while ``run all --drain`` ran."""

    seconds: float
    offsets: OffsetSampler
    procs: ProcessSampler
    broker_label: str
    children_cpu: float
    own_cpu: float


def cpu_seconds(who: int) -> float:
    """User plus system CPU seconds of ``resource.getrusage(who)``."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def child_env(settings: Settings) -> dict[str, str]:
    """This process's environment with ``settings`` as O2O_ variables."""
    from pipeline.runtime.stages import settings_env

    env = {k: v for k, v in os.environ.items() if not k.startswith("O2O_")}
    env.update(settings_env(settings))
    return env


def watch_pipeline(
    runner: StepRunner,
    settings: Settings,
    name: str,
    args: list[str],
    timeout: float,
    stop: StopCheck,
    on_sample: Callable[[ProcessSampler, OffsetSampler], None] | None = None,
) -> EndToEnd:
    """Run ``o2o run all <args>`` as a bounded step, sampling offsets, CPU and memory every tick.

    ``stop(seconds, offsets)`` is asked every tick whether to stop the
    pipeline (SIGTERM to ``run all``); for a drain it never needs to.
    ``on_sample`` sees every sample (the profiler's window).
    """
    offsets = OffsetSampler(settings, {stage: settings.group(stage) for stage in settings.stages})
    broker = broker_process(settings)
    label = f"Kafka broker (pid {broker.pid})" if broker is not None else "Kafka broker (not found)"
    children0, own0 = cpu_seconds(resource.RUSAGE_CHILDREN), cpu_seconds(resource.RUSAGE_SELF)
    samplers: dict[int, ProcessSampler] = {}

    def tick(elapsed: float, pid: int, progress: Progress, task: TaskID) -> bool:
        procs = samplers.get(pid)
        if procs is None:
            procs = samplers[pid] = ProcessSampler(psutil.Process(pid), broker)
        procs.sample()
        offsets.sample(elapsed)
        if on_sample is not None:
            on_sample(procs, offsets)
        return stop(elapsed, offsets, progress, task)

    command = [sys.executable, "-m", "pipeline.cli", "--log-level", "WARNING", "run", "all", *args]
    try:
        seconds = runner.watch(name, command, child_env(settings), timeout, tick)
        offsets.sample(seconds)
    finally:
        offsets.close()
    procs = next(iter(samplers.values())) if samplers else ProcessSampler(psutil.Process(), None)
    return EndToEnd(
        seconds=seconds,
        offsets=offsets,
        procs=procs,
        broker_label=label,
        children_cpu=cpu_seconds(resource.RUSAGE_CHILDREN) - children0,
        own_cpu=cpu_seconds(resource.RUSAGE_SELF) - own0,
    )


class DrainProgress:
    """Whether to stop a watched pipeline, and what its progress bar shows (default: drain progress)."""

    def __init__(self, settings: Settings, expected: int) -> None:
        from pipeline.kafka.topics import raw_topics

        self.raw = set(raw_topics(settings))
        self.expected = expected

    def ingested(self, offsets: OffsetSampler) -> int:
        """Raw events ingest has committed."""
        return sum(o for (t, _p), o in offsets.last("ingest").items() if t in self.raw)

    def __call__(self, elapsed: float, offsets: OffsetSampler, progress: Progress, task: TaskID) -> bool:
        """Update the bar (raw events ingest committed; messages the sink committed); never stop."""
        ingested = self.ingested(offsets)
        sunk = sum(offsets.last("sink").values())
        progress.update(
            task, total=self.expected, completed=min(ingested, self.expected), info=f"sink {sunk:,} msgs"
        )
        return False


def phases_of(e2e: EndToEnd, census: Census) -> tuple[Phases | None, int]:
    """The run's phases from the sink's progress in rows, and the rows the sink consumed in all."""
    series = [(t, float(records_consumed(c, census.running))) for t, c in e2e.offsets.series["sink"]]
    total = records_consumed(e2e.offsets.last("sink"), census.running)
    return steady_window(series, float(total), e2e.seconds), total


def stage_timeline(e2e: EndToEnd) -> list[list[str]]:
    """Per stage: first commit, and when everything it finally committed was committed (seconds)."""
    rows = []
    for stage in e2e.offsets.groups:
        samples = e2e.offsets.series.get(stage, [])
        final = sum(e2e.offsets.last(stage).values())
        first = next((t for t, c in samples if sum(c.values()) > 0), None)
        done = next((t for t, c in samples if final and sum(c.values()) >= final), None)
        rows.append([stage, "-" if first is None else f"{first:.1f}", "-" if done is None else f"{done:.1f}"])
    return rows


@click.command()
@click.option(
    "--events", type=click.IntRange(1000), default=100_000, show_default=True, help="Events to simulate."
)
@click.option(
    "--seed", type=int, default=7, show_default=True, help="Simulation seed; same seed, same events."
)
@click.option(
    "--parts/--no-parts",
    default=True,
    show_default=True,
    help="Also measure each stage alone, the identity graph and journeys logic in process, "
    "and the HTTP collector (throughput mode).",
)
@click.option(
    "--profile",
    is_flag=True,
    help="(throughput) Sample every stage process with py-spy from 10% of the input ingested until "
    "it exits, and print where its time goes, by package and function; collapsed stacks go to "
    "<state dir>/bench/profiles.",
)
@click.option(
    "--step-timeout",
    type=click.FloatRange(1),
    help="Seconds any step may take before it is killed with its processes and the bench fails "
    "[default: 120 + 1 ms per event; starting the stack: 300].",
)
@click.option(
    "--live",
    is_flag=True,
    help="Freshness instead of throughput: pace events at --rate through a running `o2o run all` "
    "and report send-to-visible percentiles.",
)
@click.option(
    "--flood",
    is_flag=True,
    help="The collector under abuse instead: a valid client posts alone for --seconds, then as long "
    "again while a second process floods the collector with keyless, oversized, gzip-bomb and "
    "never-finished requests; prints the valid client's answers and latencies in both phases.",
)
@click.option(
    "--rate",
    type=click.IntRange(1),
    default=2000,
    show_default=True,
    help="(--live) Events per second to send.",
)
@click.option(
    "--seconds",
    type=click.FloatRange(1),
    default=30.0,
    show_default=True,
    help="(--live, --flood) How long to send (--flood: each phase).",
)
@click.option(
    "--activation",
    is_flag=True,
    help="(--live) Also run the activation stage (O2O_ACTIVATION_RULES, else the example "
    "deploy/activation-rules.toml) and print the seconds from sending an event until the decision it "
    "triggered is on `activations`.",
)
@click.option(
    "--bound",
    type=click.FloatRange(0.5),
    default=10.0,
    show_default=True,
    help="(--live) Give up on an event not visible this many seconds after it was sent.",
)
@click.pass_context
@handle_errors
def bench(
    ctx: click.Context,
    events: int,
    seed: int,
    parts: bool,
    profile: bool,
    step_timeout: float | None,
    live: bool,
    flood: bool,
    rate: int,
    seconds: float,
    activation: bool,
    bound: float,
) -> None:
    """Measure steady-state throughput and where the time, CPU and bytes go; or freshness (--live).

    Throughput: N simulated events through `run all --drain`; prints start-up,
    steady-state events/s and the drain tail, the bare confluent-kafka
    passthrough and the ratio, CPU seconds per stage and of the broker, memory,
    records and bytes per input event on every topic, and each part alone.

    Live: `run all` runs while events are sent at --rate for --seconds with
    occurred_at = now; prints p50/p95/p99 from send until visible in
    ClickHouse `events`, `conversions` and `attribution`; with --activation,
    also until the decision an event triggered is on `activations`.

    Flood: a collector with its default limits serves a valid client alone,
    then while a second process floods it from other loopback addresses.

    Uses its own topic prefix and ClickHouse database (`bench.`, `bench`),
    wiped first. Every step has a time limit (--step-timeout); a step over it
    is killed with its processes and the bench exits non-zero naming it.
    See docs/benchmark.md for what each figure means.
    """
    base = settings_of(ctx)
    settings = bench_settings(base)
    limit = step_timeout or default_timeout(rate * int(seconds) if live else events)
    runner = StepRunner(console, settings.state_dir / "bench" / "logs", limit)
    stack_limit = step_timeout or STACK_TIMEOUT_S
    if flood:
        from pipeline.bench_flood import run_flood

        run_flood(runner, settings, seconds, stack_limit)
    elif live:
        from pipeline.bench_live import run_live

        if activation and settings.activation_rules is None:
            settings = settings.model_copy(update={"activation_rules": EXAMPLE_ACTIVATION_RULES})
        run_live(runner, settings, rate, seconds, bound, seed, stack_limit)
    else:
        from pipeline.bench_throughput import run_throughput

        run_throughput(runner, base, settings, events, seed, parts, stack_limit, profile)
