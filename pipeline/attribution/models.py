"""Rule-based multi-touch attribution: pure maths, no I/O.

A conversion's *path* is the person's touches (sessions) chosen by :func:`select_path`.
Each model turns a path into one weight per touch; the weights are non-negative and
``math.fsum`` of them is exactly ``1.0``. :func:`attribute` runs the requested models and
turns weights into :class:`Credit` rows whose revenue credits sum to the conversion's
revenue.

Models (design brief, "Default rules" -> Attribution):

* ``first_touch`` / ``last_touch``: all credit to the first / last touch.
* ``last_non_direct``: all credit to the last touch whose channel is not ``direct``;
  when every touch is direct, to the last touch.
* ``linear``: equal credit to every touch.
* ``time_decay``: weight ``2 ** (-age / half_life)`` with ``age = converted_at - started_at``,
  normalised.
* ``u_shaped``: 40 % first, 40 % last, 20 % spread evenly over the touches in between;
  one touch gets 100 %, two touches 50/50.
* ``w_shaped``: 30 % first, 30 % key touch, 30 % last, 10 % spread evenly over the rest;
  up to three touches split evenly. The key touch is the first touch with
  ``identified=True`` that is neither the first nor the last touch; when there is none it
  is the middle touch at index ``(n - 1) // 2`` (the exact middle for an odd count, the
  earlier of the two central touches for an even count).

Everything here is plain Python on short lists so it can run per conversion inside a
streaming stage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple, Protocol

from pipeline.attribution.custom import CustomRules


class FittedWeights(Protocol):
    """A fitted data-driven model: splits one conversion over its path's channels."""

    def credit_path(self, touch_channels: Sequence[str]) -> list[float]:
        """Weights of the touches, in path order, summing to 1."""


__all__ = [
    "DAY_MS",
    "DEFAULT_HALF_LIFE_MS",
    "DIRECT_CHANNEL",
    "MODEL_FUNCTIONS",
    "Credit",
    "ModelFunction",
    "Touch",
    "attribute",
    "first_touch",
    "last_non_direct",
    "last_touch",
    "linear",
    "select_path",
    "time_decay",
    "u_shaped",
    "w_key_index",
    "w_shaped",
]

DAY_MS = 86_400_000
DEFAULT_HALF_LIFE_MS = 7 * DAY_MS
DIRECT_CHANNEL = "direct"


# Touches and credits are NamedTuples, immutable like a frozen dataclass and about three
# times faster to build: attribution builds one per touch, model and remembered conversion.
class Touch(NamedTuple):
    """One touchpoint (a session) on a person's path to a conversion.

    ``started_at`` is UTC epoch milliseconds. ``identified`` is True when the person was
    already identified by a strong id at or before this touch (used by ``w_shaped``).
    """

    session_id: str
    channel: str
    started_at: int
    campaign_name: str = ""
    identified: bool = False
    kind: str = "digital"  # or store_visit (the custom model may weight them)


class Credit(NamedTuple):
    """The share of one conversion that one model gives to one touch of the path.

    ``position`` is the 0-based index of the touch in the (sorted) path; ``credit`` is the
    weight in [0, 1] and ``revenue_credit`` the matching share of the revenue.
    """

    session_id: str
    channel: str
    position: int
    credit: float
    revenue_credit: float
    campaign_name: str
    started_at: int


ModelFunction = Callable[[Sequence[Touch], int], list[float]]
"""Signature shared by every model: ``(path, converted_at) -> weights``."""


def _touch_order(touch: Touch) -> tuple[int, str, str, str, bool]:
    return (touch.started_at, touch.session_id, touch.channel, touch.campaign_name, touch.identified)


