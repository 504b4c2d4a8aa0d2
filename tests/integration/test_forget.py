"""`o2o forget`: a person's rows leave every table, their identifiers are suppressed, it is idempotent."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.clickhouse.query_server import live_endpoint
from pipeline.config import Settings
from tests.conftest import at, o2o, query, start_o2o, stop_o2o
from tests.conftest import story_event as ev
from tests.integration.test_late_arrivals_e2e import wait_for

pytestmark = pytest.mark.integration

ALICE = {"anonymous_id": "c-alice", "email": "Alice@Example.com"}
STORE = {"context": {"store_id": "s1"}}
EVENTS = [
    ev("a1", "web", "page_view", at(), {"anonymous_id": "c-alice"},
       context={"campaign": {"medium": "email"}}),
    ev("a2", "web", "signup", at(minutes=2), ALICE),
    ev("a3", "pos", "purchase", at(days=1), {"loyalty_id": "L-alice", "email": "alice@example.com"},
       properties={"transaction_id": "t1", "store_id": "s1", "revenue": 40.0, "currency": "EUR"}, **STORE),
    ev("b1", "web", "page_view", at(hours=1), {"anonymous_id": "c-bob"}),
    ev("b2", "web", "order_completed", at(hours=1, minutes=5), {"anonymous_id": "c-bob"},
       properties={"order_id": "o-bob", "revenue": 25.0, "currency": "EUR", "fulfillment": "delivery"}),
]  # fmt: skip

TABLES = ("events", "sessions", "conversions", "attribution", "identities")
# the storage tables with a person's rows, named here rather than taken from the code under test
STORES = ("events_store", "sessions_store", "conversions_store", "attribution_store",
          "attribution_adjustments_store", "identities_store")  # fmt: skip


def stored_rows(settings: Settings, persons: list[str]) -> dict[str, int]:
    """Rows of ``persons`` in each storage table, read without FINAL: what was written and not erased."""
    ids = ", ".join(f"'{p}'" for p in persons)
    return {
        table: query(settings, f"SELECT count() FROM {{db}}.{table} WHERE person_id IN ({ids})")[0][0]
        for table in STORES
    }


def produce(settings: Settings, path: Path, events: list[dict[str, Any]]) -> None:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    o2o(settings, "produce", "--file", str(path))


def counts(settings: Settings) -> dict[str, int]:
    (row,) = query(settings, "SELECT " + ", ".join(f"(SELECT count() FROM {{db}}.{t})" for t in TABLES))
    return dict(zip(TABLES, row, strict=True))


def live_state(settings: Settings) -> dict[tuple[str, bytes], bytes]:
    """The newest value of every key still set in the stateful stages' changelogs (a tombstone drops it)."""
    from confluent_kafka import Consumer, TopicPartition

    from pipeline.kafka import topics

    stages = ("identity", "journeys", "attribution")
    names = [
        f"{settings.group(stage)}-{table}-changelog"
        for stage in stages
        for table in topics.STATE_TABLES[stage]
    ]
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "forget-scan"})
    left, assignment = {}, []
    for name in names:
        for p in range(settings.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
            if high > low:
                left[(name, p)] = high
                assignment.append(TopicPartition(name, p, low))
    consumer.assign(assignment)
    state: dict[tuple[str, bytes], bytes] = {}
    while left:
        for m in consumer.consume(1000, timeout=1):
            name, partition, key = m.topic() or "", m.partition() or 0, m.key() or b""
            if m.error() is not None:
                continue
            if m.value():
                state[(name, key)] = m.value() or b""
            else:
                state.pop((name, key), None)
            if (m.offset() or 0) + 1 >= left.get((name, partition), 0):
                left.pop((name, partition), None)
    consumer.close()
    return state


def naming(state: dict[tuple[str, bytes], bytes], markers: list[bytes]) -> set[str]:
    """The changelog topics whose live keys or values contain one of ``markers``."""
    return {name for (name, key), value in state.items() if any(m in key or m in value for m in markers)}


def forget(settings: Settings, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads(o2o(settings, "forget", *args, "--format", "json").stdout)
    return result


def test_forget_erases_everywhere_suppresses_and_is_idempotent(settings: Settings, tmp_path: Path) -> None:
    o2o(settings, "init")
    produce(settings, tmp_path / "1.jsonl", EVENTS)
    o2o(settings, "run", "all", "--drain")
    before = counts(settings)
    assert before["conversions"] == 2
    person = "SELECT person_id FROM {db}.identities WHERE id_value = '%s'"
    credits = "SELECT count() FROM {db}.attribution WHERE person_id IN (%s)"
    (alice_credits,), (bob_credits,) = (
        query(settings, credits % (person % who))[0] for who in ("c-alice", "c-bob")
    )
    assert alice_credits > 0 and bob_credits > 0 and alice_credits + bob_credits == before["attribution"]

    # from here the pipeline runs live (no --drain): the sink holds the chDB folder, so `o2o forget`
    # erases through its query server; short sessions and a 1 s idle partition for Carol below
    running = settings.model_copy(update={"idle_partition_seconds": 1.0, "session_timeout_minutes": 0.05})
    pipeline = start_o2o(running, "run", "all")
    try:
        wait_for(lambda: live_endpoint(settings) is not None, "the sink's query server", timeout=60)
        dry = forget(settings, "--id", "email:alice@example.com", "--dry-run")
        assert dry["dry_run"] and dry["rows"]["events_store"] == 3
        assert dry["suppression_read_by"] == []  # a dry run publishes nothing and waits for nobody
        assert counts(settings) == before  # a dry run changes nothing

        # her export: every row forget would delete, nobody else's, changing nothing
        export = tmp_path / "alice.json"
        o2o(
            settings,
            "export",
            "--id",
            "user_id:never-seen",
            "--id",
            "loyalty_id:L-alice",
            "--output",
            str(export),
        )
        document = orjson.loads(export.read_bytes())
        assert export.stat().st_mode & 0o077 == 0  # the owner's alone
        assert {table: len(rows) for table, rows in document["rows"].items()} == dry["rows"]
        assert sorted(row["event_id"] for row in document["rows"]["events_store"]) == ["a1", "a2", "a3"]
        assert {row["consent_marketing"] for row in document["rows"]["events_store"]} <= {0, 1}
        ids = {f"{row['id_type']}:{row['id_value']}" for row in document["rows"]["identities_store"]}
        assert "anonymous_id:c-alice" in ids and "loyalty_id:L-alice" in ids
        emails = [value for key, value in (i.split(":", 1) for i in ids) if key == "email"]
        assert len(emails) == 1 and re.fullmatch(r"(sha256:)?[0-9a-f]{64}", emails[0]), ids
        assert b"alice@example.com" not in export.read_bytes().lower()  # hashed as stored, never in clear
        assert document["persons"] == dry["persons"] and counts(settings) == before

        alice = [query(settings, person % "c-alice")[0][0]]
        markers = [alice[0].encode(), b"c-alice", b"L-alice"]
        in_state = naming(live_state(settings), markers)  # before the erasure: her identifiers and paths
        ids, paths = (f"{settings.group(s)}-{t}-changelog" for s, t in
                      (("identity", "identity_ids"), ("attribution", "attribution_paths")))  # fmt: skip
        assert {ids, paths} <= in_state, in_state
        held = stored_rows(settings, alice)
        assert all(held[t] for t in ("events_store", "conversions_store", "attribution_store")), held
        done = forget(settings, "--id", "email: ALICE@example.com ")
        assert len(done["persons"]) == 1 and done["identifiers_suppressed"] == 3
        # every running stage that reads the suppression list had read it before the erasure
        assert (done["suppression_read_by"], done["suppression_not_read_by"]) == (
            ["identity", "ingest", "sink"],
            [],
        )
        assert done["persons"] == alice
        assert stored_rows(settings, alice) == dict.fromkeys(STORES, 0)  # gone from storage, not hidden
        assert done["rows"]["events_store"] == 3 and done["rows"]["conversions_store"] == 1
        after = counts(settings)
        assert after == {"events": 2, "sessions": 1, "conversions": 1, "attribution": bob_credits,
                         "identities": 1}  # fmt: skip
        assert query(settings, "SELECT DISTINCT person_id FROM {db}.events") == query(
            settings, "SELECT person_id FROM {db}.identities WHERE id_value = 'c-bob'"
        )
        assert {r[0] for r in query(settings, "SELECT conversion_id FROM {db}.attribution")} == {
            r[0] for r in query(settings, "SELECT conversion_id FROM {db}.conversions")
        }

        # later events carrying any of her identifiers become dead letters
        produce(settings, tmp_path / "2.jsonl", [
            ev("a4", "web", "page_view", at(days=2), {"anonymous_id": "c-alice"}),
            ev("a5", "pos", "loyalty_scan", at(days=2, hours=1), {"loyalty_id": "L-alice"}, **STORE,
               properties={"store_id": "s1"}),
            ev("b3", "web", "page_view", at(days=2), {"anonymous_id": "c-bob"}),
            ev("c1", "web", "page_view", at(days=2, hours=2), {"anonymous_id": "c-carol"}),
        ])  # fmt: skip
        letters = "SELECT reason, count() FROM {db}.dead_letters GROUP BY reason"
        wait_for(lambda: query(settings, letters) == [("suppressed", 2)], "suppressed dead letters", 30)
        stored = "SELECT event_id FROM {db}.events ORDER BY event_id"
        wait_for(lambda: len(query(settings, stored)) == 4, "Bob's and Carol's page views")
        assert query(settings, stored) == [("b1",), ("b2",), ("b3",), ("c1",)]  # none of Alice's
        # identity, journeys and attribution dropped her from their state: tombstones in their
        # changelogs (the old values stay until compaction: docs/identity.md#what-kafka-keeps)
        assert naming(live_state(settings), markers) == set()

        # Carol's second page view joins her session; no input follows, so only the idle
        # partition timer moves event time past the 3 s session timeout and closes the session,
        # which publishes it again with both page views while the pipeline still runs
        carol = (
            "SELECT s.event_count, s.version FROM {db}.sessions AS s "
            "WHERE s.session_id IN (SELECT session_id FROM {db}.events WHERE event_id = 'c1')"
        )
        assert query(settings, carol) == [(1, 1)]
        produce(settings, tmp_path / "3.jsonl", [
            ev("c2", "web", "page_view", at(days=2, hours=2, seconds=1), {"anonymous_id": "c-carol"}),
        ])  # fmt: skip
        wait_for(lambda: query(settings, carol) == [(2, 2)], "the idle timer to close Carol's session", 30)
        assert pipeline.poll() is None, "the pipeline still runs"

        again = forget(settings, "--id", "email:alice@example.com")
        assert again["persons"] == [] and sum(again["rows"].values()) == 0  # idempotent
        gone = orjson.loads(o2o(settings, "export", "--id", "loyalty_id:L-alice").stdout)
        # nobody any more; what still names her loyalty id is the dead letter of her later scan
        assert gone["persons"] == [] and list(gone["rows"]) == ["dead_letters_store"]
        assert [row["reason"] for row in gone["rows"]["dead_letters_store"]] == ["suppressed"]
    finally:
        stop_o2o(pipeline)
    assert counts(settings)["events"] == 5  # Bob's three and Carol's two


def test_forget_rejects_a_malformed_identifier(settings: Settings) -> None:
    proc = o2o(settings, "forget", "--id", "shoe_size:42", check=False)
    assert proc.returncode == 2 and "unknown identifier type" in proc.stderr
