"""``o2o bench`` (throughput mode): the steps in order, and the figures they give.

Sections are printed as soon as their figures are known, so that a later
step that fails or times out leaves the earlier ones on screen.
"""

from __future__ import annotations

from pipeline import bench_parts as parts_
from pipeline.bench import DrainProgress, EndToEnd, phases_of, stage_timeline, watch_pipeline
from pipeline.bench_probe import OffsetSampler, ProcessSampler, topic_census
from pipeline.bench_profile import StageProfiler, top_rows
from pipeline.bench_report import cpu_table, section, table, topic_table
from pipeline.bench_stats import Phases
from pipeline.bench_steps import StepFailed, StepRunner
from pipeline.cli.common import console
from pipeline.config import STAGES, Settings
from pipeline.kafka.topics import row_topics
from pipeline.runtime.drain import drain_figures


def run_throughput(
    runner: StepRunner,
    base: Settings,
    settings: Settings,
    events: int,
    seed: int,
    parts: bool,
    stack_limit: float,
    profile: bool = False,
) -> None:
    """Produce, pass through, run the pipeline to the end, read back; then each part alone."""
    where = runner.run(
        "start the stack; reset the bench prefix and database", parts_.prepare, settings, timeout=stack_limit
    )
    console.print(f"using {where}")
    n, produce_s = runner.run(
        f"simulate and produce {events:,} events", parts_.produce, settings, events, seed
    )
    pass_n, pass_total_s, pass_steady_s = runner.run(
        "bare confluent-kafka passthrough", parts_.passthrough, settings, n
    )
    progress = DrainProgress(settings, n)
    profiler = StageProfiler(settings.state_dir / "bench" / "profiles") if profile else None

    def profile_window(procs: ProcessSampler, offsets: OffsetSampler) -> None:
        # from 10% of the input ingested until each stage exits (py-spy then writes its samples)
        if profiler is not None and not profiler.started and progress.ingested(offsets) >= 0.1 * n:
            profiler.start({pid: label for pid, (label, _) in procs.cpu.items() if label in STAGES})

    try:
        e2e = watch_pipeline(
            runner,
            settings,
            "pipeline end to end (run all --drain)",
            ["--drain"],
            runner.timeout,
            progress,
            profile_window,
        )
    finally:
        if profiler is not None:
            profiler.stop()
    census = runner.run("read every topic back", topic_census, settings, row_topics(settings))
    rows = runner.run("count rows in ClickHouse", parts_.count_rows, settings)
    phases, sunk = phases_of(e2e, census)
    pass_rate = pass_n / pass_steady_s if pass_steady_s > 0 else float("inf")
    section(
        "producer and baseline",
        [
            ("events", f"{n:,}"),
            ("producer (simulate + produce)", f"{n / produce_s:,.0f} events/s ({produce_s:.1f} s)"),
            (
                "bare confluent-kafka passthrough, steady",
                f"{pass_rate:,.0f} events/s ({pass_steady_s:.1f} s from the first message; "
                f"{pass_total_s:.1f} s with the group join)",
            ),
        ],
    )
    _print_pipeline(e2e, phases, sunk, n, pass_rate, rows)
    check_stored(rows, n)
    _print_longest_steps(settings)
    table(
        "stages over time (seconds since launch)",
        ["stage", "first commit", "input all committed"],
        stage_timeline(e2e),
    )
    cpu_table(
        "CPU seconds per process (end-to-end run)",
        e2e.procs, e2e.broker_label, e2e.seconds, e2e.children_cpu, e2e.own_cpu, n,
    )  # fmt: skip
    topic_table(
        "records and bytes per input event, by topic (end-to-end run)", census, n, settings.topic_prefix
    )
    if profiler is not None:
        _print_profile(profiler)
    if parts:
        _print_parts(runner, base, settings, n, seed)
    section("steps", [(name, f"{seconds:.1f} s") for name, seconds in runner.done])


MIN_STORED_SHARE = 0.99
"""The share of the simulated events the run must store in ``events`` for its figures to mean anything."""


def check_stored(rows: dict[str, int], n: int) -> None:
    """Fail the bench when the end-to-end run stored (nearly) none of its input: it measured nothing."""
    stored = rows.get("events_store", 0)
    if stored < n * MIN_STORED_SHARE:
        raise StepFailed(
            f"the end-to-end run stored {stored:,} of {n:,} events in `events`: its figures measure "
            "nothing (seen when the reset right after starting the broker left the consumer groups of "
            "an earlier run with their offsets: the stages found their input done; run the bench again)"
        )


