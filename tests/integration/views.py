"""What analysts see, as comparable data: every analyst view's rows, sorted, versions left out.

Crash tests compare these snapshots between an undisturbed run and a run with
kills; ``version`` differs legitimately (a replay after a restart outranks
what the crashed run sent) and ``received_at`` is the Kafka time of each
produce run, so both are left out. Floats are rounded to 9 digits, as sums
may be added in another order.
"""

from __future__ import annotations

from typing import Any

from pipeline.config import Settings
from tests.conftest import query, query_each

VIEWS = (
    "events",
    "sessions",
    "conversions",
    "attribution",
    "attribution_adjustments",
    "identities",
    "identity_conflicts",
    "person_merges",
    "credits_daily",
    "credits_by_store",
    "conversion_paths",
    "consent",
    "feedback",
)
LEFT_OUT = ("version", "received_at")


def _normalised(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, list | tuple):
        return tuple(_normalised(v) for v in value)
    return value


def snapshot(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    """Every analyst view's rows, sorted (call it while no pipeline runs).

    Two rounds of queries, each opening the test run's shared chDB folder
    once: an open reads every database's metadata, and the crash tests take
    many snapshots late in a run.
    """
    names = ", ".join(f"'{view}'" for view in VIEWS)
    columns: dict[str, list[str]] = {view: [] for view in VIEWS}
    for table, name in query(
        settings,
        f"SELECT table, name FROM system.columns WHERE database = '{{db}}' AND has([{names}], table) "
        "ORDER BY table, position",
    ):
        if name not in LEFT_OUT:
            columns[table].append(f"`{name}`")
    answers = query_each(settings, [f"SELECT {', '.join(columns[v])} FROM {{db}}.{v}" for v in VIEWS])
    return {view: sorted(map(_normalised, rows), key=repr) for view, rows in zip(VIEWS, answers, strict=True)}


def differences(
    expected: dict[str, list[Any]], actual: dict[str, list[Any]], merge_steps_may_differ: bool = False
) -> dict[str, str]:
    """Per view, a short description of how ``actual`` differs from ``expected`` (empty: equal).

    With ``merge_steps_may_differ``: ``person_merges`` is the merge history, and a restart can let identity
    resolve an event after newer ones (a stream idle past
    ``O2O_REORDER_IDLE_SECONDS`` while stages restart): a person then comes
    into being under another identifier, or never, so the history may have
    steps more or fewer (docs/architecture.md, "Deterministic ids"). What
    must agree is where each person merged in both runs ended up; every
    other view, the canonical person of each row included, must be equal.
    """
    diffs: dict[str, str] = {}
    for view in VIEWS:
        want, got = expected[view], actual[view]
        if view == "person_merges":
            before, after = {r[0]: r[1] for r in want}, {r[0]: r[1] for r in got}
            moved = sorted(
                (p, before[p], after[p]) for p in before.keys() & after.keys() if before[p] != after[p]
            )
            if moved:
                diffs[view] = f"merged persons ending elsewhere (person, expected, found): {moved[:3]}"
            continue
        if want != got:
            missing = [r for r in want if r not in got][:3]
            extra = [r for r in got if r not in want][:3]
            diffs[view] = f"{len(want)} rows expected, {len(got)} found; missing {missing}; extra {extra}"
    return diffs
