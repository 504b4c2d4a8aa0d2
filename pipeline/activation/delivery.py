"""Delivering decisions to a webhook: what to post, when to retry, and the ledger of statuses (pure).

Every decision to post goes through these statuses, each one written to the
compacted topic ``activation.deliveries`` (keyed by decision id) before the
next step is taken:

- ``sending``: written, and acknowledged by Kafka, before the POST;
- ``delivered``: the receiver answered 2xx;
- ``failed``: the receiver refused it for good (a 4xx other than 408 and
  429), or every attempt failed;
- ``unknown``: a restart found it ``sending``: the process stopped between
  the POST and its answer being recorded, so the receiver may or may not
  have it. It is not posted again: a decision is posted at most once.

Posting at most once is a choice: a marketing message twice is worse than one
lost in a crash, and every post carries the decision id as its
``Idempotency-Key`` header for receivers that deduplicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DELIVERY_STATUSES = ("sending", "delivered", "failed", "unknown")
FINAL = frozenset({"delivered", "failed", "unknown"})
RETRY_STATUS_CODES = frozenset({408, 429})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a failing POST is tried again (exponential backoff)."""

    max_attempts: int = 8
    first_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (from 1); the receiver's Retry-After wins."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        return min(self.first_delay * 2.0 ** (attempt - 1), self.max_delay)


def verdict(status_code: int | None) -> str:
    """What an answer means: ``delivered``, ``retry`` (None: no answer at all) or ``failed``."""
    if status_code is None or status_code >= 500 or status_code in RETRY_STATUS_CODES:
        return "retry"
    if 200 <= status_code < 300:
        return "delivered"
    return "failed"


def retry_after_seconds(header: str | None) -> float | None:
    """A Retry-After header given in seconds (an HTTP date is ignored: backoff applies)."""
    if header is None:
        return None
    try:
        return float(header.strip())
    except ValueError:
        return None


def to_post(decision: dict[str, Any], outcomes: frozenset[str]) -> bool:
    """True for a decision the webhook gets: its outcome is one of ``outcomes`` (``sent`` by default)."""
    return decision.get("outcome") in outcomes


class DeliveryLedger:
    """The newest delivery status per decision id, as read back from ``activation.deliveries``."""

    def __init__(self) -> None:
        self.statuses: dict[str, dict[str, Any]] = {}

    def take(self, decision_id: str, status: dict[str, Any] | None) -> None:
        """Record a status read from the topic (None: a tombstone)."""
        if status is None:
            self.statuses.pop(decision_id, None)
        else:
            self.statuses[decision_id] = status

    def next_step(self, decision_id: str) -> str:
        """``post``: never tried; ``skip``: it has a final status; ``unknown``: it was left sending."""
        status = self.statuses.get(decision_id)
        if status is None:
            return "post"
        return "skip" if status["status"] in FINAL else "unknown"


def status_record(
    decision: dict[str, Any], status: str, attempts: int, at: int, http_status: int = 0, error: str = ""
) -> dict[str, Any]:
    """A row of ``activation_deliveries``; ``version`` orders a decision's statuses (sending first)."""
    return {
        "decision_id": decision["decision_id"],
        "rule": decision.get("rule", ""),
        "person_id": decision.get("person_id", ""),
        "status": status,
        "attempts": attempts,
        "http_status": http_status,
        "error": error[:500],
        "updated_at": at,
        "version": 1 if status == "sending" else 2,
    }
