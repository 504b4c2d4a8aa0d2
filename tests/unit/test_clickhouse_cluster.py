"""DDL for a ClickHouse cluster (O2O_CLICKHOUSE_CLUSTER): replicated and Distributed tables, ON CLUSTER."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pipeline.clickhouse.client import read_limits
from pipeline.clickhouse.cluster import cluster_statements
from pipeline.clickhouse.migrations import apply_migrations, load_migrations
from pipeline.config import load_settings
from pipeline.errors import ConfigError
from pipeline.identity.erasure import Erasure, erase_statements

ON = "ON CLUSTER 'o2o'"


def test_every_migration_statement_has_a_cluster_form() -> None:
    kinds: dict[str, int] = {}
    for migration in load_migrations():
        for statement in migration.statements:
            spread = cluster_statements(statement, "o2o")
            assert spread and all(ON in s for s in spread), statement
            kind = statement.split("(")[0].split("{db}")[0].strip()
            kinds[kind] = kinds.get(kind, 0) + 1
    assert set(kinds) == {"CREATE TABLE IF NOT EXISTS", "ALTER TABLE", "CREATE OR REPLACE VIEW"}


def test_a_storage_table_becomes_replicated_tables_under_a_distributed_one() -> None:
    statement = """CREATE TABLE IF NOT EXISTS {db}.attribution_store
(
    conversion_id String,
    model LowCardinality(String),
    session_id String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(converted_at)
ORDER BY (conversion_id, model, session_id)"""
    local, distributed = cluster_statements(statement, "o2o")
    assert local.startswith(f"CREATE TABLE IF NOT EXISTS {{db}}.attribution_store_local {ON}\n(")
    assert "ENGINE = ReplicatedReplacingMergeTree(version)" in local
    assert "PARTITION BY toYYYYMM(converted_at)" in local and "model LowCardinality(String)" in local
    assert distributed == (
        f"CREATE TABLE IF NOT EXISTS {{db}}.attribution_store {ON} AS {{db}}.attribution_store_local\n"
        "ENGINE = Distributed('o2o', '{db}', 'attribution_store_local', "
        "cityHash64((conversion_id, model, session_id)))"
    )  # every version of a row on one shard: FINAL keeps the newest there


def test_columns_are_added_to_both_and_views_are_made_everywhere() -> None:
    add = "ADD COLUMN IF NOT EXISTS late UInt8 DEFAULT 0 AFTER properties"
    assert cluster_statements(f"ALTER TABLE {{db}}.events_store\n    {add}", "o2o") == [
        f"ALTER TABLE {{db}}.events_store_local {ON} {add}",
        f"ALTER TABLE {{db}}.events_store {ON} {add}",
    ]
    view = "CREATE OR REPLACE VIEW {db}.events AS\nSELECT * FROM {db}.events_store FINAL"
    assert cluster_statements(view, "o2o") == [
        f"CREATE OR REPLACE VIEW {{db}}.events {ON} AS\nSELECT * FROM {{db}}.events_store FINAL"
    ]
    with pytest.raises(ValueError, match="cannot spread over a cluster: ALTER TABLE"):
        cluster_statements("ALTER TABLE {db}.events_store DELETE WHERE 1", "o2o")
    with pytest.raises(ValueError, match="cannot spread over a cluster: OPTIMIZE"):
        cluster_statements("OPTIMIZE TABLE {db}.events_store FINAL", "o2o")


def test_forget_deletes_from_the_replicated_tables_of_every_node() -> None:
    erasure = Erasure(["email:x"], persons={"p1"}, person_ids={"p1"}, identifiers={"email:x"})
    single = {table: delete for table, _count, delete in erase_statements("o2o", erasure)}
    spread = {table: delete for table, _count, delete in erase_statements("o2o", erasure, "o2o")}
    assert single["events_store"].startswith("ALTER TABLE o2o.events_store DELETE WHERE")
    assert spread["events_store"].startswith(f"ALTER TABLE o2o.events_store_local {ON} DELETE WHERE")
    assert set(single) == set(spread)


def test_the_cluster_setting_needs_a_server_and_reads_run_global_subqueries() -> None:
    with pytest.raises(ConfigError, match="O2O_CLICKHOUSE_CLUSTER needs a ClickHouse server DSN"):
        load_settings(clickhouse_cluster="o2o")
    with pytest.raises(ConfigError, match="O2O_CLICKHOUSE_CLUSTER"):
        load_settings(clickhouse_cluster="o2o; DROP", clickhouse_dsn="http://ch:8123")
    settings = load_settings(clickhouse_cluster="o2o", clickhouse_dsn="http://ch:8123")
    assert read_limits(settings)["distributed_product_mode"] == "global"
    assert "distributed_product_mode" not in read_limits(load_settings())


class RecordingClickHouse:
    """Stands for the ClickHouse client: records what the migrations run."""

    def __init__(self, cluster: str) -> None:
        self.database, self.cluster = "o2o", cluster
        self.commands: list[str] = []

    def sql(self, text: str) -> str:
        return text.replace("{db}", self.database)

    def command(self, sql: str, settings: Any = None) -> str:
        self.commands.append(sql)
        return ""

    def use_database(self) -> None:
        return

    def query(self, _sql: str) -> Any:
        class Result:
            rows: list[tuple[Any, ...]] = [(0,)]

        return Result()

    def insert(self, *_args: Any, **_kwargs: Any) -> int:
        return 1


def test_migrations_on_a_cluster_run_every_statement_on_cluster() -> None:
    ch = RecordingClickHouse("o2o")
    applied = apply_migrations(ch)  # type: ignore[arg-type]
    assert applied == [m.version for m in load_migrations()]
    assert ch.commands[0] == f"CREATE DATABASE IF NOT EXISTS o2o {ON}"
    assert (
        "ReplicatedReplacingMergeTree('/clickhouse/o2o/o2o/schema_migrations', '{replica}'" in ch.commands[1]
    )
    assert all(ON in c for c in ch.commands), [c for c in ch.commands if ON not in c][:1]
    tables = {m[1] for c in ch.commands for m in [re.match(r"CREATE TABLE IF NOT EXISTS o2o\.(\w+)", c)] if m}
    stores = {t for t in tables if t.endswith("_store")}
    assert stores and {f"{t}_local" for t in stores} <= tables  # each storage table: local + Distributed
    single = RecordingClickHouse("")
    apply_migrations(single)  # type: ignore[arg-type]
    assert not any(
        "ON CLUSTER" in c or "Replicated" in c for c in single.commands
    )  # the single node as it was


def test_the_cluster_example_names_each_node_once_with_its_own_shard_and_replica() -> None:
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "deploy" / "clickhouse-cluster"
    config = (folder / "cluster.xml").read_text()
    shards = re.findall(r"<shard>(.*?)</shard>", config, re.S)
    assert "<o2o>" in config and len(shards) == 2
    compose = (folder / "docker-compose.yml").read_text()
    for number, shard in enumerate(shards, start=1):
        hosts = re.findall(r"<host>(ch-[\d-]+)</host>", shard)
        assert len(hosts) == 2
        for host in hosts:
            macros = (folder / "macros" / f"{host}.xml").read_text()
            assert f"<shard>{number}</shard>" in macros and f"<replica>{host}</replica>" in macros
            assert f"./macros/{host}.xml:/etc/clickhouse-server/config.d/macros.xml:ro" in compose
            assert f"  {host}:\n    <<: *clickhouse\n    hostname: {host}\n" in compose
