"""pipeline.clickhouse against a real embedded engine (chDB) in a temporary folder.

chDB allows one data folder per process, so every test of this module uses the
same session-wide folder, each with its own database, and closes its client.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.clickhouse import (
    DEFAULT_FOLDER,
    ClickHouse,
    QueryError,
    QueryServer,
    apply_migrations,
    connect,
    endpoint_file,
    query_any,
    render,
)
from pipeline.clickhouse import query_server as query_server_module
from pipeline.config import Settings
from pipeline.errors import ClickHouseUnavailable, MigrationError
from pipeline.model.rows import ATTRIBUTION, FILLED_BY_CLICKHOUSE, ROW_TABLES

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z in epoch ms
REPO = Path(__file__).resolve().parents[2]

SHIPPED = sorted(p.stem for p in DEFAULT_FOLDER.glob("[0-9][0-9][0-9][0-9]_*.sql"))


@pytest.fixture(scope="session")
def chdb_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one chDB folder of this test session."""
    return tmp_path_factory.mktemp("chdb") / "clickhouse"


@pytest.fixture
def settings(chdb_folder: Path, tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        clickhouse_dsn=f"chdb://{chdb_folder}",
        clickhouse_database=f"test_{uuid.uuid4().hex[:12]}",
    )


@pytest.fixture
def ch(settings: Settings) -> Iterator[ClickHouse]:
    client = connect(settings)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def migrated(ch: ClickHouse) -> ClickHouse:
    apply_migrations(ch)
    return ch


def _insert(ch: ClickHouse, table: str, rows: list[dict[str, object]]) -> None:
    columns = list(rows[0])
    ch.insert(table, [[row[c] for c in columns] for row in rows], column_names=columns)


@pytest.mark.integration
def test_migrations_apply_once_and_are_recorded(ch: ClickHouse) -> None:
    assert apply_migrations(ch) == SHIPPED
    recorded = ch.query(ch.sql("SELECT version, checksum FROM {db}.schema_migrations ORDER BY version"))
    assert [row[0] for row in recorded.rows] == SHIPPED
    assert all(len(row[1]) == 64 for row in recorded.rows)
    assert apply_migrations(ch) == []
    # the database became the default: unqualified names work
    assert ch.query("SELECT count() FROM events", readonly=True).rows == [(0,)]


