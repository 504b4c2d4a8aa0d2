"""Per-person touchpoint paths and the crediting of conversions (pure, no Kafka).

The state of a person is a plain dict:

* ``touches``: the touchpoint of every recent session (session id -> channel,
  start, campaign, identified, kind); a session's newest record wins;
* ``conversions``: the recent conversions, oldest first, each with the path it
  was last credited over (as a fingerprint), its version and its returns;
* ``floor``: the time of the newest conversion no longer remembered (a path
  never reaches back past it);
* ``removed``: sessions journeys withdrew before their touch arrived here
  (a merge hands touches over later), so they are not taken in again;
* ``versions``: the session version of each touch and removal kept (journeys
  numbers every change of a session): a touch and a removal of one session
  that meet -- in either order, directly or in a hand-over -- leave the
  newer word, so the outcome does not depend on which arrived first.

Every change of the touches re-credits the remembered conversions whose path
it changes, with a higher version (the ``attribution`` view shows the newest
version of each conversion and model): a late touch, a session journeys
re-cut, a merge that brings another person's touches.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from pipeline.attribution.custom import CustomRules
from pipeline.attribution.datadriven import FittedModel
from pipeline.attribution.models import Credit, Touch, attribute, select_path
from pipeline.model.rows import ADJUSTMENTS, ATTRIBUTION, CONVERSIONS

Output = tuple[str, dict[str, Any]]
DAY_MS = 86_400_000
MAX_REMEMBERED_CONVERSIONS = 50  # per person: re-attribution and returns reach this far back
DATA_DRIVEN = ("markov", "shapley")


def conversion_id_for(event_id: str) -> str:
    """Deterministic conversion id of a conversion event."""
    return "c_" + hashlib.sha256(event_id.encode()).hexdigest()[:24]


def new_state() -> dict[str, Any]:
    """A person with no touchpoints yet."""
    return {"touches": {}, "conversions": [], "floor": None, "removed": {}, "versions": {}}


def drop_oldest_touches(state: dict[str, Any]) -> dict[str, Any] | None:
    """The state without its oldest quarter of touches: the rule that bounds a person's path (hot keys).

    The horizon moves past them, as the lookback's pruning does, so a replay
    cannot bring them back; without touches, the oldest remembered
    conversions go the same way. None when nothing is left to drop.
    """
    touches = state.get("touches") or {}
    if touches:
        by_time = sorted(touches.items(), key=lambda item: (item[1][1], item[0]))
        cut = by_time[max(1, len(by_time) // 4) - 1][1][1] + 1
        removed = state.get("removed") or {}
        return {**state, "touches": {sid: t for sid, t in touches.items() if t[1] >= cut},
                "horizon": max(cut, state.get("horizon", -(2**62))),
                "removed": {sid: at for sid, at in removed.items() if at >= cut}}  # fmt: skip
    conversions = state.get("conversions") or []
    if len(conversions) > 1:
        dropped = conversions[: len(conversions) // 2]
        floor = max([state.get("floor") or 0, *(c["occurred_at"] for c in dropped)])
        return {**state, "conversions": conversions[len(dropped) :], "floor": floor}
    return None


def _normalised(state: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of ``state`` with every key present (states written by older versions too)."""
    base = new_state()
    if state:
        base.update(state)
    if not isinstance(base["conversions"], list):  # before re-attribution: a dict by order id
        base["conversions"] = []
    base.pop("last_conversion_at", None)
    return base


def _version(record: Mapping[str, Any]) -> int:
    """Journeys' version of the session a touch or removal is about; -1 when it has none."""
    version = record.get("version")
    return -1 if version is None else int(version)


def _noted(versions: dict[str, int], session_id: str, version: int) -> dict[str, int]:
    """``versions`` with the session's newest word; unnumbered ones are not kept."""
    if version < 0:
        return {k: v for k, v in versions.items() if k != session_id} if session_id in versions else versions
    return {**versions, session_id: version}


