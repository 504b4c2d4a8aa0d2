"""Bounded steps for ``o2o bench``: each ends, or is killed with its processes, within its limit.

A step runs in a fresh process (multiprocessing "spawn") that leads its own
process group, so the stage processes it starts belong to that group too. A
step that outlives its limit is stopped with its whole group (SIGTERM, then
SIGKILL) and the bench stops with a message naming the step. Long-lived
commands the bench watches itself (``o2o run all``) are started the same way
by :meth:`StepRunner.watch`. Each step's output goes to a log file under
``<state_dir>/bench/logs``, whose tail is shown when the step fails.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from pipeline.errors import PipelineError
from pipeline.private_files import private_dir

log = logging.getLogger(__name__)

T = TypeVar("T")
TICK_S = 0.25
KILL_GRACE_S = 5.0


class StepFailed(PipelineError):
    """A bench step failed or exceeded its time limit."""


def kill_group(pid: int, grace: float = KILL_GRACE_S) -> None:
    """Stop the process group led by ``pid``: SIGTERM, then SIGKILL after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                break
            time.sleep(0.1)


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (a no-op elsewhere).

    The bench's steps and pipelines lead their own process groups, so a bench
    that is killed outright would otherwise leave them running.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop_group(_signum: int, _frame: object) -> None:
    """SIGTERM in a step process: pass it on to the whole group (this process included)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.killpg(0, signal.SIGTERM)


def _entry(conn: Connection, log_file: str, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """Body of a step process: lead a new process group, send back ("ok", result) or ("error", text)."""
    os.setsid()
    die_with_parent()
    signal.signal(signal.SIGTERM, _stop_group)
    out = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = func(*args)
    except BaseException as exc:
        traceback.print_exc()
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    else:
        conn.send(("ok", result))
    finally:
        conn.close()


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60]


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file ('' if unreadable)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def keep_previous_logs(log_dir: Path) -> None:
    """Move the last run's step logs to ``<log_dir>.previous`` (replacing older ones) before a new run.

    A run that went wrong is often noticed only when the next one has started.
    """
    if not log_dir.is_dir() or not any(log_dir.iterdir()):
        return
    previous = log_dir.with_name(log_dir.name + ".previous")
    if previous.exists():
        shutil.rmtree(previous)
    log_dir.rename(previous)


@dataclass
class StepRunner:
    """Runs the bench's steps, each within a time limit, showing progress on ``console``."""

    console: Console
    log_dir: Path
    timeout: float
    done: list[tuple[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        keep_previous_logs(self.log_dir)
        private_dir(self.log_dir)

    def log_file(self, name: str) -> Path:
        """The log file of step ``name`` (emptied when the step starts)."""
        path = self.log_dir / f"{len(self.done) + 1:02d}-{_slug(name)}.log"
        path.write_text("")
        return path

    def _progress(self) -> Progress:
        return Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
            TextColumn("[dim]limit {task.fields[limit]}"),
            console=self.console, transient=True,
        )  # fmt: skip

    def run(self, name: str, func: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """Run ``func(*args)`` in a step process; its result, or StepFailed within ``timeout`` seconds.

        ``func`` must be a module-level function and its arguments and result picklable.
        """
        limit = self.timeout if timeout is None else timeout
        log_file = self.log_file(name)
        context = multiprocessing.get_context("spawn")
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_entry, args=(sender, str(log_file), func, args), daemon=False)
        start = time.monotonic()
        process.start()
        sender.close()
        message: tuple[str, Any] | None = None
        try:
            with self._progress() as progress:
                task = progress.add_task(name, total=None, info="", limit=f"{limit:.0f} s")
                while message is None:
                    if receiver.poll(TICK_S):
                        try:
                            message = receiver.recv()
                        except EOFError:
                            break
                    elif not process.is_alive():
                        break
                    elif time.monotonic() - start > limit:
                        self._fail_timeout(name, limit, process.pid, log_file)
                    progress.update(task)
        except BaseException:
            if process.pid is not None and process.is_alive():
                kill_group(process.pid)
            raise
        process.join(KILL_GRACE_S)
        if process.is_alive() and process.pid is not None:
            kill_group(process.pid)
        seconds = time.monotonic() - start
        if message is None:
            self._fail(f"step {name!r} ended without a result (exit code {process.exitcode})", log_file)
        assert message is not None
        if message[0] != "ok":
            self._fail(f"step {name!r} failed: {message[1]}", log_file)
        self.done.append((name, seconds))
        self.console.print(f"[dim]done: {name} ({seconds:.1f} s)[/]")
        result: T = message[1]
        return result

    def watch(
        self,
        name: str,
        command: Sequence[str],
        env: dict[str, str],
        timeout: float,
        on_tick: Callable[[float, int, Progress, TaskID], bool] | None = None,
        total: float | None = None,
    ) -> float:
        """Run ``command`` in its own process group until it exits; returns its seconds.

        ``on_tick(seconds since launch, pid, progress, task)`` is called every
        :data:`TICK_S`; when it returns True the command is asked to stop
        (SIGTERM to the group, SIGKILL after a grace period). A command that
        exits non-zero, or outlives ``timeout``, raises StepFailed.
        """
        log_file = self.log_file(name)
        start = time.monotonic()
        with log_file.open("ab") as out:
            child = subprocess.Popen(
                list(command),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        stopping_since: float | None = None
        try:
            with self._progress() as progress:
                task = progress.add_task(name, total=total, info="", limit=f"{timeout:.0f} s")
                while child.poll() is None:
                    elapsed = time.monotonic() - start
                    if elapsed > timeout:
                        self._fail_timeout(name, timeout, child.pid, log_file)
                    if (
                        on_tick is not None
                        and on_tick(elapsed, child.pid, progress, task)
                        and stopping_since is None
                    ):
                        stopping_since = time.monotonic()
                        child.send_signal(signal.SIGTERM)  # `run all` stops its stages itself
                    if stopping_since is not None and time.monotonic() - stopping_since > 60:
                        self._fail_timeout(name, timeout, child.pid, log_file, "did not stop within 60 s")
                    time.sleep(TICK_S)
        except BaseException as exc:
            if child.poll() is None:
                kill_group(child.pid)
            if isinstance(exc, PipelineError) and not isinstance(exc, StepFailed):
                self._fail(f"step {name!r} failed: {exc}", log_file)
            raise
        seconds = time.monotonic() - start
        kill_group(child.pid, grace=1.0)  # anything of the group left behind
        if child.returncode != 0 and stopping_since is None:
            self._fail(f"step {name!r} exited with code {child.returncode}", log_file)
        self.done.append((name, seconds))
        self.console.print(f"[dim]done: {name} ({seconds:.1f} s)[/]")
        return seconds

    def _fail_timeout(self, name: str, limit: float, pid: int | None, log_file: Path, why: str = "") -> None:
        if pid is not None:
            kill_group(pid)
        reason = why or f"did not finish within {limit:.0f} s"
        self._fail(f"step {name!r} {reason}; stopped it and its processes (group {pid})", log_file)

    def _fail(self, message: str, log_file: Path) -> None:
        text = tail(log_file)
        if text:
            self.console.print(f"[dim]last lines of {log_file}:[/]")
            self.console.print(text, markup=False, highlight=False)
        raise StepFailed(f"{message}; log: {log_file}")
