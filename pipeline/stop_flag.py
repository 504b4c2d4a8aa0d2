"""A flag SIGTERM and SIGINT set, for loops that finish their step before they stop."""

from __future__ import annotations

import signal


class StopFlag:
    """Set by SIGTERM or SIGINT once created (it replaces their handlers in this process)."""

    def __init__(self) -> None:
        self.stopped = False
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, *_args: object) -> None:
        self.stopped = True
