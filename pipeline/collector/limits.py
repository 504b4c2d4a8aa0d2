"""Request limits of the collector: a rate and a concurrency cap per client address and per write key.

A request is admitted for its client address before anything of its body is
read, and for its write key as soon as the key is known (from the
``Authorization`` header before the body, from the body after a small read).
Over a rate: 429 with ``Retry-After`` (the seconds until a token is back);
over a concurrency cap: 429 with ``Retry-After: 1``. Each limit is off at 0.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

from pipeline.collector.http import HTTPProblem
from pipeline.config import Settings

# Buckets kept at most (least recently used go first): an attacker cycling through
# addresses or keys cannot grow the collector's memory without bound.
MAX_TRACKED = 100_000


class TokenBuckets:
    """A token bucket per key: ``rate`` requests per second on average, bursts of ``2 x rate``."""

    def __init__(self, rate: float, max_tracked: int = MAX_TRACKED) -> None:
        self.rate = rate
        self.burst = max(1.0, 2 * rate)
        self.max_tracked = max_tracked
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def take(self, key: str, now: float) -> float:
        """0.0 when a request may go now (it takes a token), else the seconds until one may."""
        if self.rate <= 0:
            return 0.0
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_tracked:
            self._buckets.popitem(last=False)
        return wait


class InFlight:
    """Requests being handled per key, at most ``limit`` at once (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._count: dict[str, int] = {}

    def enter(self, key: str) -> bool:
        """Count a request in; False (and nothing counted) when ``key`` is at its limit."""
        held = self._count.get(key, 0)
        if self.limit and held >= self.limit:
            return False
        self._count[key] = held + 1
        return True

    def leave(self, key: str) -> None:
        """Count a request out."""
        held = self._count.get(key, 0) - 1
        if held > 0:
            self._count[key] = held
        else:
            self._count.pop(key, None)


@dataclass
class RequestLimits:
    """The caps of one collector, by kind (``address`` or ``key``)."""

    rates: dict[str, TokenBuckets]
    in_flight: dict[str, InFlight]

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestLimits:
        """The limits the ``O2O_COLLECTOR_*`` settings ask for."""
        return cls(
            rates={
                "address": TokenBuckets(settings.collector_rate_per_address),
                "key": TokenBuckets(settings.collector_rate_per_key),
            },
            in_flight={
                "address": InFlight(settings.collector_concurrency_per_address),
                "key": InFlight(settings.collector_concurrency_per_key),
            },
        )

    def admission(self) -> Admission:
        """A new request's admission: what it holds is released when it is done."""
        return Admission(self)


@dataclass
class Admission:
    """One request's slots; :meth:`release` gives them back."""

    limits: RequestLimits
    held: list[tuple[str, str]] = field(default_factory=list)

    def admit(self, kind: str, who: str, now: float) -> None:
        """Take a token and a slot of ``who`` (an address or a write key), or raise a 429."""
        wait = self.limits.rates[kind].take(who, now)
        if wait > 0:
            raise TooManyRequests(f"rate_{kind}", f"over the request rate of this {kind}", wait)
        if not self.limits.in_flight[kind].enter(who):
            raise TooManyRequests(f"busy_{kind}", f"too many requests of this {kind} at once", 1.0)
        self.held.append((kind, who))

    def release(self) -> None:
        """Give back every slot taken."""
        for kind, who in self.held:
            self.limits.in_flight[kind].leave(who)
        self.held.clear()


class TooManyRequests(HTTPProblem):
    """429 with ``Retry-After``; ``error`` says which limit (``rate_address``, ``busy_key``, ...)."""

    def __init__(self, error: str, detail: str, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(429, error, detail, {"Retry-After": str(self.retry_after)})
