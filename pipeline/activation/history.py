"""A person's recent history as activation keeps it, and the rules' conditions on it (pure).

The history is a small JSON-able dict (it lives in a state table):

- ``cart``: time of the newest ``add_to_cart``; ``bought``: of the newest order or purchase;
- ``collect``: click-and-collect orders not picked up yet, order id -> time;
- ``stores``: stores the person visited (geofence or POS);
- ``consent``: the newest marketing consent flag seen, as [time, flag];
- ``sent``: per channel, the times of messages sent (for the frequency caps);
- ``recent``: decision id -> decision row, for replays and the one-per-window guard;
- ``pending``: delayed decisions not due yet.

Times are event times (UTC epoch milliseconds).
"""

from __future__ import annotations

from typing import Any

from pipeline.model.contract import Event, conversion_kind

DAY_MS = 24 * 3_600_000
MINUTE_MS = 60_000
RECENT_DECISIONS = 64
"""Decisions remembered per person (replays re-emit them; the window guard reads them)."""


def new_history() -> dict[str, Any]:
    """An empty history."""
    return {"cart": None, "bought": None, "collect": {}, "stores": [], "consent": None,
            "sent": {}, "recent": {}, "pending": []}  # fmt: skip


def observe(history: dict[str, Any], event: Event) -> None:
    """Fold one event into the history (after the rules it triggers were evaluated)."""
    at = event["occurred_at"]
    etype, props = event.get("type"), event.get("properties") or {}
    if etype == "add_to_cart":
        history["cart"] = max(history["cart"] or 0, at)
    kind = conversion_kind(event)
    if kind in ("order", "purchase"):
        history["bought"] = max(history["bought"] or 0, at)
    if (
        etype == "order_completed"
        and props.get("fulfillment") == "click_and_collect"
        and props.get("order_id")
    ):
        history["collect"][str(props["order_id"])] = at
    if etype == "click_and_collect_pickup":
        history["collect"].pop(str(props.get("order_id")), None)
    store = store_of(event)
    if store and event.get("source") in ("geofence", "pos") and store not in history["stores"]:
        history["stores"].append(store)
    flag = (event.get("consent") or {}).get("marketing")
    if isinstance(flag, bool) and (history["consent"] is None or at >= history["consent"][0]):
        history["consent"] = [at, flag]


def store_of(event: Event) -> str:
    """The store an event happened at or concerns ('' online)."""
    store = (event.get("context") or {}).get("store_id") or (event.get("properties") or {}).get("store_id")
    return str(store) if store else ""


def conditions_hold(conditions: dict[str, Any], history: dict[str, Any], event: Event) -> bool:
    """True when every condition of a rule holds for a trigger ``event`` on the history before it."""
    at = event["occurred_at"]
    bought = history["bought"] or 0
    for name, value in conditions.items():
        if name == "cart_open_days":
            cart = history["cart"]
            if cart is None or at - cart > value * DAY_MS or bought >= cart:
                return False
        elif name == "collect_waiting":
            if not history["collect"]:
                return False
        elif name == "dwell_minutes":
            dwell = (event.get("properties") or {}).get("dwell_seconds")
            if not isinstance(dwell, int | float) or dwell < value * 60:
                return False
        elif name == "no_purchase_minutes":
            if bought and at - bought < value * MINUTE_MS:
                return False
        elif name == "first_visit_to_store" and store_of(event) in history["stores"]:
            return False
    return True


def waiting_order(history: dict[str, Any]) -> str:
    """The oldest click-and-collect order not picked up yet ('' when none)."""
    waiting = history["collect"]
    return min(waiting, key=lambda order: (waiting[order], order)) if waiting else ""


def merge_histories(survivor: dict[str, Any] | None, merged: dict[str, Any]) -> dict[str, Any]:
    """The history of a survivor after a merged person's history joined it."""
    if survivor is None:
        return merged
    out = dict(survivor)
    for key in ("cart", "bought"):
        out[key] = max(survivor[key] or 0, merged[key] or 0) or None
    out["collect"] = {**merged["collect"], **survivor["collect"]}
    out["stores"] = [*survivor["stores"], *(s for s in merged["stores"] if s not in survivor["stores"])]
    consents = [c for c in (survivor["consent"], merged["consent"]) if c is not None]
    out["consent"] = max(consents, key=lambda c: c[0]) if consents else None
    channels = set(survivor["sent"]) | set(merged["sent"])
    out["sent"] = {
        ch: sorted([*survivor["sent"].get(ch, ()), *merged["sent"].get(ch, ())]) for ch in channels
    }
    out["recent"] = {**merged["recent"], **survivor["recent"]}
    out["pending"] = sorted(
        [*survivor["pending"], *merged["pending"]], key=lambda p: (p["due"], p["decision_id"])
    )
    return out


def forget_before(history: dict[str, Any], horizon: int) -> None:
    """Drop sends and decisions older than ``horizon``; keep at most RECENT_DECISIONS decisions."""
    for channel, times in list(history["sent"].items()):
        kept = [t for t in times if t >= horizon]
        if kept:
            history["sent"][channel] = kept
        else:
            del history["sent"][channel]
    recent = sorted(history["recent"].items(), key=lambda item: (item[1]["decided_at"], item[0]))
    history["recent"] = dict(item for item in recent[-RECENT_DECISIONS:] if item[1]["decided_at"] >= horizon)


def trim_history(history: dict[str, Any]) -> dict[str, Any] | None:
    """The history with its oldest half of one kind of entry gone: the rule that bounds it (hot keys).

    In this order, while any is left: decisions (``recent``: a trigger's
    replay may then be decided again), waiting click-and-collect orders,
    stores visited (a visit may count as first again), delayed decisions
    not due yet (they are not sent). None when all are empty.
    """
    recent = sorted(history["recent"].items(), key=lambda item: (item[1]["decided_at"], item[0]))
    if recent:
        return {**history, "recent": dict(recent[len(recent) // 2 :] if len(recent) > 1 else [])}
    collect = sorted(history["collect"].items(), key=lambda item: (item[1], item[0]))
    if collect:
        return {**history, "collect": dict(collect[len(collect) // 2 :] if len(collect) > 1 else [])}
    if history["stores"]:
        return {**history, "stores": history["stores"][len(history["stores"]) // 2 or 1 :]}
    pending = sorted(history["pending"], key=lambda p: (p["due"], p["decision_id"]))
    if pending:
        return {**history, "pending": pending[len(pending) // 2 or 1 :]}
    return None