def _newest_words(
    state: dict[str, Any], other: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, int], dict[str, int]]:
    """Touches, removals and versions of two states taken together: per session the newer word.

    Equal versions (or none) keep the removal: a session withdrawn on one side
    and still touched on the other is not taken in again.
    """
    touches: dict[str, Any] = {}
    removed: dict[str, int] = {}
    versions: dict[str, int] = {}
    sides = (("other", other), ("state", state))  # on a tie, "state" (the survivor's) wins
    for sid in {*state["touches"], *other["touches"], *state["removed"], *other["removed"]}:
        # (version, a removal beats a touch of the same version, side)
        version, is_removal, side = max(
            (words["versions"].get(sid, -1), kind, name)
            for name, words in sides
            for kind, held in ((1, words["removed"]), (0, words["touches"]))
            if sid in held
        )
        part = state if side == "state" else other
        if is_removal:
            removed[sid] = part["removed"][sid]
        else:
            touches[sid] = part["touches"][sid]
        if version >= 0:
            versions[sid] = version
    return touches, removed, versions


PLACEMENT = ("person_id", "session_id", "session_kind", "store_id")  # what journeys may change later


def _placed(known: dict[str, Any], conversion: dict[str, Any]) -> dict[str, Any]:
    """``known`` with the session journeys gives the conversion now (``known`` itself if unchanged)."""
    if all(known.get(field) == conversion.get(field) for field in PLACEMENT):
        return known
    # print None: the rows carry the session, so they are emitted again under a new version
    return {**known, **{field: conversion.get(field) for field in PLACEMENT}, "print": None}


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
        reset_after_conversion: bool = True,
    ) -> None:
        self.models = tuple(models)
        self.reset_after_conversion = reset_after_conversion
        self.custom = custom
        self.lookback_ms = int(lookback_days * DAY_MS)
        self.half_life_ms = int(half_life_days * DAY_MS)
        self.fitted: Mapping[str, FittedModel] = {}
        # when True, changes only mark the state; the caller runs recredit() once per
        # person and batch (a merge brings many touch changes at once)
        self.deferred = False
        # the runtime's epoch floor: a replay after a crash credits above anything sent before it
        self.version_floor = 0

    def add_touch(
        self, state: dict[str, Any] | None, touch: dict[str, Any], out: list[Output]
    ) -> dict[str, Any]:
        """Remember (or update) the touchpoint of a session; re-credit what it changes.

        A session that began without the person's marketing consent is kept
        (marked) only to credit a conversion in it that has no marketing
        consent either; it is on no conversion's path.
        """
        state = _normalised(state)
        entry = [
            touch["channel"],
            touch["started_at"],
            touch.get("campaign_name", ""),
            bool(touch.get("identified")),
            touch.get("kind", "digital"),
        ]
        if touch.get("marketing") is False:
            entry.append(False)
        session_id, version = touch["session_id"], _version(touch)
        if session_id in state["removed"] and state["versions"].get(session_id, -1) > version:
            return state  # journeys withdrew the session after sending this touch
        state["touches"] = {**state["touches"], session_id: entry}
        state["removed"] = {k: v for k, v in state["removed"].items() if k != session_id}
        state["versions"] = _noted(state["versions"], session_id, version)
        return self._recredit(self._prune(state), out)

    def remove_touch(
        self, state: dict[str, Any] | None, record: dict[str, Any], out: list[Output]
    ) -> dict[str, Any]:
        """Forget the touchpoint of a session journeys withdrew (merged away or renamed)."""
        state = _normalised(state)
        session_id, version = record["session_id"], _version(record)
        if session_id in state["touches"] and state["versions"].get(session_id, -1) > version:
            return state  # the session came back after this removal was sent
        state["removed"] = {**state["removed"], session_id: int(record.get("started_at") or 0)}
        state["versions"] = _noted(state["versions"], session_id, version)
        if session_id in state["touches"]:
            state["touches"] = {sid: t for sid, t in state["touches"].items() if sid != session_id}
            return self._recredit(state, out)
        return state

    def convert(
        self, state: dict[str, Any] | None, conversion: dict[str, Any], out: list[Output]
    ) -> dict[str, Any]:
        """Credit one conversion over the person's path; emit its rows (once per conversion)."""
        state = _normalised(state)
        for index, known in enumerate(state["conversions"]):
            if known["event_id"] == conversion["event_id"]:
                # a replay, or journeys moved the conversion to another session
                updated = _placed(known, conversion)
                if updated is known:
                    return state
                state["conversions"] = [*state["conversions"]]
                state["conversions"][index] = updated
                return self._recredit(state, out)
        remembered = {**conversion, "version": 0, "print": None, "returns": []}
        state["conversions"] = sorted(
            [*state["conversions"], remembered], key=lambda c: (c["occurred_at"], c["event_id"])
        )
        return self._recredit(self._prune(state), out)

    def refund(
        self, state: dict[str, Any] | None, ret: dict[str, Any], out: list[Output]
    ) -> tuple[dict[str, Any], bool]:
        """Adjustment rows of a return: minus the refund, split like the conversion's credits.

        Returns the new state and False when the returned order is not among
        the person's remembered conversions (nothing is emitted then).
        """
        state = _normalised(state)
        if state.pop("dirty", False):
            state = self.recredit(state, out)
        index = next(
            (
                i
                for i, c in enumerate(state["conversions"])
                if ret["order_ref"] and c["order_id"] == ret["order_ref"]
            ),
            None,
        )
        if index is None:
            return state, False
        conversions = list(state["conversions"])
        original = dict(conversions[index])
        if any(r[0] == ret["event_id"] for r in original["returns"]):
            return state, True  # a replay
        original["returns"] = [*original["returns"], [ret["event_id"], ret["refund"], ret["occurred_at"]]]
        conversions[index] = original
        state["conversions"] = conversions
        credits = self._credits(state, index)[0]
        self._adjustments(original, [original["returns"][-1]], credits, original["version"], out)
        return state, True

    def absorb(
        self, state: dict[str, Any] | None, other: dict[str, Any], person: str, out: list[Output]
    ) -> dict[str, Any]:
        """Take over the touches and conversions of a person merged into this one; re-credit."""
        state, other = _normalised(state), _normalised(other)
        touches, removed, versions = _newest_words(state, other)
        theirs = {c["event_id"]: c for c in other["conversions"]}
        # a conversion both know: journeys re-sent it here after the merge, with its newer
        # session; it is credited again above any version the merged person sent
        ours = [
            {**c, "version": max(c["version"], theirs[c["event_id"]]["version"]), "print": None}
            if c["event_id"] in theirs
            else c
            for c in state["conversions"]
        ]
        known = {c["event_id"] for c in ours}
        moved = [{**c, "person_id": person} for c in other["conversions"] if c["event_id"] not in known]
        floors = [f for f in (state["floor"], other["floor"]) if f is not None]
        merged = {
            "touches": touches,
            "conversions": sorted([*ours, *moved], key=lambda c: (c["occurred_at"], c["event_id"])),
            "floor": max(floors) if floors else None,
            "removed": removed,
            "versions": versions,
        }
        return self._recredit(self._prune(merged), out)

    def _prune(self, state: dict[str, Any]) -> dict[str, Any]:
        """Bound the state: at most 50 conversions; touches no remembered conversion can reach."""
        conversions = state["conversions"]
        if len(conversions) > MAX_REMEMBERED_CONVERSIONS:
            dropped = conversions[: len(conversions) - MAX_REMEMBERED_CONVERSIONS]
            state["floor"] = max([state["floor"] or 0, *(c["occurred_at"] for c in dropped)])
            state["conversions"] = conversions[len(dropped) :]
        times = [t[1] for t in state["touches"].values()]
        if times:
            oldest_needed = min([max(times), *(c["occurred_at"] for c in state["conversions"])])
            # never moves back: a touch older than ones already pruned goes too (a replay
            # after a restart re-sends it; keeping it would credit differently the second time)
            horizon = max(oldest_needed - self.lookback_ms, state.get("horizon", -(2**62)))
            if any(t[1] < horizon for t in state["touches"].values()):
                state["horizon"] = horizon
            state["touches"] = {sid: t for sid, t in state["touches"].items() if t[1] >= horizon}
            state["removed"] = {sid: at for sid, at in state["removed"].items() if at >= horizon}
        versions = state["versions"]
        if versions:
            state["versions"] = {
                sid: v for sid, v in versions.items() if sid in state["touches"] or sid in state["removed"]
            }
        return state

    def _credits(
        self, state: dict[str, Any], index: int
    ) -> tuple[dict[str, list[Credit]], list[Touch], set[str]]:
        """The credits of remembered conversion ``index`` over the current touches."""
        conversion = state["conversions"][index]
        at = conversion["occurred_at"]
        after = None
        if self.reset_after_conversion:
            after = state["conversions"][index - 1]["occurred_at"] if index else state["floor"]
        touches = [
            Touch(sid, t[0], t[1], campaign_name=t[2], identified=t[3], kind=t[4])
            for sid, t in state["touches"].items()
        ]
        store_sessions = {sid for sid, t in state["touches"].items() if t[4] == "store_visit"}
        without_consent = {sid for sid, t in state["touches"].items() if len(t) > 5 and t[5] is False}
        usable = [t for t in touches if t.session_id not in without_consent] if without_consent else touches
        path = select_path(usable, at, self.lookback_ms, after)
        if not conversion.get("marketing", True) or not path:
            # Without marketing consent, or when the path was reset inside the
            # converting session, only the conversion's own session is credited.
            path = [t for t in touches if t.session_id == conversion["session_id"]]
        models = [m for m in self.models if m not in DATA_DRIVEN or m in self.fitted]
        credits = attribute(
            path, at, conversion["revenue"], models, self.half_life_ms, self.custom, self.fitted
        )
        return credits, path, store_sessions

    def _recredit(self, state: dict[str, Any], out: list[Output]) -> dict[str, Any]:
        if self.deferred:
            state["dirty"] = True
            return state
        return self.recredit(state, out)

    def recredit(self, state: dict[str, Any], out: list[Output]) -> dict[str, Any]:
        """Credit every remembered conversion whose path differs from the one it was credited over."""
        state.pop("dirty", None)
        conversions = list(state["conversions"])
        for index, conversion in enumerate(conversions):
            credits, path, store_sessions = self._credits(state, index)
            fingerprint = zlib.crc32(orjson.dumps([[t.session_id, t.channel, t.started_at, t.campaign_name,
                                                    t.identified, t.kind] for t in path]))  # fmt: skip
            if fingerprint == conversion["print"]:
                continue
            version = max(conversion["version"] + 1, self.version_floor)
            conversion = conversions[index] = {**conversion, "version": version, "print": fingerprint}
            self._emit(conversion, credits, path, store_sessions, version, out)
            if conversion["returns"]:
                self._adjustments(conversion, conversion["returns"], credits, version, out)
        state["conversions"] = conversions
        return state

    def _emit(
        self,
        conversion: dict[str, Any],
        credits: dict[str, list[Credit]],
        path: list[Touch],
        store_sessions: set[str],
        version: int,
        out: list[Output],
    ) -> None:
        at = conversion["occurred_at"]
        first_touch = min((t.started_at for t in path), default=at)
        conversion_id = conversion_id_for(conversion["event_id"])
        for model, model_credits in credits.items():
            model_version = self.fitted[model].version if model in DATA_DRIVEN else ""
            for c in model_credits:
                out.append((ATTRIBUTION.name, {
                    "conversion_id": conversion_id, "model": model, "session_id": c.session_id,
                    "person_id": conversion["person_id"], "channel": c.channel,
                    "campaign_name": c.campaign_name, "touch_at": c.started_at, "converted_at": at,
                    "position": c.position, "credit": c.credit, "revenue_credit": c.revenue_credit,
                    "model_version": model_version, "version": version,
                }))  # fmt: skip
        out.append((CONVERSIONS.name, {
            "conversion_id": conversion_id, "event_id": conversion["event_id"],
            "person_id": conversion["person_id"], "occurred_at": at, "kind": conversion["kind"],
            "source": conversion["source"], "revenue": conversion["revenue"],
            "currency": conversion["currency"], "order_id": conversion["order_id"],
            "store_id": conversion["store_id"], "staff_id": conversion.get("staff_id", ""),
            "fulfillment": conversion.get("fulfillment", ""),
            "session_id": conversion["session_id"], "path_length": len(path),
            "o2o_label": o2o_label(conversion["source"], conversion["session_id"], path, store_sessions),
            "first_touch_at": first_touch,
            "time_to_convert_seconds": max(0, at - first_touch) / 1000,
            "version": version,
        }))  # fmt: skip

    @staticmethod
    def _adjustments(
        conversion: dict[str, Any],
        returns: Sequence[Sequence[Any]],
        credits: dict[str, list[Credit]],
        version: int,
        out: list[Output],
    ) -> None:
        """Each return's refund split like the conversion's credits, under every model."""
        conversion_id = conversion_id_for(conversion["event_id"])
        for event_id, refund, returned_at in returns:
            for model, model_credits in credits.items():
                for c in model_credits:
                    out.append((ADJUSTMENTS.name, {
                        "adjustment_id": f"{event_id}|{model}|{c.session_id}",
                        "conversion_id": conversion_id, "model": model, "session_id": c.session_id,
                        "person_id": conversion["person_id"], "channel": c.channel,
                        "return_event_id": event_id, "returned_at": returned_at,
                        "revenue_adjustment": -refund * c.credit, "version": version,
                    }))  # fmt: skip
