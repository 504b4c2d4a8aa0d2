"""Per-person touchpoint paths and the crediting of conversions (pure, no Kafka).

The state of a person is a plain dict: its recent touchpoints (one per
session, the newest record of a session wins) and the time of its last
conversion, after which a new path starts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from pipeline.attribution.custom import CustomRules
from pipeline.attribution.models import Touch, attribute, select_path
from pipeline.model.rows import ADJUSTMENTS, ATTRIBUTION, CONVERSIONS

Output = tuple[str, dict[str, Any]]
DAY_MS = 86_400_000


def conversion_id_for(event_id: str) -> str:
    """Deterministic conversion id of a conversion event."""
    return "c_" + hashlib.sha256(event_id.encode()).hexdigest()[:24]


MAX_REMEMBERED_CONVERSIONS = 50  # per person, for returns


def new_state() -> dict[str, Any]:
    """A person with no touchpoints yet."""
    return {"touches": {}, "last_conversion_at": None, "conversions": {}}


def o2o_label(conversion_source: str, own_session: str, path: Sequence[Touch], store: set[str]) -> str:
    """How online and offline touchpoints combine on the way to a conversion.

    The conversion's own session does not count: an in-store purchase always
    happens inside a store visit, an online order inside a digital session.
    """
    others = [t for t in path if t.session_id != own_session]
    offline = conversion_source in ("pos", "geofence")
    digital = any(t.session_id not in store for t in others)
    visits = any(t.session_id in store for t in others)
    if offline:
        if digital and visits:
            return "mixed"
        return "online_to_offline" if digital else "offline_only"
    if digital and visits:
        return "mixed"
    return "offline_to_online" if visits else "online_only"


class PathAttributor:
    """Keeps each person's touchpoints and credits their conversions under every model."""

    def __init__(
        self,
        models: Sequence[str],
        lookback_days: float,
        half_life_days: float,
        custom: CustomRules | None = None,
    ) -> None:
        self.models = tuple(models)
        self.custom = custom
        self.lookback_ms = int(lookback_days * DAY_MS)
        self.half_life_ms = int(half_life_days * DAY_MS)

    def add_touch(self, state: dict[str, Any], touch: dict[str, Any]) -> dict[str, Any]:
        """Remember (or update) the touchpoint of a session."""
        touches = dict(state["touches"])
        touches[touch["session_id"]] = [
            touch["channel"],
            touch["started_at"],
            touch.get("campaign_name", ""),
            bool(touch.get("identified")),
            touch.get("kind", "digital"),
        ]
        newest = max(t[1] for t in touches.values())
        horizon = newest - self.lookback_ms
        state = dict(state)
        state["touches"] = {sid: t for sid, t in touches.items() if t[1] >= horizon}
        return state

    @staticmethod
    def remove_touch(state: dict[str, Any], session_id: str) -> dict[str, Any]:
        """Forget the touchpoint of a session a late event merged away or renamed."""
        if session_id not in state["touches"]:
            return state
        state = dict(state)
        state["touches"] = {sid: t for sid, t in state["touches"].items() if sid != session_id}
        return state

    def convert(self, state: dict[str, Any], conversion: dict[str, Any], out: list[Output]) -> dict[str, Any]:
        """Credit one conversion over the person's current path; emit its rows."""
        at = conversion["occurred_at"]
        touches = [
            Touch(sid, t[0], t[1], campaign_name=t[2], identified=t[3], kind=t[4])
            for sid, t in state["touches"].items()
        ]
        store_sessions = {sid for sid, t in state["touches"].items() if t[4] == "store_visit"}
        path = select_path(touches, at, self.lookback_ms, state.get("last_conversion_at"))
        own = [t for t in touches if t.session_id == conversion["session_id"]]
        if not conversion.get("marketing", True) or not path:
            # Without marketing consent, or when the path was reset inside the
            # converting session, only the conversion's own session is credited.
            path = own
        conversion_id = conversion_id_for(conversion["event_id"])
        credits = attribute(path, at, conversion["revenue"], self.models, self.half_life_ms, self.custom)
        for model, model_credits in credits.items():
            for c in model_credits:
                out.append(
                    (
                        ATTRIBUTION.name,
                        {
                            "conversion_id": conversion_id,
                            "model": model,
                            "session_id": c.session_id,
                            "person_id": conversion["person_id"],
                            "channel": c.channel,
                            "campaign_name": c.campaign_name,
                            "touch_at": c.started_at,
                            "converted_at": at,
                            "position": c.position,
                            "credit": c.credit,
                            "revenue_credit": c.revenue_credit,
                            "version": 1,
                        },
                    )
                )
        out.append(
            (
                CONVERSIONS.name,
                {
                    "conversion_id": conversion_id,
                    "event_id": conversion["event_id"],
                    "person_id": conversion["person_id"],
                    "occurred_at": at,
                    "kind": conversion["kind"],
                    "source": conversion["source"],
                    "revenue": conversion["revenue"],
                    "currency": conversion["currency"],
                    "order_id": conversion["order_id"],
                    "store_id": conversion["store_id"],
                    "staff_id": conversion.get("staff_id", ""),
                    "session_id": conversion["session_id"],
                    "path_length": len(path),
                    "o2o_label": o2o_label(
                        conversion["source"], conversion["session_id"], path, store_sessions
                    ),
                    "version": 1,
                },
            )
        )
        state = dict(state)
        state["last_conversion_at"] = max(at, state.get("last_conversion_at") or at)
        if conversion["order_id"]:
            # what a later return of this order needs: the credits per model
            remembered = dict(state.get("conversions") or {})
            remembered[conversion["order_id"]] = {
                "conversion_id": conversion_id,
                "credits": {
                    model: [[c.session_id, c.channel, c.credit] for c in model_credits]
                    for model, model_credits in credits.items()
                },
            }
            while len(remembered) > MAX_REMEMBERED_CONVERSIONS:
                remembered.pop(next(iter(remembered)))
            state["conversions"] = remembered
        return state

    def refund(self, state: dict[str, Any], ret: dict[str, Any], out: list[Output]) -> bool:
        """Adjustment rows of a return: minus the refund, split like the original's credits.

        Returns False when the returned order is not among the person's
        remembered conversions (nothing is emitted then).
        """
        original = (state.get("conversions") or {}).get(ret["order_ref"])
        if original is None or not ret["order_ref"]:
            return False
        for model, credits in original["credits"].items():
            amounts = [-ret["refund"] * credit for _sid, _channel, credit in credits]
            for (session_id, channel, _credit), amount in zip(credits, amounts, strict=True):
                out.append(
                    (
                        ADJUSTMENTS.name,
                        {
                            "adjustment_id": f"{ret['event_id']}|{model}|{session_id}",
                            "conversion_id": original["conversion_id"],
                            "model": model,
                            "session_id": session_id,
                            "person_id": ret["person_id"],
                            "channel": channel,
                            "return_event_id": ret["event_id"],
                            "returned_at": ret["occurred_at"],
                            "revenue_adjustment": amount,
                            "version": 1,
                        },
                    )
                )
        return True
