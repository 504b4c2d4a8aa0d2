"""Starting one stage, or all of them as child processes (``o2o run``)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import SecretStr

from pipeline.config import STAGES, Settings, default_salt_warning
from pipeline.errors import ConfigError, DrainInterrupted, FatalError, RetryableError
from pipeline.kafka import topics
from pipeline.model.limits import identifiers_per_person
from pipeline.runtime.confluent_stage import ConfluentStageLoop
from pipeline.runtime.drain import UPSTREAM, DrainGate, clear_markers, marker
from pipeline.runtime.gc_policy import LongLivedObjects
from pipeline.runtime.lag_watch import LagCollector, LagWatch
from pipeline.runtime.stage_child import StageProcess, start_stage_process, stop_fork_server
from pipeline.stop_flag import StopFlag

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from pipeline.clickhouse.client import ClickHouse
    from pipeline.model.handler import StatefulHandler

log = logging.getLogger(__name__)

# Ingest reads a backlog of the raw partitions side by side, in small chunks.
# Identity releases an event only once every raw partition has passed its
# time; with librdkafka's default (1 MiB of compressed records per partition
# and fetch, with lz4 a whole partition of the bench's backlog) a backlog came
# one partition after the other, and identity held everything until ingest
# had started on the last one.
RAW_FETCH = {"max.partition.fetch.bytes": 64 * 1024}


def run_stage(
    settings: Settings, stage: str, drain: bool = False, after: Sequence[str] = (), copy: int = 0
) -> None:
    """Run one stage in this process until stopped, or until drained with ``drain``.

    ``copy`` numbers the processes of a stage that runs several (from 0): it
    picks the metrics port. Which partitions a process works on is the
    consumer group's choice, not the number's.
    """
    gate = DrainGate(settings, stage, after) if drain else None
    from pipeline.metrics import counter_of, serve_metrics

    LongLivedObjects().install()  # full collections walk only what came after the last one

    watch = LagWatch(settings, stage).start()
    lag_gauges = [LagCollector(watch)]

    if stage == "ingest":
        from pipeline.ingest.stage import IngestHandler

        warning = default_salt_warning(settings)
        if warning:
            log.warning("ingest: %s", warning)
        ingest = IngestHandler(settings)
        raw = topics.raw_topics(settings)
        loop = ConfluentStageLoop(
            settings, stage, raw, ingest, gate, report_ends=True, consumer_options=RAW_FETCH
        )
        serve_metrics(settings, stage, {"": counter_of(ingest.counts)}, lag_gauges, copy)
        loop.install_signal_handlers()
        loop.run()
    elif stage == "sink":
        _run_sink(settings, gate, lag_gauges, copy)
    elif stage in ("identity", "journeys", "attribution", "activation"):
        from pipeline.runtime.faust_stage import FaustStage

        handler = _stateful_handler(settings, stage)
        faust_stage = FaustStage(settings, stage, handler.inputs, handler, gate)
        graph = getattr(handler, "graph", None)
        order = faust_stage.input.order
        sources: dict[str, Callable[[], Mapping[str, int]]] = {
            "": lambda: {
                "processed": faust_stage.processed,
                "input_holes": order.holes_found,
                "put_back": faust_stage.unhanded.put_back,  # records faust's consumer did not hand on
                "restore_stalls": faust_stage.recovery_guard.watch.stalls,
            }
        }
        if graph is not None:
            sources["identity"] = counter_of(graph.counts)
        counts = getattr(handler, "counts", None)
        if counts is not None:
            sources[f"{stage}_stage" if stage in sources else stage] = counter_of(counts)
        serve_metrics(settings, stage, sources, lag_gauges, copy)
        faust_stage.run()
    else:
        raise FatalError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")


def _stateful_handler(settings: Settings, stage: str) -> StatefulHandler:
    if stage == "identity":
        from pipeline.identity.stage import IdentityHandler
        from pipeline.kafka.admin import partition_counts

        counts = partition_counts(settings)
        origins = [
            f"{source}/{p}"
            for source, name in topics.RAW_TOPICS.items()
            for p in range(counts.get(settings.topic(name), 0))
        ]
        from pipeline.identity.erasure import Suppressions

        suppressions = Suppressions(settings, "identity-suppressions").load()
        return IdentityHandler(
            settings.identity_max_persons_per_id,
            origins,
            suppressions,
            max_ids_per_person=identifiers_per_person(settings),
            workers=settings.identity_workers,
            valid_partitions=counts.get(settings.topic(topics.VALID), settings.partitions),
            idle_seconds=settings.reorder_idle_seconds,
            consent_defaults=settings.consent_defaults,
            keep_without_consent=settings.keep_without_analytics_consent,
        )
    if stage == "activation":
        from pipeline.activation.rules import load_activation_rules
        from pipeline.activation.stage import ActivationHandler

        if settings.activation_rules is None:
            raise ConfigError("the activation stage needs O2O_ACTIVATION_RULES (a TOML rules file)")
        from pipeline.identity.erasure import Suppressions

        privacy = Suppressions(settings, "activation-restrictions").load()
        return ActivationHandler(load_activation_rules(settings.activation_rules), settings, privacy=privacy)
    if stage == "journeys":
        from pipeline.journeys.stage import JourneysHandler

        return JourneysHandler(settings)
    from pipeline.attribution.fitting import FittedModelFeed
    from pipeline.attribution.stage import AttributionHandler

    return AttributionHandler(settings, FittedModelFeed(settings))


def _run_sink(settings: Settings, gate: DrainGate | None, collectors: Sequence[Collector], copy: int) -> None:
    from pipeline.clickhouse.query_server import QueryServer, endpoint_file
    from pipeline.sink.stage import SinkHandler

    stop = StopFlag()
    ch = _connect_with_retry(settings, stop)
    if ch is None:
        if gate is not None:
            raise DrainInterrupted("sink: stopped before it drained")
        return
    with ch:
        server = QueryServer(ch, endpoint_file(settings)) if settings.embedded_clickhouse else None
        if server is not None:
            server.start()
        try:
            from pipeline.metrics import counter_of, serve_metrics
            from pipeline.sink.metrics import ClickHouseCollector, insert_histogram, insert_observer

            inserts = insert_histogram()
            handler = SinkHandler(settings, ch, insert_observer(inserts))
            loop = ConfluentStageLoop(
                settings, "sink", handler.topics, handler, gate, batch_size=5000, poll_seconds=0.2
            )
            sink_collectors = [*collectors, inserts, ClickHouseCollector(ch)]
            serve_metrics(
                settings, "sink", {"rows": counter_of(handler.batcher.written)}, sink_collectors, copy
            )
            loop.install_signal_handlers()
            if stop.stopped:  # a SIGTERM while connecting or starting: honour it
                loop.stop()
            loop.run()
        finally:
            if server is not None:
                server.stop()


def _connect_with_retry(settings: Settings, stop: StopFlag) -> ClickHouse | None:
    """Connect and migrate, retrying with backoff while ClickHouse is unavailable (None: stopped)."""
    from pipeline.clickhouse.client import connect
    from pipeline.clickhouse.migrations import apply_migrations

    delay = 0.5
    while not stop.stopped:
        try:
            ch = connect(settings)
            try:
                apply_migrations(ch)
            except BaseException:
                ch.close()
                raise
            return ch
        except RetryableError as exc:
            log.warning("sink: %s; retrying in %.1f s (nothing consumed or committed)", exc, delay)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and not stop.stopped:
                time.sleep(0.1)
            delay = min(delay * 2, 30.0)
    return None


@dataclass
class ChildStage:
    """A stage running as a child process of ``run all``."""

    stage: str
    process: StageProcess


def run_all(
    settings: Settings,
    drain: bool = False,
    stages: Sequence[str] | None = None,
    on_progress: Callable[[str, set[str]], None] | None = None,
) -> None:
    """Run every stage as its own process (both cores get work); wait until all end.

    The processes are forked from a fork server that has the stage code
    imported (pipeline/runtime/stage_child.py): half the start-up CPU of a
    fresh interpreter each.

    With ``drain``, each stage waits for the stages upstream of it to drain,
    so the whole pipeline finishes once everything in the raw topics is in
    ClickHouse. A stage that fails stops the others. ``stages`` defaults to
    :attr:`Settings.stages`.
    """
    stages = settings.stages if stages is None else stages
    if drain:
        clear_markers(settings, stages)
    children: list[ChildStage] = []
    env = dict(os.environ)
    env.update(settings_env(settings))
    for stage in stages:
        args = ["run", stage]
        if drain:
            args.append("--drain")
            for upstream in UPSTREAM[stage]:
                if upstream in stages:
                    args += ["--after", upstream]
        copies = settings.workers(stage)
        children += [
            ChildStage(stage, start_stage_process([*args, "--copy", str(copy)] if copy else args, env))
            for copy in range(copies)
        ]
    stopping = False

    def stop_all(*_args: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, stop_all)
    try:
        while True:
            states = [(c.stage, c.process.poll()) for c in children]
            failed = sorted({s for s, rc in states if rc not in (None, 0)})
            if failed and not stopping:
                stop_all()
                _wait(children)
                raise FatalError(f"stage {', '.join(failed)} failed; stopped the others")
            if all(rc is not None for _s, rc in states):
                break
            if on_progress is not None:
                done = {s for s in stages if drain and marker(settings, s).exists()}
                on_progress("running", done)
            time.sleep(0.25)
    except KeyboardInterrupt:
        stop_all()
        _wait(children)
        if not drain:
            raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        if all(child.process.poll() is not None for child in children):
            stop_fork_server()
    finished = all(child.process.returncode == 0 for child in children)
    if stopping and drain and not finished:
        clear_markers(settings, stages)  # a stage that drained before the signal must not count as done
        raise DrainInterrupted("stopped by a signal before the drain finished; nothing is marked drained")


def _wait(children: Sequence[ChildStage], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as O2O_ variables, so child processes see exactly these values."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue  # unset stays unset
        if isinstance(value, tuple | list):
            value = ",".join(value)
        elif isinstance(value, SecretStr):
            if not value.get_secret_value():
                continue
            value = value.get_secret_value()
        env[f"O2O_{name.upper()}"] = str(value)
    return env
