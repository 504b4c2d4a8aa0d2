"""A clock the tests move by hand, for code that takes ``clock: Callable[[], float]``."""

from __future__ import annotations


class HandClock:
    """Returns ``now``, which the test sets."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
