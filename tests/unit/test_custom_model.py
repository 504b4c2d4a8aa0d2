"""The custom attribution model: rules from a file, validated, normalised."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipeline.attribution.custom import CustomRules, load_rules, parse_rules
from pipeline.attribution.models import Touch, attribute
from pipeline.config import load_settings
from pipeline.errors import ConfigError

RULES = """
[position]
first = 2.0
last = 2.0
middle = 1.0

[channel]
direct = 0.5
store = 1.5

[touch_type]
store_visit = 2.0
"""


def path() -> list[Touch]:
    return [
        Touch("s1", "email", 1),
        Touch("s2", "direct", 2),
        Touch("s3", "store", 3, kind="store_visit"),
    ]


def test_weights_multiply_position_channel_and_type_then_normalise(tmp_path: Path) -> None:
    file = tmp_path / "rules.toml"
    file.write_text(RULES)
    rules = load_rules(file)
    credits = attribute(path(), 10, 90.0, ["custom"], 1, rules)["custom"]
    raw = [2.0 * 1.0 * 1.0, 1.0 * 0.5 * 1.0, 2.0 * 1.5 * 2.0]
    expected = [w / sum(raw) for w in raw]
    assert [c.credit for c in credits] == pytest.approx(expected)
    assert math.fsum(c.credit for c in credits) == 1.0
    assert math.fsum(c.revenue_credit for c in credits) == 90.0


def test_one_touch_and_all_zero_paths() -> None:
    rules = parse_rules({"position": {"only": 0.0}, "channel": {"email": 0.0}})
    assert rules.weights(["email"], ["digital"]) == [1.0]  # all zero: equal shares
    assert CustomRules().weights(["a", "b"], ["digital", "digital"]) == [0.5, 0.5]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"positions": {}}, "unknown section"),
        ({"position": {"second": 1}}, "unknown key"),
        ({"channel": {"email": "high"}}, "must be a number"),
        ({"channel": {"email": -1}}, ">= 0"),
        ({"touch_type": 3}, "must be a table"),
    ],
)
def test_bad_rules_are_named(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_rules(doc)


def test_custom_model_needs_a_valid_rules_file_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="O2O_CUSTOM_RULES"):
        load_settings(models="linear,custom")
    bad = tmp_path / "bad.toml"
    bad.write_text("[channel]\nemail = -2\n")
    with pytest.raises(ConfigError, match="email"):
        load_settings(models="linear,custom", custom_rules=bad)
    good = tmp_path / "good.toml"
    good.write_text(RULES)
    assert load_settings(models="linear,custom", custom_rules=good).models == ("linear", "custom")


def test_settings_pass_to_child_processes_unchanged(tmp_path: Path) -> None:
    from pipeline.runtime.stages import settings_env

    good = tmp_path / "good.toml"
    good.write_text(RULES)
    for settings in (load_settings(), load_settings(models="linear,custom", custom_rules=good)):
        env = settings_env(settings)
        assert "None" not in env.values()
        assert load_settings(**{k[4:].lower(): v for k, v in env.items()}) == settings
