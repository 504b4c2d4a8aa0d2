"""The fault plan: parsing, validation at start-up, and the pass it fires on."""

from __future__ import annotations

import pytest

from pipeline.config import load_settings
from pipeline.errors import ConfigError
from pipeline.runtime.faults import FaultPlan, parse_plan


def test_parse_plan_reads_stage_point_and_pass() -> None:
    assert parse_plan("journeys:after_outputs:3, sink:mid_insert") == {
        ("journeys", "after_outputs"): 3,
        ("sink", "mid_insert"): 1,
    }
    assert parse_plan("") == {}


def test_unknown_point_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="unknown fault point"):
        parse_plan("journeys:after_lunch")
    with pytest.raises(ConfigError, match=r"O2O_FAULT_AT: .*unknown fault point"):
        load_settings(fault_at="journeys:after_lunch")


def test_plan_fires_on_the_planned_pass_of_its_own_stage_only(monkeypatch: pytest.MonkeyPatch) -> None:
    kills: list[int] = []
    monkeypatch.setattr("pipeline.runtime.faults.os.kill", lambda pid, sig: kills.append(sig))
    other = FaultPlan("identity", "journeys:after_state:2")
    mine = FaultPlan("journeys", "journeys:after_state:2")
    for _ in range(3):
        other.reach("after_state")
        mine.reach("after_state")
        mine.reach("after_outputs")
    assert len(kills) == 1
    assert mine.passed["after_state"] == 3
