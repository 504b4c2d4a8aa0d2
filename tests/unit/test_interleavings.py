"""The views depend on the input, not on how a run happened to batch and interleave it.

The stateful stages run in one process (tests/unit/interleave.py) under many
seeded schedules: batches cut anywhere, partitions read in any order, merges'
hand-overs arriving before or after the survivor's next events. Every
schedule must give the views of the plain in-order run. The crash tests
compare whole runs the same way, where the schedule is whatever the broker
and the kills make of it.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.identity.forwarding import CYCLES_CUT, STALE
from tests.conftest import random_identifier_graph
from tests.unit.interleave import InProcessPipeline, differences, normalised, valid_events, views

# Longer than the input's span: nothing becomes final, every event can be placed.
SETTINGS = Settings(allowed_lateness_minutes=14 * 24 * 60)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    """Six days of 120 customers: web, app, store visits, logins and coupons that merge persons."""
    return valid_events(SETTINGS, customers=120, days=6, seed=11)


@pytest.fixture(scope="module")
def in_order(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The views of the run that reads every partition to its end in turn."""
    shown = views(InProcessPipeline(SETTINGS).run(events, rng=None))
    assert shown["person_aliases"] and shown["conversions"] and shown["attribution"]
    return shown


@pytest.mark.parametrize("seed", range(16))
def test_any_batching_and_partition_order_gives_the_same_views(
    events: list[dict[str, Any]], in_order: dict[str, Any], seed: int
) -> None:
    pipeline = InProcessPipeline(SETTINGS)
    shown = views(pipeline.run(events, random.Random(seed)))
    assert differences(in_order, shown) == []
    assert pipeline.journeys.counts["handoffs"] > 0  # merges were handed over under this schedule


@pytest.mark.parametrize("seed", range(12))
def test_events_reaching_identity_late_change_only_the_merge_history(
    events: list[dict[str, Any]], in_order: dict[str, Any], seed: int
) -> None:
    """Identity resolves in arrival order here: one event in 20 arrives up to 400 events late.

    Ids, sessions, conversions and credits are the same (within the allowed
    lateness); only ``person_merges`` may show more steps (a person created
    under a younger identifier, then renamed when the older one arrives).
    """
    rng = random.Random(seed)
    delay = {i: rng.randint(1, 400) for i in range(len(events)) if rng.random() < 0.05}
    arrived = [events[i] for i in sorted(range(len(events)), key=lambda i: i + delay.get(i, 0))]
    pipeline = InProcessPipeline(SETTINGS)
    shown = views(pipeline.run(arrived, rng, eager=True))
    assert pipeline.identity.reorder.buffer.late > 0
    shown["person_aliases"] = in_order["person_aliases"]
    assert differences(in_order, shown) == []


@pytest.fixture(scope="module")
def tangled() -> list[dict[str, Any]]:
    """A random identifier graph on four partitions: persons identity renames back and forth."""
    return normalised(SETTINGS, random_identifier_graph(), partitions=4)


@pytest.fixture(scope="module")
def tangled_in_order(tangled: list[dict[str, Any]]) -> dict[str, Any]:
    """The views of the tangled graph read partition by partition."""
    return views(InProcessPipeline(SETTINGS, partitions=4).run(tangled, rng=None))


@pytest.mark.parametrize("seed", range(8))
def test_merge_records_met_in_any_order_across_partitions_give_the_same_views(
    tangled: list[dict[str, Any]], tangled_in_order: dict[str, Any], seed: int
) -> None:
    """Identity resolves in arrival order and renames persons back; its merge records travel on
    the merged persons' partitions, so journeys and attribution meet them in another order than
    identity wrote them (a merge after the rename that undid it). Ids, sessions, conversions and
    credits must still end where the in-order run ends; only the merge history may differ."""
    pipeline = InProcessPipeline(SETTINGS, partitions=4)
    shown = views(pipeline.run(tangled, random.Random(seed), eager=True))
    shown["person_aliases"] = tangled_in_order["person_aliases"]  # how persons merged is arrival order
    assert differences(tangled_in_order, shown) == []
    assert pipeline.journeys.counts[CYCLES_CUT] + pipeline.journeys.counts[STALE] > 0  # met out of order