@pytest.mark.integration
def test_changed_migration_raises_and_new_one_applies(ch: ClickHouse, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    shutil.copytree(DEFAULT_FOLDER, folder)
    assert apply_migrations(ch, folder) == SHIPPED

    views = folder / "0002_views.sql"
    original = views.read_text()
    views.write_text("-- a new comment only\n" + original.replace("\n", "\n\n", 3))
    assert apply_migrations(ch, folder) == []  # comments and blank lines do not count

    views.write_text(original.replace("FROM {db}.dead_letters_store FINAL", "FROM {db}.dead_letters_store"))
    with pytest.raises(MigrationError, match=r"0002_views\.sql"):
        apply_migrations(ch, folder)

    views.write_text(original)
    (folder / "0100_extra.sql").write_text(
        "-- extra; with a semicolon in a comment\n"
        "CREATE TABLE IF NOT EXISTS {db}.extra (x String DEFAULT 'a;b') ENGINE = MergeTree ORDER BY x;\n"
        "CREATE OR REPLACE VIEW {db}.extra_view AS SELECT x FROM {db}.extra;\n"
    )
    assert apply_migrations(ch, folder) == ["0100_extra"]
    assert apply_migrations(ch, folder) == []

    (folder / "0101_broken.sql").write_text("CREATE TABLE {db}.broken (x Strin) ENGINE = Log;\n")
    with pytest.raises(MigrationError, match=r"0101_broken\.sql, statement 1"):
        apply_migrations(ch, folder)


@pytest.mark.integration
def test_storage_tables_match_the_row_model(migrated: ClickHouse) -> None:
    for table in ROW_TABLES:
        described = migrated.query(migrated.sql(f"DESCRIBE TABLE {{db}}.{table.storage}")).rows
        names = tuple(str(row[0]) for row in described)
        assert names == table.columns + FILLED_BY_CLICKHOUSE.get(table.storage, ()), table.storage
        datetimes = {str(row[0]) for row in described if str(row[1]).startswith("DateTime64")}
        filled = set(FILLED_BY_CLICKHOUSE.get(table.storage, ()))
        assert datetimes == set(table.datetime_columns) | filled, table.storage
    for name in ("events", "sessions", "conversions", "attribution", "identities"):
        table = next(t for t in ROW_TABLES if t.name == name)
        view = migrated.query(migrated.sql(f"DESCRIBE TABLE {{db}}.{name}")).rows
        assert tuple(str(row[0]) for row in view) == table.columns, name


@pytest.mark.integration
def test_views_read_the_newest_version(migrated: ClickHouse) -> None:
    base = {"person_id": "p1", "occurred_at": T0, "received_at": T0 + 5}
    _insert(migrated, "events_store", [{"event_id": "e1", **base, "type": "page_view", "version": 1}])
    _insert(migrated, "events_store", [{"event_id": "e1", **base, "type": "purchase", "version": 2}])
    _insert(migrated, "events_store", [{"event_id": "e2", **base, "type": "old", "version": 1}])
    rows = migrated.query(migrated.sql("SELECT event_id, type, version FROM {db}.events ORDER BY event_id"))
    assert rows.rows == [("e1", "purchase", 2), ("e2", "old", 1)]

    def touch(model: str, session: str, version: int) -> dict[str, object]:
        return {
            "conversion_id": "c1",
            "model": model,
            "session_id": session,
            "person_id": "p1",
            "touch_at": T0,
            "converted_at": T0 + 1000,
            "credit": 0.5,
            "version": version,
        }

    def conversion(version: int) -> dict[str, object]:
        return {
            "conversion_id": "c1",
            "event_id": "x",
            "person_id": "p1",
            "occurred_at": T0,
            "version": version,
        }

    # version 1 credited s1 and s2; the re-attribution (version 2) credits s2 and s3
    _insert(migrated, "conversions_store", [conversion(1)])
    _insert(migrated, ATTRIBUTION.storage, [touch("linear", "s1", 1), touch("linear", "s2", 1)])
    _insert(migrated, ATTRIBUTION.storage, [touch("first_touch", "s1", 1)])
    query = migrated.sql("SELECT model, session_id, version FROM {db}.attribution ORDER BY model, session_id")
    assert migrated.query(query).rows == [("first_touch", "s1", 1), ("linear", "s1", 1), ("linear", "s2", 1)]
    _insert(migrated, ATTRIBUTION.storage, [touch("linear", "s2", 2), touch("linear", "s3", 2)])
    _insert(migrated, ATTRIBUTION.storage, [touch("first_touch", "s2", 2)])
    _insert(migrated, "conversions_store", [conversion(2)])
    rows = migrated.query(query)
    assert rows.rows == [("first_touch", "s2", 2), ("linear", "s2", 2), ("linear", "s3", 2)]
    # a version 3 with nothing left to credit hides every credit
    _insert(migrated, "conversions_store", [conversion(3)])
    assert migrated.query(query).rows == []


@pytest.mark.integration
def test_person_aliases_remap_persons(migrated: ClickHouse) -> None:
    events = [
        {"event_id": f"e{i}", "person_id": person, "occurred_at": T0, "received_at": T0, "version": 1}
        for i, person in enumerate(["p1", "p2", "p3"])
    ]
    _insert(migrated, "events_store", events)
    alias = {"person_id": "p2", "merged_at": T0, "reason": "email"}
    _insert(migrated, "person_aliases_store", [{**alias, "canonical_id": "p1", "version": 1}])
    query = migrated.sql("SELECT event_id, person_id FROM {db}.events ORDER BY event_id")
    assert migrated.query(query).rows == [("e0", "p1"), ("e1", "p1"), ("e2", "p3")]
    _insert(migrated, "person_aliases_store", [{**alias, "canonical_id": "p9", "version": 2}])
    assert migrated.query(query).rows == [("e0", "p1"), ("e1", "p9"), ("e2", "p3")]
    merges = migrated.query(migrated.sql("SELECT from_person, to_person, version FROM {db}.person_merges"))
    assert merges.rows == [("p2", "p9", 2)]


@pytest.mark.integration
def test_activation_lift_compares_messaged_and_held_out_persons(migrated: ClickHouse) -> None:
    day = 86_400_000
    decision = {"rule": "r", "channel": "push", "triggered_at": T0, "decided_at": T0, "version": 1}
    arms = {"a": "sent", "b": "sent", "c": "sent", "d": "sent", "x": "holdout", "y": "holdout"}
    _insert(migrated, "activations_store", [
        {**decision, "decision_id": person, "person_id": person, "outcome": outcome}
        for person, outcome in arms.items()
    ] + [{**decision, "decision_id": "a2", "person_id": "a", "outcome": "sent",
          "decided_at": T0 + day}])  # fmt: skip
    sale = {"kind": "purchase", "version": 1}
    _insert(migrated, "conversions_store", [
        {**sale, "conversion_id": "c1", "person_id": "a", "occurred_at": T0 + 3_600_000, "source": "pos",
         "revenue": 40.0, "currency": "EUR"},
        {**sale, "conversion_id": "c2", "person_id": "a", "occurred_at": T0 + 2 * day, "source": "web",
         "revenue": 10.0, "currency": "USD"},
        {**sale, "conversion_id": "c3", "person_id": "b", "occurred_at": T0 + 6 * day, "source": "app",
         "revenue": 20.0, "currency": "EUR"},
        {**sale, "conversion_id": "c4", "person_id": "c", "occurred_at": T0 + 7 * day + 1, "source": "pos",
         "revenue": 99.0, "currency": "EUR"},  # after the 7 days
        {**sale, "conversion_id": "c5", "person_id": "d", "occurred_at": T0 - 1, "source": "pos",
         "revenue": 99.0, "currency": "EUR"},  # before the decision
        {**sale, "conversion_id": "c6", "person_id": "x", "occurred_at": T0 + day, "source": "pos",
         "revenue": 30.0, "currency": "EUR"},
    ])  # fmt: skip
    rows = migrated.query(migrated.sql(
        "SELECT sale, messaged, held_out, messaged_converted, held_out_converted, messaged_rate, "
        "held_out_rate, lift, lift_low, lift_high, messaged_revenue, held_out_revenue_per_person "
        "FROM {db}.activation_lift "
        "ORDER BY sale"
    )).rows  # fmt: skip
    margin_all = 1.96 * (0.5 * 0.5 / 4 + 0.5 * 0.5 / 2) ** 0.5
    margin_online = 1.96 * (0.5 * 0.5 / 4) ** 0.5
    margin_store = 1.96 * (0.25 * 0.75 / 4 + 0.5 * 0.5 / 2) ** 0.5
    expected = [
        ("all", 4, 2, 2, 1, 0.5, 0.5, 0.0, -margin_all, margin_all,
         {"EUR": 60.0, "USD": 10.0}, {"EUR": 15.0}),
        ("online", 4, 2, 2, 0, 0.5, 0.0, 0.5, 0.5 - margin_online, 0.5 + margin_online,
         {"EUR": 20.0, "USD": 10.0}, {}),
        ("store", 4, 2, 1, 1, 0.25, 0.5, -0.25, -0.25 - margin_store, -0.25 + margin_store,
         {"EUR": 40.0}, {"EUR": 15.0}),
    ]  # fmt: skip
    assert len(rows) == 3
    for row, want in zip(rows, expected, strict=True):
        assert row[:5] == want[:5] and row[10:] == want[10:]
        assert row[5:10] == pytest.approx(want[5:10])


@pytest.mark.integration
def test_feedback_views_compare_by_store_channel_label_fulfilment_staff_and_rule(
    migrated: ClickHouse,
) -> None:
    hour, day = 3_600_000, 86_400_000

    def event(
        eid: str, person: str, etype: str, at: int, session: str = "", **props: object
    ) -> dict[str, object]:
        return {"event_id": eid, "person_id": person, "source": "web", "type": etype, "occurred_at": at,
                "received_at": at, "session_id": session, "properties": orjson.dumps(props).decode(),
                "store_id": "", "version": 1}  # fmt: skip

    _insert(migrated, "events_store", [
        event("o1", "p1", "order_completed", T0, "s1", fulfillment="click_and_collect"),
        {**event("pick", "p1", "click_and_collect_pickup", T0 + day, "s2", staff_id="anna"),
         "source": "pos", "store_id": "st1"},
        event("n1", "p1", "nps_response", T0 + 2 * day, "s3", score=9, decision_id="d1", comment="great"),
        {**event("r2", "p2", "review", T0 + 3 * hour, "s4", rating=2, staff_id="bob", text="slow"),
         "source": "pos", "store_id": "st2"},
        event("o3", "p3", "order_completed", T0, "s5", fulfillment="delivery"),
        event("n3", "p3", "nps_response", T0 + day, "s5", score=3),
        event("n4", "p3", "nps_response", T0 + day + 1, "s5", score=8),
        event("anon", "", "review", T0, "", rating=5),  # without analytics consent: no person
    ])  # fmt: skip
    # every row names every column: _insert takes the columns of the first row
    session = {"kind": "digital", "version": 1}
    _insert(migrated, "sessions_store", [
        {**session, "session_id": "s1", "person_id": "p1", "channel": "paid_search",
         "started_at": T0 - 60_000},
        {**session, "session_id": "s2", "person_id": "p1", "channel": "store", "started_at": T0 + day,
         "kind": "store_visit"},
        {**session, "session_id": "s3", "person_id": "p1", "channel": "email",
         "started_at": T0 + 2 * day - 1},
        {**session, "session_id": "s4", "person_id": "p2", "channel": "store", "started_at": T0 + 3 * hour,
         "kind": "store_visit"},
        {**session, "session_id": "s5", "person_id": "p3", "channel": "direct", "started_at": T0 - 60_000},
    ])  # fmt: skip
    sale = {"kind": "order", "version": 1}
    _insert(migrated, "conversions_store", [
        {**sale, "conversion_id": "c1", "event_id": "o1", "person_id": "p1", "occurred_at": T0,
         "o2o_label": "online_to_offline"},
        {**sale, "conversion_id": "c3", "event_id": "o3", "person_id": "p3", "occurred_at": T0,
         "o2o_label": "online_only"},
    ])  # fmt: skip
    _insert(
        migrated,
        "activations_store",
        [{"decision_id": "d1", "rule": "rating_request", "person_id": "p1", "outcome": "sent", "version": 1}],
    )
    rows = migrated.query(migrated.sql(
        "SELECT event_id, kind, store_id, rating, score, nps_group, text, staff_id, preceding_channel, "
        "o2o_label, fulfilment, rule FROM {db}.feedback ORDER BY event_id"
    )).rows  # fmt: skip
    assert rows == [
        ("n1", "nps_response", "st1", None, 9.0, "promoter", "great", "anna", "store", "online_to_offline",
         "click_and_collect", "rating_request"),
        ("n3", "nps_response", "", None, 3.0, "detractor", "", "", "", "online_only", "delivery", ""),
        ("n4", "nps_response", "", None, 8.0, "passive", "", "", "", "online_only", "delivery", ""),
        ("r2", "review", "st2", 2, None, "", "slow", "bob", "", "", "", ""),
    ]  # fmt: skip
    scores = migrated.query(migrated.sql(
        "SELECT dimension, value, responses, nps_responses, nps, reviews, avg_rating "
        "FROM {db}.feedback_scores ORDER BY dimension, value"
    )).rows  # fmt: skip
    assert scores == [
        ("fulfilment", "click_and_collect", 1, 1, 100.0, 0, None),
        ("fulfilment", "delivery", 2, 2, -50.0, 0, None),
        ("o2o_label", "online_only", 2, 2, -50.0, 0, None),
        ("o2o_label", "online_to_offline", 1, 1, 100.0, 0, None),
        ("preceding_channel", "store", 1, 1, 100.0, 0, None),
        ("rule", "rating_request", 1, 1, 100.0, 0, None),
        ("staff_id", "anna", 1, 1, 100.0, 0, None),
        ("staff_id", "bob", 1, 0, None, 1, 2.0),
        ("store", "st1", 1, 1, 100.0, 0, None),
        ("store", "st2", 1, 0, None, 1, 2.0),
    ]  # fmt: skip


@pytest.mark.integration
def test_readonly_queries_cannot_write(migrated: ClickHouse) -> None:
    insert = migrated.sql("INSERT INTO {db}.dead_letters_store (dead_letter_id, version) VALUES ('d1', 1)")
    with pytest.raises(QueryError, match="refused: only") as caught:
        migrated.query(insert, readonly=True)
    assert caught.value.name == "REFUSED"
    with pytest.raises(QueryError, match="SET and USE"):
        migrated.query("SET readonly = 0", readonly=True)
    with pytest.raises(QueryError, match=r"Syntax error.*Expected one of: .* more\)") as caught:
        migrated.query("SELECT 1 +", readonly=True)
    assert "FORMAT Native" not in str(caught.value)
    with pytest.raises(QueryError, match=r"UNKNOWN_TABLE|does not exist"):
        migrated.query(migrated.sql("SELECT * FROM {db}.nope"), readonly=True)
    # no read may lift its limits, reach a file or read another database
    for refused, reason in [
        ("SELECT 1 SETTINGS max_execution_time = 0", "SETTINGS"),
        ("SELECT * FROM file('/etc/hostname', 'LineAsString')", "reaches files"),
        ("SELECT file('/etc/hostname')", "reaches files"),
    ]:
        with pytest.raises(QueryError, match=f"refused: .*{reason}"):
            migrated.query(refused, readonly=True)
    migrated.command("CREATE DATABASE IF NOT EXISTS elsewhere")  # made after the reader opened
    migrated.command("CREATE TABLE IF NOT EXISTS elsewhere.secrets (x UInt8) ENGINE = Memory")
    with pytest.raises(QueryError, match="refused: database 'elsewhere'"):
        migrated.query("SELECT * FROM elsewhere.secrets", readonly=True)
    assert migrated.query("SELECT count() FROM system.one", readonly=True).rows == [(1,)]
    migrated.command(insert)  # the writer handle is untouched by any of it
    assert migrated.query(migrated.sql("SELECT count() FROM {db}.dead_letters")).rows == [(1,)]


@pytest.mark.integration
def test_readonly_queries_run_within_the_limits(settings: Settings) -> None:
    limited = connect(settings.model_copy(update={"query_max_result_rows": 5}))
    try:
        assert len(limited.query("SELECT number FROM numbers(5)", readonly=True).rows) == 5
        with pytest.raises(QueryError, match=r"TOO_MANY_ROWS|Limit for result exceeded"):
            limited.query("SELECT number FROM numbers(6)", readonly=True)
        assert len(limited.query("SELECT number FROM numbers(6)").rows) == 6  # the writer has no such limit
    finally:
        limited.close()


def _post(endpoint: dict[str, Any], route: str, token: str, body: dict[str, Any]) -> int:
    """The HTTP status of a POST to the query server."""
    request = urllib.request.Request(
        f"http://{endpoint['host']}:{endpoint['port']}{route}",
        data=orjson.dumps(body),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.mark.integration
def test_query_server_and_query_any(
    migrated: ClickHouse, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _insert(
        migrated,
        "conversions_store",
        [{"conversion_id": "c1", "occurred_at": T0 + 123, "revenue": 12.5, "version": 3}],
    )
    path = endpoint_file(settings)
    sql = "SELECT conversion_id, occurred_at, revenue, toDecimal64(1.25, 2) AS d FROM {db}.conversions"
    with QueryServer(migrated, path) as server:
        endpoint = json.loads(path.read_text())
        assert endpoint["host"] == "127.0.0.1"
        assert endpoint["port"] == server.port > 0
        assert endpoint["pid"] == os.getpid()
        assert (path.stat().st_mode & 0o777) == 0o600
        # each route has its own token: a reader's token cannot erase, nor the eraser's read
        assert endpoint["token"] != endpoint["erase_token"]
        erase = {"persons": ["p1"], "keys": [], "dry_run": True}
        for route, key, body in [
            ("/erase", "token", erase), ("/query", "erase_token", {"sql": "SELECT 1"}), ("/erase", "", erase)
        ]:  # fmt: skip
            assert _post(endpoint, route, endpoint.get(key, ""), body) == 403, (route, key)
        assert _post(endpoint, "/erase", endpoint["erase_token"], erase) == 200
        assert _post(endpoint, "/query", endpoint["token"], {"sql": "SELECT 1"}) == 200

        def no_direct(_: Settings) -> ClickHouse:
            raise AssertionError("query_any opened the folder instead of asking the server")

        with monkeypatch.context() as patch:
            patch.setattr(query_server_module, "connect", no_direct)
            columns, rows = query_any(settings, sql)
            assert columns == ["conversion_id", "occurred_at", "revenue", "d"]
            assert rows == [("c1", "2023-11-14T22:13:20.123", 12.5, 1.25)]
            with pytest.raises(QueryError, match="Syntax error"):
                query_any(settings, "SELECT 1 +")
            with pytest.raises(QueryError, match="refused: only"):
                query_any(settings, "INSERT INTO {db}.dead_letters_store (dead_letter_id) VALUES ('x')")
            with pytest.raises(QueryError, match=r"refused: .*reaches files"):
                query_any(settings, "SELECT file('/etc/hostname')")
    assert not path.exists()
    # no server: the folder is opened directly (this process already holds it, which chDB allows)
    assert query_any(settings, sql)[1] == [("c1", "2023-11-14T22:13:20.123", 12.5, 1.25)]


@pytest.mark.integration
def test_writes_and_served_reads_share_one_client(migrated: ClickHouse, settings: Settings) -> None:
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for batch in range(20):
                rows = [[f"e{batch}-{i}", T0, T0, 1] for i in range(100)]
                migrated.insert("events_store", rows, ["event_id", "occurred_at", "received_at", "version"])
        except BaseException as exc:
            errors.append(exc)

    with QueryServer(migrated, endpoint_file(settings)):
        writer = threading.Thread(target=write)
        writer.start()
        while writer.is_alive():
            query_any(settings, "SELECT count() FROM {db}.events")
        writer.join()
    assert errors == []
    assert query_any(settings, "SELECT count() FROM {db}.events")[1] == [(2000,)]


@pytest.mark.integration
def test_query_any_from_another_process(migrated: ClickHouse, settings: Settings) -> None:
    env = {
        **os.environ,
        "O2O_STATE_DIR": str(settings.state_dir),
        "O2O_CLICKHOUSE_DSN": settings.clickhouse_dsn,
        "O2O_CLICKHOUSE_DATABASE": settings.clickhouse_database,
    }
    script = (
        "import sys\n"
        "from pipeline.config import load_settings\n"
        "from pipeline.clickhouse import query_any\n"
        "from pipeline.errors import PipelineError\n"
        "try:\n"
        "    print(query_any(load_settings(), 'SELECT count() FROM {db}.events')[1])\n"
        "except PipelineError as exc:\n"
        "    print('ERROR', exc)\n"
    )

    def run() -> str:
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
        )
        return done.stdout.strip()

    with QueryServer(migrated, endpoint_file(settings)):
        assert run() == "[(0,)]"
    answer = run()
    assert answer.startswith("ERROR"), answer
    assert f"held by process {os.getpid()}" in answer


def test_unreachable_server_is_retryable_and_hides_the_password() -> None:
    with pytest.raises(ClickHouseUnavailable) as caught:
        ClickHouse("http://user:secret@127.0.0.1:1", "o2o")
    assert "user:***@127.0.0.1:1" in str(caught.value)
    assert "secret" not in str(caught.value)


def test_render_formats() -> None:
    columns = ["name", "n", "share", "at", "tags"]
    rows = [
        ("a\tb", 3, 0.123456, "2024-01-01T00:00:00", ["x", "y"]),
        ("it's\nnew", 12, 2.0, None, []),
    ]
    table = render(columns, rows, "table", width=100)
    assert "0.1235" in table and " 2 " in table and "NULL" in table and "2 rows" in table
    lines = table.splitlines()
    assert any("name" in line and "share" in line for line in lines)

    tsv = render(columns, rows, "tsv").split("\n")
    assert tsv[0] == "name\tn\tshare\tat\ttags"
    assert tsv[1] == 'a\\tb\t3\t0.123456\t2024-01-01T00:00:00\t["x","y"]'
    assert tsv[2] == "it\\'s\\nnew\t12\t2.0\t\\N\t[]"
    assert len(tsv) == 3

    parsed = orjson.loads(render(columns, rows, "json"))
    assert parsed[0] == dict(zip(columns, rows[0], strict=True))
    assert parsed[1]["at"] is None
    assert render(columns, [], "json") == "[]"
    with pytest.raises(ValueError, match="unknown format"):
        render(columns, rows, "xml")