def select_path(
    touches: Sequence[Touch], converted_at: int, lookback_ms: int, after: int | None
) -> list[Touch]:
    """Pick and order the touches that make up a conversion's path.

    A touch belongs to the path when ``converted_at - lookback_ms < started_at <= converted_at``
    (a touch exactly ``lookback_ms`` before the conversion is outside the window; one at the
    conversion instant is inside) and, when ``after`` (the person's previous conversion time)
    is given, ``started_at > after`` (a touch at the previous conversion instant belongs to
    that conversion). The result is sorted by ``(started_at, session_id)`` (remaining fields
    break any further tie) so the same touches in any order give the same path.
    """
    low = converted_at - lookback_ms
    if after is not None and after > low:
        low = after
    chosen = [t for t in touches if low < t.started_at <= converted_at]
    chosen.sort(key=_touch_order)
    return chosen


def _fix_sum(values: list[float], target: float) -> list[float]:
    """Adjust ``values`` in place so that ``math.fsum(values) == target``; returns ``values``.

    The floating-point residue (computed exactly) goes to the value with the largest
    magnitude (the first one on ties), where it changes the relative value least. In the
    rare case where that value's rounding cannot absorb it (a tie at half an ulp of
    ``target``), the next largest values take the rest.
    """
    if not values or math.fsum(values) == target:
        return values
    # zero shares stay zero (a zero weight must not turn slightly negative)
    order = sorted((i for i in range(len(values)) if values[i] != 0.0), key=lambda i: -abs(values[i]))
    if not order:  # every share underflowed to zero (a target of a few ulps): the first takes it
        order = list(range(len(values)))
    for attempt in range(2 * len(order)):
        values[order[attempt // 2]] += math.fsum([target, *(-v for v in values)])
        if math.fsum(values) == target:
            break
    return values


def _one_hot(n: int, index: int) -> list[float]:
    weights = [0.0] * n
    weights[index] = 1.0
    return weights


def first_touch(path: Sequence[Touch], converted_at: int) -> list[float]:
    """First-touch model: all credit to the first touch of the path."""
    n = len(path)
    return _one_hot(n, 0) if n else []


def last_touch(path: Sequence[Touch], converted_at: int) -> list[float]:
    """Last-touch model: all credit to the last touch of the path."""
    n = len(path)
    return _one_hot(n, n - 1) if n else []


def last_non_direct(path: Sequence[Touch], converted_at: int) -> list[float]:
    """Last non-direct model: all credit to the last touch whose channel is not ``direct``.

    When every touch is direct the last touch gets the credit.
    """
    n = len(path)
    if not n:
        return []
    for index in range(n - 1, -1, -1):
        if path[index].channel != DIRECT_CHANNEL:
            return _one_hot(n, index)
    return _one_hot(n, n - 1)


def linear(path: Sequence[Touch], converted_at: int) -> list[float]:
    """Linear model: every touch gets the same share."""
    n = len(path)
    if not n:
        return []
    return _fix_sum([1.0 / n] * n, 1.0)


def time_decay(
    path: Sequence[Touch], converted_at: int, half_life_ms: int = DEFAULT_HALF_LIFE_MS
) -> list[float]:
    """Time-decay model: weight ``2 ** (-age / half_life_ms)``, normalised to sum to 1.

    ``age = converted_at - started_at``. Ages are taken relative to the youngest touch before
    exponentiating (this cancels in the normalisation), so long windows never underflow.
    """
    if half_life_ms <= 0:
        raise ValueError(f"half_life_ms must be positive, got {half_life_ms}")
    n = len(path)
    if not n:
        return []
    if n == 1:
        return [1.0]
    youngest = max(t.started_at for t in path)
    raw = [2.0 ** ((t.started_at - youngest) / half_life_ms) for t in path]
    total = math.fsum(raw)
    return _fix_sum([w / total for w in raw], 1.0)


def u_shaped(path: Sequence[Touch], converted_at: int) -> list[float]:
    """U-shaped (position-based) model: 40 % first, 40 % last, 20 % over the middle.

    One touch gets 1.0; two touches get 0.5 each.
    """
    n = len(path)
    if n == 0:
        return []
    if n == 1:
        return [1.0]
    if n == 2:
        return [0.5, 0.5]
    middle = 0.2 / (n - 2)
    weights = [middle] * n
    weights[0] = 0.4
    weights[-1] = 0.4
    return _fix_sum(weights, 1.0)


def w_key_index(path: Sequence[Touch]) -> int:
    """Index of the ``w_shaped`` key touch for a path of four or more touches.

    The first touch with ``identified=True`` that is neither first nor last; else the
    middle touch ``(n - 1) // 2`` (for even ``n`` the earlier of the two central touches).
    """
    n = len(path)
    for index in range(1, n - 1):
        if path[index].identified:
            return index
    return (n - 1) // 2


def w_shaped(path: Sequence[Touch], converted_at: int) -> list[float]:
    """W-shaped model: 30 % first, 30 % key touch, 30 % last, 10 % over the rest.

    With up to three touches the credit is split evenly (1.0; 0.5/0.5; 1/3 each). With four
    or more, the touches that are not first, key or last share the 10 % evenly. See
    :func:`w_key_index` for the key touch.
    """
    n = len(path)
    if n == 0:
        return []
    if n <= 3:
        return _fix_sum([1.0 / n] * n, 1.0)
    key = w_key_index(path)
    weights = [0.1 / (n - 3)] * n
    weights[0] = 0.3
    weights[key] = 0.3
    weights[-1] = 0.3
    return _fix_sum(weights, 1.0)


MODEL_FUNCTIONS: Mapping[str, ModelFunction] = MappingProxyType(
    {
        "first_touch": first_touch,
        "last_touch": last_touch,
        "last_non_direct": last_non_direct,
        "linear": linear,
        "time_decay": time_decay,
        "u_shaped": u_shaped,
        "w_shaped": w_shaped,
    }
)
"""Model name -> weight function. ``time_decay`` uses its default half life here;
:func:`attribute` passes the configured one."""


def attribute(
    path: Sequence[Touch],
    converted_at: int,
    revenue: float,
    models: Sequence[str],
    half_life_ms: int,
    custom: CustomRules | None = None,
    fitted: Mapping[str, FittedWeights] | None = None,
) -> dict[str, list[Credit]]:
    """Credits of one conversion for each requested model.

    ``path`` should come from :func:`select_path` (sorted). For every model ``math.fsum`` of
    the credits is exactly 1.0 and of the revenue credits exactly ``revenue`` (the float
    residue goes on the largest share). An empty path gives every model ``[]``: the caller
    records the conversion as unattributed. Raises ``ValueError`` for an unknown model name
    (before computing anything). ``fitted`` maps the data-driven models (``markov``,
    ``shapley``) to their latest fit.
    """
    fitted = fitted or {}
    unknown = [
        m for m in models if m not in MODEL_FUNCTIONS and not (m == "custom" and custom) and m not in fitted
    ]
    if unknown:
        raise ValueError(f"unknown attribution models {unknown}; known: {', '.join(MODEL_FUNCTIONS)}")
    if not path:
        return {name: [] for name in models}
    result: dict[str, list[Credit]] = {}
    for name in models:
        if name in result:
            continue
        if name == "time_decay":
            weights = time_decay(path, converted_at, half_life_ms)
        elif name == "custom" and custom is not None:
            weights = custom.weights([t.channel for t in path], [t.kind for t in path])
        elif name in fitted:
            weights = fitted[name].credit_path([t.channel for t in path])
        else:
            weights = MODEL_FUNCTIONS[name](path, converted_at)
        _fix_sum(weights, 1.0)
        money = _fix_sum([w * revenue for w in weights], revenue)
        result[name] = [
            # positional: same order as the Credit fields (faster than keywords)
            Credit(t.session_id, t.channel, i, weights[i], money[i], t.campaign_name, t.started_at)
            for i, t in enumerate(path)
        ]
    return result
