"""Stage processes of ``o2o run all``, forked from a server that has the stage code imported.

A fresh interpreter per stage spends about half of its start-up CPU importing
faust, aiokafka, confluent-kafka, pydantic and the stage code (measured: an
identity process 1.8 CPU-s to ready, 0.7 forked from a warm server); `run all`
starts five or six. It starts them instead from a :mod:`multiprocessing`
fork server that imported that code once (:mod:`pipeline.runtime.preload`).
The fork server is a fresh single-threaded process, so no thread of the
caller (a progress display, a bench probe) is forked with a lock held.

A child is what ``python -m pipeline.cli run <stage>`` was: it gets the
settings as ``O2O_`` environment variables, runs the same command line
function, and exits with its status. Its process title reads like that
command, so ``ps``, ``o2o bench`` and the tests tell the stages apart
(:func:`command_of` reads it back).
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from multiprocessing.process import BaseProcess

PRELOAD = ["pipeline.runtime.preload"]


def start_stage_process(args: Sequence[str], env: Mapping[str, str]) -> StageProcess:
    """Start ``o2o <args>`` (``run <stage> ...``) as a child forked from the warm fork server."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    title = " ".join([sys.executable, "-m", "pipeline.cli", *args])
    process = context.Process(target=run_child, args=(list(args), dict(env), title), name=title)
    sys.stdout.flush()
    sys.stderr.flush()
    process.start()
    return StageProcess(process)


def stop_fork_server() -> None:
    """Stop the fork server once ``run all``'s stages have ended, and wait for it.

    It would stop by itself once this process exits; waiting for it here
    leaves no process behind and counts its CPU (and its children's) as this
    process's children's, like the fresh processes it replaces. The method is
    multiprocessing's own (private) one, hence the guard.
    """
    from multiprocessing import forkserver

    with contextlib.suppress(Exception):
        forkserver._forkserver._stop()  # type: ignore[attr-defined]


def run_child(args: list[str], env: dict[str, str], title: str) -> None:
    """In the forked child: become ``o2o <args>`` with ``env`` as the environment, and run it."""
    try:
        import setproctitle

        # before the environment changes: it finds the room for the title next to it
        setproctitle.setproctitle(title)
    except ImportError:  # pragma: no cover - a dependency; the title only helps ps and the bench
        pass
    os.environ.clear()
    os.environ.update(env)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    from pipeline.cli.main import cli

    try:
        cli.main(args=args, prog_name="o2o")  # exits with the command's status (SystemExit)
    finally:
        _shut_down_like_an_interpreter()


def _shut_down_like_an_interpreter() -> None:
    """What a normal interpreter exit does and multiprocessing's ``os._exit`` skips.

    Wait for the threads that are not daemons, run the ``atexit`` functions
    (chDB closes its session there), flush the standard streams.
    """
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def command_of(cmdline: Sequence[str]) -> list[str]:
    """A process's command line as arguments, for a forked stage too (its title is one string)."""
    return " ".join(cmdline).split()


class StageProcess:
    """A forked stage, with the part of :class:`subprocess.Popen` that ``run all`` uses."""

    def __init__(self, process: BaseProcess) -> None:
        self.process = process
        self.pid = process.pid

    @property
    def returncode(self) -> int | None:
        """The exit status (negative: the signal that ended it), None while it runs."""
        return self.process.exitcode

    def poll(self) -> int | None:
        """The exit status if it has ended, else None (reaps it)."""
        return None if self.process.is_alive() else self.process.exitcode

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` if it still runs."""
        if self.poll() is None:
            os.kill(self.process.pid, sig)  # type: ignore[arg-type]

    def wait(self, timeout: float | None = None) -> int:
        """Wait for it to end; :class:`subprocess.TimeoutExpired` after ``timeout`` seconds."""
        self.process.join(timeout)
        code = self.process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(self.process.name or "stage", timeout or 0)
        return code

    def kill(self) -> None:
        """SIGKILL it."""
        self.process.kill()
