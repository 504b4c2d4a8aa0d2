"""Noticing a faust table recovery that makes no progress, and reading its changelogs again.

After its partitions move, a faust stage restores their state from the
changelogs before it handles input. Rarely (about one run in 30 of a
fail-over experiment, docs/operations.md) that recovery waited for ever:
faust logged ``No event received for active tp ...`` every few seconds and
the records it still needed never came. The likely cause is faust's
consumer dropping fetched changelog records with the client's position
already past them (:mod:`pipeline.runtime.unhanded` puts those back); this
module is the net under any cause. :class:`RecoveryWatch` notices when the
records left to restore have not gone down for a while; :class:`RecoveryGuard`
then logs what the consumer was doing and seeks the stalled changelog
partitions back to where the recovery stands, as faust's recovery does when
it starts (reading a changelog again from an earlier offset only writes the
same values again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import faust
from faust.types import TP

log = logging.getLogger(__name__)

CHECK_SECONDS = 2.0
"""How often the guard looks at the recovery."""

STALL_SECONDS = 10.0
"""A recovery that restored nothing this long, with records left, has its changelogs read again."""


class RecoveryWatch:
    """Says when a table recovery has had records left to restore, and restored none, for too long."""

    def __init__(self, stall_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_seconds = stall_seconds
        self.clock = clock
        self.stalls = 0  # stalls noticed since the process started
        self._left: int | None = None  # records left at the last look (None: no recovery then)
        self._recovery: object = None  # which recovery that was
        self._since = 0.0  # when this recovery began, last had fewer records left, or last stalled

    def stalled(self, in_recovery: bool, left: int, recovery: object = None) -> bool:
        """Called now and then with the recovery's state: True each ``stall_seconds`` without progress.

        ``left``: records the active partitions still need from their
        changelogs; ``recovery``: what tells one recovery from the next (faust
        starts a new one at each rebalance, without ending the one before).
        Progress is fewer records left than at the last look.
        """
        now = self.clock()
        if not in_recovery:
            self._left = None
            return False
        fell = self._left is not None and left < self._left
        new = self._left is None or recovery != self._recovery
        self._left, self._recovery = left, recovery
        if new or fell:
            self._since = now
            return False
        if left > 0 and now - self._since >= self.stall_seconds:
            self._since = now
            self.stalls += 1
            return True
        return False


class RecoveryGuard:
    """Watches a faust app's table recoveries from its first assignment; reads a stalled one's again."""

    def __init__(self, app: faust.App, stage: str, stall_seconds: float = STALL_SECONDS) -> None:
        self.app = app
        self.stage = stage
        self.watch = RecoveryWatch(stall_seconds)
        self._started = False
        # faust starts its timers only once the first recovery is over: a task of our own watches that one too
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]  # mode types it too narrowly

    def _on_assigned(self, _sender: Any, *args: Any, **_kwargs: Any) -> None:
        if not self._started:
            self._started = True
            self.app.add_future(self._run())

    async def _run(self) -> None:
        while not self.app.should_stop:
            await asyncio.sleep(CHECK_SECONDS)
            try:
                await self.check()
            except Exception as exc:  # a broker away, a rebalance under way: the next check tries again
                log.warning("%s: checking the table recovery failed: %r", self.stage, exc)

    async def check(self) -> bool:
        """Look at the recovery once; if it stalled, say so and seek its stalled changelogs back."""
        recovery = getattr(self.app.tables, "recovery", None)
        if recovery is None:
            return False
        consumer: Any = self.app.consumer
        if not report_if_stalled(recovery, consumer, self.watch, self.stage):
            return False
        if not consumer.flow_active:  # a rebalance is under way: its recovery seeks every changelog
            return False
        # faust's own partition type: its active set holds no other (the highwaters' keys are aiokafka's)
        stalled = {TP(tp.topic, tp.partition) for tp, n in recovery.active_remaining().items() if n > 0}
        # faust's own seek at the start of a recovery, to the offsets it has restored up to
        await recovery._seek_offsets(consumer, stalled, recovery.active_offsets, "active")
        consumer.resume_partitions(stalled)
        log.warning("%s: changelog partitions %s read again from the offsets restored", self.stage,
                    _names(stalled))  # fmt: skip
        return True


def report_if_stalled(recovery: Any, consumer: Any, watch: RecoveryWatch, stage: str) -> bool:
    """Look at faust's table recovery once; log the consumer's state if it stalled (first an error)."""
    in_recovery = bool(getattr(recovery, "in_recovery", False))
    left = recovery.active_remaining_total() if in_recovery else 0
    if not watch.stalled(in_recovery, left, getattr(recovery, "_recovery_started_at", None)):
        return False
    remaining = {name: n for name, n in _by_tp(recovery.active_remaining()).items() if n}
    try:  # faust's own pause list, and the Kafka client's beneath it
        paused = _names(consumer._paused_partitions), _names(consumer._thread._ensure_consumer().paused())
    except Exception as exc:  # a diagnostic: faust's consumer internals may differ between versions
        paused = ([f"unknown ({exc!r})"], [])
    assigned = _names(consumer.assignment())
    log.log(logging.ERROR if watch.stalls == 1 else logging.WARNING,
            "%s: table recovery restored nothing for %.0f s with %d changelog records left "
            "(by partition: %s; highwaters %s, offsets %s; paused by faust: %s, by the client: %s; "
            "assigned: %s)",
            stage, watch.stall_seconds, left, remaining, _by_tp(recovery.active_highwaters),
            _by_tp(recovery.active_offsets), *paused, assigned)  # fmt: skip
    return True


def name(tp: Any) -> str:
    """A topic partition as ``topic/partition``, in logs."""
    return f"{tp.topic}/{tp.partition}"


def _by_tp(counter: Any) -> dict[str, Any]:
    return {name(tp): n for tp, n in dict(counter).items()}


def _names(tps: Any) -> list[str]:
    return sorted(map(name, tps))
