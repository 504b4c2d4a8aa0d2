"""Two identity processes over four partitions give exactly what one process gives."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.config import Settings
from tests.conftest import o2o, query, random_identifier_graph

pytestmark = pytest.mark.integration


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
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in random_identifier_graph()))
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
