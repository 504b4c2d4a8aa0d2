"""Data-driven attribution: Markov removal effects and Shapley values (pure maths, no I/O).

The corpus is a list of :class:`PathCount`: a channel sequence, how many journeys with
exactly that sequence converted and how many ended without a conversion (a *null*).
:func:`paths_from_sessions` builds it from per-person session records. A fit turns the
corpus into one weight per channel (non-negative, ``math.fsum`` exactly ``1.0``);
:class:`FittedModel` keeps the weights with their provenance, stores as JSON and splits
one conversion's credit over the touches of its path (:meth:`FittedModel.credit_path`).

Formulations
------------
* **Markov** (:func:`fit_markov`; Anderl et al. 2016, as the ``ChannelAttribution``
  package's ``markov_model``): states ``(start)``, the channel states, ``(conversion)``,
  ``(null)``. A path's states are its windows of ``order`` consecutive channels (the whole
  path when it is shorter than ``order``) with consecutive identical states merged, as
  ``ChannelAttribution`` does (for ``order=1`` merging ``A > A`` into ``A`` changes no
  result: a self-loop does not change where a state's walk ends). Every transition of a path
  is counted ``conversions + nulls`` times, the last state goes ``conversions`` times to
  ``(conversion)`` and ``nulls`` times to ``(null)``; rows are normalised to probabilities.
  The removal effect of channel ``c`` is ``1 - P'(conversion) / P(conversion)`` where
  ``P'`` is the absorption probability from ``(start)`` when every state containing ``c``
  leads to ``(null)``. Absorption probabilities are solved exactly (Gaussian elimination);
  ``ChannelAttribution`` estimates the same quantity by simulation. Weights are the removal
  effects normalised to sum to 1.
* **Shapley** (:func:`fit_shapley`; the "simplified Shapley value" of Zhao et al. 2018):
  players are the channels seen in the corpus; the value of a coalition ``S`` is the number
  of conversions of paths whose set of channels is a subset of ``S``. That game is a sum of
  unanimity games, so each channel's Shapley value is exactly
  ``sum(conversions(p) / len(set(p)) for converting paths p containing the channel)``; it is
  computed that way (no subset enumeration, no limit on the number of channels). Nulls do not
  enter this formulation. Weights are the Shapley values normalised to sum to 1.

A corpus without any conversion cannot be fitted: both fits raise ``ValueError`` (the caller
keeps its previous fit). Rows with ``conversions + nulls == 0`` are ignored; channels seen
only on null paths get weight ``0.0``.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import orjson

from pipeline.attribution.models import _fix_sum

__all__ = [
    "MODEL_KINDS",
    "FittedModel",
    "ModelKind",
    "PathCount",
    "SessionRecord",
    "fit_markov",
    "fit_model",
    "fit_shapley",
    "paths_from_sessions",
    "removal_effects",
]

ModelKind = Literal["markov", "shapley"]
MODEL_KINDS: tuple[ModelKind, ...] = ("markov", "shapley")

SessionRecord = tuple[str, int, str, bool]
"""``(person_id, started_at_ms, channel, converted)``: one session of a person."""

_CONVERSION = -1  # absorbing states, as column keys of the transition counts
_NULL = -2


def _check_count(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")


@dataclass(frozen=True, slots=True)
class PathCount:
    """One distinct channel sequence of the corpus and how often it ended each way.

    ``conversions`` and ``nulls`` are journey counts (floats so weighted corpora work).
    ``channels`` must be a non-empty tuple of channel names, in touch order.
    """

    channels: tuple[str, ...]
    conversions: float
    nulls: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.channels, tuple) or not self.channels:
            raise ValueError(f"channels must be a non-empty tuple, got {self.channels!r}")
        if not all(isinstance(c, str) for c in self.channels):
            raise TypeError(f"channel names must be strings, got {self.channels!r}")
        _check_count("conversions", self.conversions)
        _check_count("nulls", self.nulls)


def _normalise(raw: Mapping[str, float]) -> dict[str, float]:
    """``raw`` divided by its sum, keys sorted, with ``math.fsum`` of the values exactly 1.0."""
    names = sorted(raw)
    total = math.fsum(raw.values())
    if total <= 0:  # counts so small that every share underflows: no channel is told apart
        raw, total = dict.fromkeys(names, 1.0), float(len(names))
    weights = _fix_sum([raw[name] / total for name in names], 1.0)
    return dict(zip(names, weights, strict=True))


def _markov_states(channels: tuple[str, ...], order: int) -> list[tuple[str, ...]]:
    """The states a path walks through (``ChannelAttribution``'s encoding, see module doc)."""
    if len(channels) <= order:
        windows = [channels]
    else:
        windows = [channels[i : i + order] for i in range(len(channels) - order + 1)]
    states: list[tuple[str, ...]] = []
    for window in windows:
        if not states or states[-1] != window:
            states.append(window)
    return states


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Solve ``a x = b`` by Gaussian elimination with partial pivoting (``a``, ``b`` are consumed)."""
    n = len(b)
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        if a[pivot][col] == 0.0:
            raise ArithmeticError("singular system: a state never reaches (conversion) or (null)")
        a[col], a[pivot] = a[pivot], a[col]
        b[col], b[pivot] = b[pivot], b[col]
        top = a[col]
        nonzero = [k for k in range(col, n) if top[k] != 0.0]  # chains are sparse: skip the zeros
        for r in range(col + 1, n):
            row = a[r]
            factor = row[col] / top[col]
            if factor != 0.0:
                for k in nonzero:
                    row[k] -= factor * top[k]
                b[r] -= factor * b[col]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        row = a[r]
        x[r] = (b[r] - math.fsum(row[k] * x[k] for k in range(r + 1, n))) / row[r]
    return x


def _conversion_probability(probabilities: Sequence[Mapping[int, float]], removed: frozenset[int]) -> float:
    """Probability of reaching ``(conversion)`` from state 0 (``(start)``).

    ``probabilities[i]`` maps a destination (a state index, ``_CONVERSION`` or ``_NULL``) to
    its transition probability. States in ``removed`` lead to ``(null)``.
    """
    kept = [i for i in range(len(probabilities)) if i not in removed]
    where = {state: row for row, state in enumerate(kept)}
    n = len(kept)
    a = [[0.0] * n for _ in range(n)]
    b = [0.0] * n
    for row, state in enumerate(kept):
        a[row][row] = 1.0
        for target, p in probabilities[state].items():
            if target == _CONVERSION:
                b[row] += p
            elif target in where:
                a[row][where[target]] -= p
    return min(1.0, max(0.0, _solve(a, b)[0]))


def removal_effects(paths: Iterable[PathCount], order: int = 1) -> dict[str, float]:
    """Markov removal effect of every channel, ``1 - P'(conversion) / P(conversion)``.

    See the module doc for the chain. ``order`` is the number of most recent channels that
    make up a state (``1``: the current channel). Equals the share of converting journeys
    of the chain that visit the channel, so it lies in [0, 1] (and the effects sum to at
    least 1). Returns ``{channel: effect}`` sorted by channel. Raises ``ValueError`` when
    ``order < 1`` or the corpus has no conversion. Cost: one dense solve per channel over
    the observed states, cubic in their number: milliseconds at order 1, about 2 s for 15
    channels at order 2 (240 states), about a minute for 1,100 states (10 channels, order 3).
    """
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be an integer >= 1, got {order!r}")
    index: dict[tuple[str, ...], int] = {}
    counts: defaultdict[int, defaultdict[int, float]] = defaultdict(lambda: defaultdict(float))
    converted = 0.0
    for path in paths:
        journeys = path.conversions + path.nulls
        if journeys <= 0:
            continue
        previous = 0  # (start)
        for state in _markov_states(path.channels, order):
            current = index.setdefault(state, len(index) + 1)
            counts[previous][current] += journeys
            previous = current
        if path.conversions > 0:
            counts[previous][_CONVERSION] += path.conversions
        if path.nulls > 0:
            counts[previous][_NULL] += path.nulls
        converted += path.conversions
    if converted <= 0:
        raise ValueError("cannot fit a Markov model: the corpus has no conversion")
    probabilities: list[dict[int, float]] = []
    for source in range(len(index) + 1):
        row = counts[source]
        total = math.fsum(row.values())
        probabilities.append({target: count / total for target, count in row.items()})
    base = _conversion_probability(probabilities, frozenset())
    channels = sorted({channel for state in index for channel in state})
    if base <= 0:  # conversions too few to measure (it underflows): no channel is told apart
        return dict.fromkeys(channels, 1.0)
    effects = {}
    for channel in channels:
        removed = frozenset(i for state, i in index.items() if channel in state)
        without = _conversion_probability(probabilities, removed)
        effects[channel] = min(1.0, max(0.0, 1.0 - without / base))
    return effects


def fit_markov(paths: Iterable[PathCount], order: int = 1) -> dict[str, float]:
    """Markov-chain weights: the :func:`removal_effects` normalised to sum to 1.

    Returns ``{channel: weight}`` sorted by channel, weights >= 0 with ``math.fsum``
    exactly 1.0. Raises ``ValueError`` when ``order < 1`` or the corpus has no conversion.
    """
    return _normalise(removal_effects(paths, order))


def fit_shapley(paths: Iterable[PathCount]) -> dict[str, float]:
    """Simplified Shapley-value weights of the channels (see the module doc for the game).

    ``v(S)`` = conversions of the paths whose channel set is a subset of ``S``; each
    channel's exact Shapley value is the sum over converting paths containing it of
    ``conversions / number of distinct channels of the path``. Returns ``{channel: weight}``
    sorted by channel, weights >= 0 with ``math.fsum`` exactly 1.0. Raises ``ValueError``
    when the corpus has no conversion.
    """
    shares: defaultdict[str, list[float]] = defaultdict(list)
    converted = 0.0
    for path in paths:
        if path.conversions + path.nulls <= 0:
            continue
        members = set(path.channels)
        for channel in members:
            shares[channel].append(path.conversions / len(members))
        converted += path.conversions
    if converted <= 0:
        raise ValueError("cannot fit a Shapley model: the corpus has no conversion")
    return _normalise({channel: math.fsum(values) for channel, values in shares.items()})


@dataclass(frozen=True)
class FittedModel:
    """A data-driven fit: channel weights plus what produced them.

    ``fitted_at`` is UTC epoch milliseconds; ``paths_used`` is the number of journeys of the
    corpus (conversions plus nulls) and ``conversions_used`` its conversions; ``order`` is the
    Markov order (1 for Shapley). ``weights`` are non-negative and sum to 1.
    """

    kind: ModelKind
    version: str
    weights: Mapping[str, float]
    fitted_at: int
    paths_used: float
    conversions_used: float
    order: int = 1

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"kind must be one of {', '.join(MODEL_KINDS)}, got {self.kind!r}")
        if not isinstance(self.version, str):
            raise TypeError(f"version must be a string, got {self.version!r}")
        if isinstance(self.fitted_at, bool) or not isinstance(self.fitted_at, int):
            raise TypeError(f"fitted_at must be integer epoch milliseconds, got {self.fitted_at!r}")
        if isinstance(self.order, bool) or not isinstance(self.order, int) or self.order < 1:
            raise ValueError(f"order must be an integer >= 1, got {self.order!r}")
        _check_count("paths_used", self.paths_used)
        _check_count("conversions_used", self.conversions_used)
        if not self.weights:
            raise ValueError("weights must not be empty")
        for channel, weight in self.weights.items():
            if not isinstance(channel, str):
                raise TypeError(f"channel names must be strings, got {channel!r}")
            _check_count(f"weight of {channel!r}", weight)
        if abs(math.fsum(self.weights.values()) - 1.0) > 1e-9:
            raise ValueError(f"weights must sum to 1, got {math.fsum(self.weights.values())}")

    def credit_path(self, touch_channels: Sequence[str]) -> list[float]:
        """Split one conversion's credit over its touches (given by their channels, in order).

        A touch's raw weight is its channel's weight divided by how many touches of the path
        have that channel (a channel's total on the path is its weight, shared evenly by its
        touches). A channel absent from the fit counts with the smallest positive fitted
        weight (as the least valuable known channel). The raw weights are normalised; when
        they are all zero (every channel fitted at 0) the touches share equally. The result
        is non-negative and ``math.fsum`` of it is exactly 1.0; ``[]`` for no touches.
        """
        n = len(touch_channels)
        if n == 0:
            return []
        fallback = min((w for w in self.weights.values() if w > 0), default=1.0)
        per_channel = Counter(touch_channels)
        raw = [self.weights.get(c, fallback) / per_channel[c] for c in touch_channels]
        total = math.fsum(raw)
        if total <= 0:
            return _fix_sum([1.0 / n] * n, 1.0)
        return _fix_sum([w / total for w in raw], 1.0)

    def to_json(self) -> str:
        """The fit as a JSON object (a text column's value); :meth:`from_json` reads it back."""
        doc = {
            "kind": self.kind,
            "version": self.version,
            "weights": dict(self.weights),
            "fitted_at": self.fitted_at,
            "paths_used": self.paths_used,
            "conversions_used": self.conversions_used,
            "order": self.order,
        }
        return orjson.dumps(doc).decode()

    @classmethod
    def from_json(cls, data: str | bytes) -> FittedModel:
        """Read a fit written by :meth:`to_json`; ``ValueError``/``TypeError`` when invalid."""
        doc = orjson.loads(data)
        if not isinstance(doc, dict):
            raise ValueError("a fitted model must be a JSON object")
        fields = ("kind", "version", "weights", "fitted_at", "paths_used", "conversions_used")
        missing = [name for name in fields if name not in doc]
        if missing:
            raise ValueError(f"fitted model JSON misses {', '.join(missing)}")
        weights: Any = doc["weights"]
        if not isinstance(weights, dict):
            raise ValueError("weights must be a JSON object")
        return cls(
            kind=cast(ModelKind, doc["kind"]),
            version=doc["version"],
            weights={c: float(w) if isinstance(w, int) else w for c, w in weights.items()},
            fitted_at=doc["fitted_at"],
            paths_used=doc["paths_used"],
            conversions_used=doc["conversions_used"],
            order=doc.get("order", 1),
        )


def fit_model(
    kind: ModelKind, paths: Iterable[PathCount], version: str, fitted_at: int, order: int = 1
) -> FittedModel:
    """Fit ``kind`` (``"markov"`` of the given ``order``, or ``"shapley"``) on ``paths``."""
    corpus = list(paths)
    if kind == "markov":
        weights = fit_markov(corpus, order)
    elif kind == "shapley":
        weights, order = fit_shapley(corpus), 1
    else:
        raise ValueError(f"kind must be one of {', '.join(MODEL_KINDS)}, got {kind!r}")
    return FittedModel(
        kind=kind,
        version=version,
        weights=weights,
        fitted_at=fitted_at,
        paths_used=math.fsum(p.conversions + p.nulls for p in corpus),
        conversions_used=math.fsum(p.conversions for p in corpus),
        order=order,
    )


def paths_from_sessions(rows: Iterable[SessionRecord]) -> list[PathCount]:
    """Build the path corpus from ``(person_id, started_at_ms, channel, converted)`` records.

    Records are grouped by person (they need not arrive grouped) and ordered by
    ``started_at_ms`` (ties keep their input order). A person's touches accumulate into a
    path; a record with ``converted=True`` closes the path, itself included, as one
    conversion (several conversions in one session count once per record), and the next
    touch starts a new path. The touches after a person's last conversion form one null path.
    No lookback window is applied: filter ``rows`` first if one is wanted. Identical
    sequences are merged; the result is sorted by channel sequence.
    """
    people: defaultdict[str, list[tuple[int, int, str, bool]]] = defaultdict(list)
    for seq, (person, started_at, channel, converted) in enumerate(rows):
        people[person].append((started_at, seq, channel, bool(converted)))
    tally: defaultdict[tuple[str, ...], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for records in people.values():
        records.sort()
        current: list[str] = []
        for _, _, channel, converted in records:
            current.append(channel)
            if converted:
                tally[tuple(current)][0] += 1.0
                current = []
        if current:
            tally[tuple(current)][1] += 1.0
    return [PathCount(channels, conv, nulls) for channels, (conv, nulls) in sorted(tally.items())]
