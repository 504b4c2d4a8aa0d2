"""Two identity processes over four partitions give exactly what one process gives."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config import Settings
from tests.conftest import at, o2o, query
from tests.conftest import story_event as ev

pytestmark = pytest.mark.integration


def events(seed: int = 3, n: int = 400) -> list[dict[str, Any]]:
    """A random identifier graph (no user or loyalty ids, so no conflicts) over web and app events."""
    rng = random.Random(seed)
    pool = [("anonymous_id", f"c{i}") for i in range(120)] + [("device_id", f"d{i}") for i in range(60)]
    pool += [("email", f"m{i}@example.com") for i in range(40)]
    out = []
    for i in range(n):
        ids = dict(rng.sample(pool, rng.choice([1, 1, 2, 3])))
        when = at(minutes=rng.randrange(0, 6 * 24 * 60))
        if rng.random() < 0.1:
            props = {
                "order_id": f"o{i}",
                "revenue": 10.0 + i % 7,
                "currency": "EUR",
                "fulfillment": "delivery",
            }
            out.append(ev(f"e{i}", "web", "order_completed", when, ids, properties=props))
        else:
            source, etype = rng.choice([("web", "page_view"), ("app", "screen_view")])
            medium = rng.choice(["", "cpc", "email", "social"])
            out.append(ev(f"e{i}", source, etype, when, ids, context={"campaign": {"medium": medium}}))
    return out


def run(settings: Settings, path: Path, workers: int, tag: str) -> tuple[Settings, str]:
    own = settings.model_copy(
        update={
            "topic_prefix": f"{settings.topic_prefix}{tag}.",
            "consumer_group_prefix": f"{settings.topic_prefix}{tag}.",
            "clickhouse_database": f"{settings.clickhouse_database}_{tag}",
            "partitions": 4,
            "identity_workers": workers,
            # Longer than the input's span (6 days, in random order): no event is very late.
            # A very late event keeps whatever session covers it when it arrives, which
            # depends on batch timing in any run; within the lateness every event is placed
            # exactly, so the views depend on the input alone and any difference is identity's.
            "allowed_lateness_minutes": 7 * 24 * 60,
        }
    )
    o2o(own, "init")
    o2o(own, "produce", "--file", str(path))
    return own, o2o(own, "run", "all", "--drain", timeout=150).stderr


def test_two_identity_processes_over_four_partitions_match_one(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events()))
    one, _ = run(settings, path, 1, "one")
    two, log = run(settings, path, 2, "two")
    assert log.count("identity: drained") == 2  # two identity processes ran and drained

    for sql in (
        "SELECT id_type, id_value, person_id FROM {db}.identities ORDER BY id_type, id_value",
        "SELECT event_id, person_id, session_id FROM {db}.events ORDER BY event_id",
        "SELECT session_id, person_id, channel, started_at, ended_at, event_count FROM {db}.sessions "
        "ORDER BY session_id",
        "SELECT event_id, person_id, path_length, o2o_label FROM {db}.conversions ORDER BY event_id",
        "SELECT conversion_id, model, session_id, round(credit, 12) FROM {db}.attribution "
        "ORDER BY conversion_id, model, session_id",
    ):
        expected = query(one, sql)
        assert expected, sql
        assert query(two, sql) == expected, sql
    persons = query(one, "SELECT uniqExact(person_id) FROM {db}.identities")[0][0]
    assert 1 < persons < 220  # the random graph did join identifiers into persons
