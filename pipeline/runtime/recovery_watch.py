"""Noticing a faust table recovery that makes no progress, and saying what the consumer was doing.

After its partitions move, a faust stage restores their state from the
changelogs before it handles input. Rarely (about one run in 30 of a
fail-over experiment, docs/operations.md) that recovery waits for ever:
faust logs ``No event received for active tp ...`` every few seconds and
the records it still needs never come. The cause is not known yet; a
restart of the process cures it. :class:`RecoveryWatch` notices when the
records left to restore have not gone down for a while, and
:func:`report_if_stalled` then logs one error with what would tell the
cause apart: the changelog partitions' positions and highwaters, which of
them the consumer has paused, and what it is assigned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class RecoveryWatch:
    """Says when a table recovery has had records left to restore, and restored none, for too long."""

    def __init__(self, stall_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_seconds = stall_seconds
        self.clock = clock
        self.stalls = 0  # stalls noticed since the process started
        self._least_left: int | None = None  # the fewest records left seen in this recovery
        self._progress_at = 0.0  # when this recovery began, or last had fewer records left
        self._reported = False  # this stall was reported

    def stalled(self, in_recovery: bool, left: int) -> bool:
        """Called now and then with the recovery's state: True once per stall, when it is noticed.

        ``left``: records the active partitions still need from their
        changelogs. Progress is fewer left than ever before in this recovery.
        """
        now = self.clock()
        if not in_recovery:
            self._least_left = None
            return False
        if self._least_left is None or left < self._least_left:
            self._least_left = left
            self._progress_at = now
            self._reported = False
            return False
        if left > 0 and not self._reported and now - self._progress_at >= self.stall_seconds:
            self._reported = True
            self.stalls += 1
            return True
        return False


def report_if_stalled(recovery: Any, consumer: Any, watch: RecoveryWatch, stage: str) -> bool:
    """Look at faust's table recovery once; log an error with the consumer's state if it stalled."""
    in_recovery = bool(getattr(recovery, "in_recovery", False))
    left = recovery.active_remaining_total() if in_recovery else 0
    if not watch.stalled(in_recovery, left):
        return False
    remaining = {name: n for name, n in _by_tp(recovery.active_remaining()).items() if n}
    try:  # faust's own pause list, and the Kafka client's beneath it
        paused = _names(consumer._paused_partitions), _names(consumer._thread._ensure_consumer().paused())
    except Exception as exc:  # a diagnostic: faust's consumer internals may differ between versions
        paused = ([f"unknown ({exc!r})"], [])
    assigned = _names(consumer.assignment())
    log.error("%s: table recovery restored nothing for %.0f s with %d changelog records left "
              "(by partition: %s; highwaters %s, offsets %s; paused by faust: %s, by the client: %s; "
              "assigned: %s). "
              "Restarting this process restores its partitions (docs/operations.md, known problem)",
              stage, watch.stall_seconds, left, remaining, _by_tp(recovery.active_highwaters),
              _by_tp(recovery.active_offsets), *paused, assigned)  # fmt: skip
    return True


def _name(tp: Any) -> str:
    return f"{tp.topic}/{tp.partition}"


def _by_tp(counter: Any) -> dict[str, Any]:
    return {_name(tp): n for tp, n in dict(counter).items()}


def _names(tps: Any) -> list[str]:
    return sorted(map(_name, tps))
