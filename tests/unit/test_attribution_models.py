"""Unit tests for the rule-based attribution models (pure maths)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.attribution.models import (
    DAY_MS,
    MODEL_FUNCTIONS,
    Touch,
    attribute,
    first_touch,
    last_non_direct,
    last_touch,
    linear,
    select_path,
    time_decay,
    u_shaped,
    w_key_index,
    w_shaped,
)
from pipeline.config import ATTRIBUTION_MODELS as ALL_MODELS
from pipeline.config import DEFAULT_MODELS

ATTRIBUTION_MODELS = tuple(m for m in DEFAULT_MODELS if m in MODEL_FUNCTIONS)  # need no rules file nor fit

HOUR_MS = 3_600_000
CONV = 100 * DAY_MS
HALF_LIFE = 7 * DAY_MS
LOOKBACK = 30 * DAY_MS


def make_path(n: int, channels: list[str] | None = None, identified: set[int] | None = None) -> list[Touch]:
    chans = channels or ["paid_search", "email", "display", "organic_search", "store"]
    ident = identified or set()
    return [
        Touch(
            session_id=f"s{i}",
            channel=chans[i % len(chans)],
            started_at=CONV - (n - i) * HOUR_MS,
            campaign_name=f"c{i}",
            identified=i in ident,
        )
        for i in range(n)
    ]


def approx_list(values: list[float]) -> list[object]:
    return [pytest.approx(v, abs=1e-12) for v in values]


# --------------------------------------------------------------------------- registry


def test_model_names_match_config() -> None:
    # markov and shapley come from a fit, custom from a rules file
    assert (*MODEL_FUNCTIONS, "markov", "shapley", "custom") == ALL_MODELS


@pytest.mark.parametrize("name", [m for m in DEFAULT_MODELS if m in MODEL_FUNCTIONS])
def test_empty_path_gives_empty_weights(name: str) -> None:
    assert MODEL_FUNCTIONS[name]([], CONV) == []


def test_attribute_empty_path_gives_empty_credits() -> None:
    assert attribute([], CONV, 10.0, ATTRIBUTION_MODELS, HALF_LIFE) == {m: [] for m in ATTRIBUTION_MODELS}


def test_attribute_unknown_model_lists_known() -> None:
    with pytest.raises(ValueError, match="markov") as info:
        attribute(make_path(2), CONV, 1.0, ["linear", "markov"], HALF_LIFE)
    for name in ATTRIBUTION_MODELS:
        assert name in str(info.value)


def test_attribute_unknown_model_raises_even_for_empty_path() -> None:
    with pytest.raises(ValueError):
        attribute([], CONV, 1.0, ["nope"], HALF_LIFE)


# --------------------------------------------------------------------------- single-touch models


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_first_and_last_touch(n: int) -> None:
    path = make_path(n)
    assert first_touch(path, CONV) == [1.0] + [0.0] * (n - 1)
    assert last_touch(path, CONV) == [0.0] * (n - 1) + [1.0]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_last_non_direct_skips_trailing_direct(n: int) -> None:
    channels = ["email"] + ["direct"] * (n - 1)
    path = make_path(n, channels)
    assert last_non_direct(path, CONV) == [1.0] + [0.0] * (n - 1)


def test_last_non_direct_picks_last_non_direct_in_middle() -> None:
    path = make_path(5, ["email", "paid_search", "display", "direct", "direct"])
    assert last_non_direct(path, CONV) == [0.0, 0.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_last_non_direct_all_direct_falls_back_to_last(n: int) -> None:
    path = make_path(n, ["direct"])
    assert last_non_direct(path, CONV) == last_touch(path, CONV)


def test_last_non_direct_last_is_non_direct() -> None:
    path = make_path(3, ["direct", "direct", "sms"])
    assert last_non_direct(path, CONV) == [0.0, 0.0, 1.0]


# --------------------------------------------------------------------------- linear


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 10])
def test_linear(n: int) -> None:
    weights = linear(make_path(n), CONV)
    assert weights == approx_list([1.0 / n] * n)
    assert math.fsum(weights) == 1.0


# --------------------------------------------------------------------------- time decay


def test_time_decay_known_numbers() -> None:
    path = [Touch("a", "email", CONV - 7 * DAY_MS), Touch("b", "direct", CONV)]
    assert time_decay(path, CONV, HALF_LIFE) == approx_list([1 / 3, 2 / 3])


def test_time_decay_three_halvings() -> None:
    path = [
        Touch("a", "email", CONV - 14 * DAY_MS),
        Touch("b", "email", CONV - 7 * DAY_MS),
        Touch("c", "email", CONV),
    ]
    assert time_decay(path, CONV, HALF_LIFE) == approx_list([1 / 7, 2 / 7, 4 / 7])


def test_time_decay_single_and_equal_ages() -> None:
    assert time_decay([Touch("a", "email", CONV - DAY_MS)], CONV, HALF_LIFE) == [1.0]
    same = [Touch(f"s{i}", "email", CONV - DAY_MS) for i in range(4)]
    assert time_decay(same, CONV, HALF_LIFE) == approx_list([0.25] * 4)


def test_time_decay_default_half_life_is_seven_days() -> None:
    path = [Touch("a", "email", CONV - 7 * DAY_MS), Touch("b", "direct", CONV)]
    assert time_decay(path, CONV) == time_decay(path, CONV, HALF_LIFE)


def test_time_decay_no_underflow_for_old_touches() -> None:
    path = [Touch("a", "email", 0), Touch("b", "email", HOUR_MS)]
    weights = time_decay(path, 10_000 * 365 * DAY_MS, HOUR_MS)
    assert weights == approx_list([1 / 3, 2 / 3])


def test_time_decay_rejects_bad_half_life() -> None:
    with pytest.raises(ValueError):
        time_decay(make_path(2), CONV, 0)


def test_attribute_passes_half_life() -> None:
    path = [Touch("a", "email", CONV - DAY_MS), Touch("b", "direct", CONV)]
    credits = attribute(path, CONV, 3.0, ["time_decay"], DAY_MS)["time_decay"]
    assert [c.credit for c in credits] == approx_list([1 / 3, 2 / 3])
    assert [c.revenue_credit for c in credits] == approx_list([1.0, 2.0])


# --------------------------------------------------------------------------- u shaped


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, [1.0]),
        (2, [0.5, 0.5]),
        (3, [0.4, 0.2, 0.4]),
        (4, [0.4, 0.1, 0.1, 0.4]),
        (5, [0.4, 0.2 / 3, 0.2 / 3, 0.2 / 3, 0.4]),
    ],
)
def test_u_shaped(n: int, expected: list[float]) -> None:
    weights = u_shaped(make_path(n), CONV)
    assert weights == approx_list(expected)
    assert math.fsum(weights) == 1.0


# --------------------------------------------------------------------------- w shaped


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, [1.0]),
        (2, [0.5, 0.5]),
        (3, [1 / 3, 1 / 3, 1 / 3]),
        # no identified touch: key = (n - 1) // 2
        (4, [0.3, 0.3, 0.1, 0.3]),
        (5, [0.3, 0.05, 0.3, 0.05, 0.3]),
        (6, [0.3, 0.1 / 3, 0.3, 0.1 / 3, 0.1 / 3, 0.3]),
    ],
)
def test_w_shaped_without_identified(n: int, expected: list[float]) -> None:
    weights = w_shaped(make_path(n), CONV)
    assert weights == approx_list(expected)
    assert math.fsum(weights) == 1.0


def test_w_shaped_identified_key_touch() -> None:
    path = make_path(5, identified={3, 4})
    assert w_key_index(path) == 3
    assert w_shaped(path, CONV) == approx_list([0.3, 0.05, 0.05, 0.3, 0.3])


def test_w_shaped_identified_from_first_touch_uses_first_middle() -> None:
    # identified before the path started: every touch is identified, the first that is
    # neither first nor last is index 1
    path = make_path(5, identified={0, 1, 2, 3, 4})
    assert w_key_index(path) == 1
    assert w_shaped(path, CONV) == approx_list([0.3, 0.3, 0.05, 0.05, 0.3])


def test_w_shaped_identified_only_at_last_falls_back_to_middle() -> None:
    path = make_path(4, identified={3})
    assert w_key_index(path) == 1
    assert w_shaped(path, CONV) == approx_list([0.3, 0.3, 0.1, 0.3])


def test_w_shaped_identified_key_with_four_touches() -> None:
    path = make_path(4, identified={2, 3})
    assert w_shaped(path, CONV) == approx_list([0.3, 0.1, 0.3, 0.3])


def test_w_shaped_three_touches_ignores_identified() -> None:
    path = make_path(3, identified={1})
    assert w_shaped(path, CONV) == approx_list([1 / 3] * 3)


# --------------------------------------------------------------------------- select_path


def test_select_path_window_edges() -> None:
    touches = [
        Touch("edge", "email", CONV - LOOKBACK),  # exactly at the lookback edge: excluded
        Touch("inside", "email", CONV - LOOKBACK + 1),
        Touch("at_conv", "email", CONV),  # at the conversion instant: included
        Touch("future", "email", CONV + 1),
    ]
    path = select_path(touches, CONV, LOOKBACK, None)
    assert [t.session_id for t in path] == ["inside", "at_conv"]


def test_select_path_excludes_previous_conversion() -> None:
    prev = CONV - 5 * DAY_MS
    touches = [
        Touch("before_prev", "email", prev - 1),
        Touch("at_prev", "email", prev),  # belongs to the previous conversion
        Touch("after_prev", "email", prev + 1),
        Touch("late", "direct", CONV - 1),
    ]
    path = select_path(touches, CONV, LOOKBACK, prev)
    assert [t.session_id for t in path] == ["after_prev", "late"]


def test_select_path_old_previous_conversion_does_not_widen_window() -> None:
    touches = [Touch("old", "email", CONV - LOOKBACK - DAY_MS), Touch("new", "email", CONV - DAY_MS)]
    path = select_path(touches, CONV, LOOKBACK, CONV - 60 * DAY_MS)
    assert [t.session_id for t in path] == ["new"]


def test_select_path_sorts_and_breaks_ties_by_session_id() -> None:
    t = CONV - DAY_MS
    touches = [
        Touch("c", "direct", t),
        Touch("a", "email", t),
        Touch("z", "sms", t - 1),
        Touch("b", "display", t),
    ]
    path = select_path(touches, CONV, LOOKBACK, None)
    assert [x.session_id for x in path] == ["z", "a", "b", "c"]
    reversed_path = select_path(list(reversed(touches)), CONV, LOOKBACK, None)
    assert reversed_path == path
    # equal timestamps: order (and so credit) is decided by session_id
    assert first_touch(path, CONV)[0] == 1.0
    assert path[-1].session_id == "c"
    assert last_non_direct(path, CONV) == [0.0, 0.0, 1.0, 0.0]


def test_select_path_empty() -> None:
    assert select_path([], CONV, LOOKBACK, None) == []


# --------------------------------------------------------------------------- attribute


def test_attribute_credit_fields() -> None:
    path = make_path(3)
    result = attribute(path, CONV, 90.0, ["u_shaped", "first_touch"], HALF_LIFE)
    assert list(result) == ["u_shaped", "first_touch"]
    credits = result["u_shaped"]
    assert [c.position for c in credits] == [0, 1, 2]
    assert [c.session_id for c in credits] == ["s0", "s1", "s2"]
    assert [c.channel for c in credits] == [t.channel for t in path]
    assert [c.campaign_name for c in credits] == ["c0", "c1", "c2"]
    assert [c.started_at for c in credits] == [t.started_at for t in path]
    assert [c.revenue_credit for c in credits] == approx_list([36.0, 18.0, 36.0])
    assert math.fsum(c.revenue_credit for c in credits) == 90.0
    assert [c.revenue_credit for c in result["first_touch"]] == [90.0, 0.0, 0.0]


def test_attribute_exact_sums_for_awkward_numbers() -> None:
    path = make_path(7)
    revenue = 0.1 + 0.2  # not representable nicely
    for name, credits in attribute(path, CONV, revenue, ATTRIBUTION_MODELS, HALF_LIFE).items():
        assert math.fsum(c.credit for c in credits) == 1.0, name
        assert math.fsum(c.revenue_credit for c in credits) == revenue, name


@pytest.mark.parametrize(
    "revenue", [322.001766387326, 809477.7956419705, 20818.108509287336, 1e-9, 7e12, 5e-324]
)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 11])
def test_attribute_revenue_sums_exactly(revenue: float, n: int) -> None:
    # revenues that once left a half-ulp residue with a plain "add it to the largest" fix
    path = make_path(n, identified={n // 3})
    for name, credits in attribute(path, CONV, revenue, ATTRIBUTION_MODELS, HALF_LIFE).items():
        assert math.fsum(c.credit for c in credits) == 1.0, name
        assert math.fsum(c.revenue_credit for c in credits) == revenue, name
        assert all(c.revenue_credit >= 0.0 for c in credits), name


def test_attribute_zero_revenue() -> None:
    credits = attribute(make_path(4), CONV, 0.0, ["linear"], HALF_LIFE)["linear"]
    assert [c.revenue_credit for c in credits] == [0.0] * 4
    assert math.fsum(c.credit for c in credits) == 1.0


# --------------------------------------------------------------------------- properties

CHANNELS = ["direct", "email", "paid_search", "display", "store", "sms"]

touch_lists = st.lists(
    st.tuples(
        st.sampled_from(CHANNELS),
        st.integers(min_value=0, max_value=40 * DAY_MS),
        st.booleans(),
    ),
    min_size=0,
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(
    raw=touch_lists,
    revenue=st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False),
    half_life_days=st.integers(min_value=1, max_value=30),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_property_sums_nonnegative_and_shuffle_invariant(
    raw: list[tuple[str, int, bool]], revenue: float, half_life_days: int, seed: int
) -> None:
    touches = [
        Touch(session_id=f"s{i:02d}", channel=ch, started_at=CONV - age, identified=ident)
        for i, (ch, age, ident) in enumerate(raw)
    ]
    half_life = half_life_days * DAY_MS
    path = select_path(touches, CONV, LOOKBACK, None)
    result = attribute(path, CONV, revenue, ATTRIBUTION_MODELS, half_life)

    shuffled = list(touches)
    random.Random(seed).shuffle(shuffled)
    shuffled_path = select_path(shuffled, CONV, LOOKBACK, None)
    assert shuffled_path == path
    assert attribute(shuffled_path, CONV, revenue, ATTRIBUTION_MODELS, half_life) == result

    for name, credits in result.items():
        assert len(credits) == len(path), name
        if not path:
            continue
        weights = [c.credit for c in credits]
        money = [c.revenue_credit for c in credits]
        assert all(w >= 0.0 for w in weights), name
        assert all(m >= 0.0 for m in money), name
        assert math.fsum(weights) == 1.0, name  # exact, as attribute() promises
        assert math.fsum(money) == revenue, name
        assert [c.position for c in credits] == list(range(len(path)))


@settings(max_examples=100, deadline=None)
@given(raw=touch_lists.filter(bool))
def test_property_model_functions_sum_to_one(raw: list[tuple[str, int, bool]]) -> None:
    touches = [
        Touch(session_id=f"s{i:02d}", channel=ch, started_at=CONV - age, identified=ident)
        for i, (ch, age, ident) in enumerate(raw)
    ]
    path = sorted(touches, key=lambda t: (t.started_at, t.session_id))
    for name, fn in MODEL_FUNCTIONS.items():
        weights = fn(path, CONV)
        assert len(weights) == len(path), name
        assert all(w >= 0.0 for w in weights), name
        assert math.fsum(weights) == 1.0, name