def _print_pipeline(
    e2e: EndToEnd, phases: Phases | None, sunk: int, n: int, pass_rate: float, rows: dict[str, int]
) -> None:
    lines = [
        ("total (launch until every stage exited)", f"{n / e2e.seconds:,.0f} events/s ({e2e.seconds:.1f} s)")
    ]
    if phases is None or phases.steady_s <= 0:
        lines.append(("steady state", "not measured: the sink's progress was not seen in time"))
    else:
        steady = phases.rate(n)
        lines += [
            ("start-up (launch until the sink's first commit)", f"{phases.startup_s:.1f} s"),
            ("ramp (first commit until 10% of the sink's input)", f"{phases.ramp_s:.1f} s"),
            (
                "steady state (10% to 90% of the sink's input)",
                f"{steady:,.0f} events/s ({phases.steady_s:.1f} s; {phases.rate(sunk):,.0f} rows/s)",
            ),
            ("drain tail (90% until every stage exited)", f"{phases.tail_s:.1f} s"),
            ("ratio steady state / passthrough", f"{steady / pass_rate:.3f}"),
        ]
    lines += [
        (
            "rows written to ClickHouse",
            f"{sum(rows.values()):,} ("
            + ", ".join(f"{t.removesuffix('_store')} {c:,}" for t, c in rows.items())
            + f"; the sink consumed {sunk:,} rows)",
        ),
        ("peak memory, stage processes (summed RSS)", f"{e2e.procs.peak_rss / 2**20:,.0f} MiB"),
        (
            "peak memory, stage processes (summed PSS)",
            f"{e2e.procs.peak_pss / 2**20:,.0f} MiB (pages the processes share counted once)",
        ),
        (
            "peak memory, Kafka broker (RSS)",
            f"{e2e.procs.broker_peak_rss / 2**20:,.0f} MiB" if e2e.procs.broker is not None else "n/a",
        ),
    ]
    section("pipeline end to end (o2o run all --drain)", lines)


def _print_longest_steps(settings: Settings) -> None:
    """How long each stateful stage's longest step held its event loop (from its drain marker)."""
    lines = []
    for stage in ("identity", "journeys", "attribution"):
        figures = drain_figures(settings, stage)
        if "longest_step_seconds" in figures:
            lines.append((stage, f"{figures['longest_step_seconds'] * 1000:,.0f} ms "
                                 f"({figures.get('longest_step_records', 0):,.0f} records)"))  # fmt: skip
        else:
            lines.append((stage, "not reported"))
    section("longest step per stateful stage (event loop held: handling, outputs and state durable)", lines)


def _print_profile(profiler: StageProfiler) -> None:
    if profiler.missing:
        console.print("[yellow]--profile: py-spy is not installed (pip install py-spy)[/]")
        return
    table(
        "where the time goes (py-spy samples per stage process)",
        ["stage / package / function", "", "samples"],
        top_rows(profiler.profiles(), STAGES, top=12),
        note=(
            "window: from 10% of the input ingested until the stage exited (drain tail included); "
            "a sample is the stage's Python stack while it runs (idle waits left out); `package`: "
            "the file of the innermost Python frame (C code such as librdkafka or orjson counts for "
            "its Python caller); `function`: that frame's function."
            f" Collapsed stacks: {profiler.out_dir}"
        ),
    )


def _print_parts(runner: StepRunner, base: Settings, settings: Settings, n: int, seed: int) -> None:
    ingest_n, ingest_s = runner.run("ingest stage alone", parts_.ingest_rate, base, n, seed)
    alone = {
        stage: runner.run(f"{stage} stage alone", parts_.stage_rate, base, settings, stage)
        for stage in ("identity", "journeys", "attribution")
    }
    graph_rate, identifiers, per_million = runner.run(
        "identity graph alone, in process", parts_.identity_state_size, settings
    )
    logic_rate, held, per_person = runner.run(
        "journeys logic alone, in process", parts_.journeys_state_size, settings
    )
    requests, accepted, collector_s = runner.run(
        "HTTP collector", parts_.collector_rate, base, min(n, 50_000), seed
    )
    section(
        "each part alone",
        [
            ("ingest stage alone (drain, start-up included)", f"{ingest_n / ingest_s:,.0f} events/s"),
            *(
                (
                    f"{stage} stage alone (drain, start-up included)",
                    f"{k / s:,.0f} records/s ({k:,} in {s:.1f} s)",
                )
                for stage, (k, s) in alone.items()
            ),
            ("identity graph alone (in process, no Kafka)", f"{graph_rate:,.0f} events/s"),
            (
                "identity state per million identifiers (serialised)",
                f"{per_million:,.0f} MiB ({identifiers:,} identifiers measured)",
            ),
            ("journeys logic alone (in process, no Kafka)", f"{logic_rate:,.0f} events/s"),
            (
                "journeys state per active person (serialised)",
                f"{per_person:,.0f} bytes ({held:,} persons held at the peak)",
            ),
            (
                "HTTP collector (8 clients, batches of 100)",
                f"{requests / collector_s:,.0f} requests/s, {accepted / collector_s:,.0f} events/s",
            ),
        ],
    )
