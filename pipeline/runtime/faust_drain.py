"""Drain mode of a faust stage process: flush its partitions once the group has committed all input.

The stage has drained once its processes together flushed every input
partition (:meth:`DrainGate.mark_copy_done`); each process stays until
then, so no partition moves while the others finish.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pipeline.config import Settings
from pipeline.kafka.admin import group_lag
from pipeline.runtime.drain import DrainGate

log = logging.getLogger(__name__)

WAIT_NOTE_SECONDS = 30.0
"""How long a drain waits on unchanged uncommitted input before it says where reading stands."""


class FaustDrain:
    """Looks, every half second, whether a faust stage process may flush and stop."""

    def __init__(
        self,
        settings: Settings,
        stage: str,
        gate: DrainGate,
        consumer: Any,
        owned: Callable[[], set[int]],
        flush: Callable[[], None],
        finish: Callable[[str], None],
        describe: Callable[[], Awaitable[str]],
    ) -> None:
        self.settings = settings
        self.stage = stage
        self.gate = gate
        self.consumer = consumer  # faust's: whether the process holds any partition now
        self.owned = owned  # the handler's input partitions held here
        self.flush = flush  # the drain's final flush of the partitions held here
        self.finish = finish  # stop the process, saying how it ended
        self.describe = describe  # where reading stands, for a drain that waits long
        self.consumed: Sequence[str] = ()  # the topics whose lag must be 0 (set once the app is built)
        self.flushed: set[int] = set()  # input partitions this process flushed
        self._lag, self._waiting_since = 0, 0.0

    async def check(self, partitions: int, figures: Callable[[], dict[str, float]]) -> None:
        """Flush once the group has committed all input; finish once every partition is flushed.

        ``partitions``: how many the handler's input has; ``figures``: this
        process's step figures, kept with its part of the drain (read last). A process
        holding none of the handler's input (another one does the work; this
        one forwards, or has nothing) flushes nothing.
        """
        if not self.gate.upstream_done():
            return
        if self.gate.stage_done():
            self.finish("drained (the other processes of the stage flushed the rest)")
            return
        if not self.consumer.assignment():
            return
        loop = asyncio.get_running_loop()
        settings = self.settings
        lag = await loop.run_in_executor(None, group_lag, settings, settings.group(self.stage), self.consumed)
        if lag:
            await self._note_wait(lag)
            return
        owned = self.owned()
        if owned - self.flushed:
            self.flush()
            self.flushed |= owned
        every = [str(p) for p in range(partitions)]
        if self.gate.mark_copy_done(map(str, self.flushed), every, figures()):
            self.finish("drained")

    async def _note_wait(self, lag: int) -> None:
        """Say where reading stands when the drain has waited on the same uncommitted input for a while."""
        now = time.monotonic()
        if lag != self._lag:
            self._lag, self._waiting_since = lag, now
        elif now - self._waiting_since >= WAIT_NOTE_SECONDS:
            self._waiting_since = now
            log.warning("%s: the drain has waited %.0f s on %d uncommitted input messages; %s", self.stage,
                        WAIT_NOTE_SECONDS, lag, await self.describe())  # fmt: skip
