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
    expected: dict[str, list[Any]], actual: dict[str, list[Any]], late_events_possible: bool = False
) -> dict[str, str]:
    """Per view, a short description of how ``actual`` differs from ``expected`` (empty: equal).

    With ``late_events_possible``: the run may have let identity resolve an
    event after newer ones (a restart, or input that resumes after a quiet
    spell: a stream ingest had read to its end holds nothing back, see
    docs/architecture.md, "Event time and reordering"). Two views are histories that record the
    order events were resolved in, so for them only the end state must agree:

    - ``person_merges``: a person may come into being under another
      identifier, or never, so the history may have steps more or fewer
      (docs/architecture.md, "Deterministic ids"); where each person merged
      in both runs ended up must agree;
    - ``consent``: a statement resolved before an older one of the same
      person is recorded as a change from what was known then, so the table
      may have rows more or fewer and another ``previous``; every
      ``consent_updated`` statement, and each person's newest flag per
      purpose, must agree.

    Every other view, the canonical person of each row included, must be equal.
    """
    diffs: dict[str, str] = {}
    for view in VIEWS:
        want, got = expected[view], actual[view]
        if late_events_possible and view == "person_merges":
            before, after = {r[0]: r[1] for r in want}, {r[0]: r[1] for r in got}
            moved = sorted(
                (p, before[p], after[p]) for p in before.keys() & after.keys() if before[p] != after[p]
            )
            if moved:
                diffs[view] = f"merged persons ending elsewhere (person, expected, found): {moved[:3]}"
            continue
        if late_events_possible and view == "consent":
            want, got = consent_end_state(want), consent_end_state(got)
        if want != got:
            missing = [r for r in want if r not in got][:3]
            extra = [r for r in got if r not in want][:3]
            diffs[view] = f"{len(want)} rows expected, {len(got)} found; missing {missing}; extra {extra}"
    return diffs


# the consent view's columns, as snapshot() gives them (deploy/clickhouse/0015_consent.sql)
_PERSON, _PURPOSE, _GRANTED, _PREVIOUS, _AT, _TYPE = 1, 2, 3, 4, 5, 7


def consent_end_state(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """What no resolving order may change in the consent view: the explicit statements (without
    ``previous``) and each person's newest flag per purpose (not its time: a repeat resolved before
    the statement it repeats is a row of its own, later than the in-order run's newest)."""
    explicit = [r[:_PREVIOUS] + r[_PREVIOUS + 1 :] for r in rows if r[_TYPE] == "consent_updated"]
    newest: dict[tuple[Any, Any], tuple[Any, Any]] = {}
    for r in rows:
        key = (r[_PERSON], r[_PURPOSE])
        newest[key] = max(newest.get(key, (r[_AT], r[_GRANTED])), (r[_AT], r[_GRANTED]))
    flags = (("newest", *key, granted) for key, (_at, granted) in newest.items())
    return sorted(explicit, key=repr) + sorted(flags, key=repr)
