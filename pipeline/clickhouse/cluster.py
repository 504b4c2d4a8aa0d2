"""The migrations' DDL for a ClickHouse cluster (``O2O_CLICKHOUSE_CLUSTER``): pure text, no connection.

On one server the migrations run as written. On a cluster each statement
becomes its ``ON CLUSTER`` form (:func:`cluster_statements`):

* a storage table ``{db}.X`` (``ReplacingMergeTree``) becomes a replicated
  table ``{db}.X_local`` on every node (``ReplicatedReplacingMergeTree``,
  the server's default replica path and name: Atomic databases give every
  replica of an ``ON CLUSTER`` table the same UUID), plus ``{db}.X``, a
  ``Distributed`` table over them with the same columns, sharded by a hash of
  the table's sorting key: every version of a row lands on one shard, so
  ``FINAL`` (the views') keeps the newest version there. The sink inserts
  into ``{db}.X`` and the views read it, both unchanged;
* ``ALTER TABLE {db}.X ADD COLUMN ...`` is applied to both;
* views and the database are created ``ON CLUSTER``.

The pipeline's deletes (``o2o forget``) go to the ``_local`` tables
(:func:`delete_target`); inserts wait until every shard has the rows
(:data:`INSERT_SETTINGS`), and reads send sub-queries of views whole to
every shard (:data:`READ_SETTINGS`).
"""

from __future__ import annotations

import re

LOCAL_SUFFIX = "_local"

INSERT_SETTINGS = {"insert_distributed_sync": 1}
"""An insert into a Distributed table returns once every shard has its rows (the sink then commits)."""

READ_SETTINGS = {"distributed_product_mode": "global"}
"""The views' ``IN (SELECT ...)`` and joins over Distributed tables run as GLOBAL ones."""

_CREATE_TABLE = re.compile(
    r"^CREATE TABLE IF NOT EXISTS (?P<table>\{db\}\.\w+)\s*(?P<columns>\(.*\))\s*"
    r"ENGINE\s*=\s*ReplacingMergeTree\((?P<args>[^)]*)\)(?P<rest>.*)$",
    re.S,
)
_ORDER_BY = re.compile(r"ORDER BY\s+(\([^)]*\)|\w+)")
_ALTER = re.compile(r"^ALTER TABLE (?P<table>\{db\}\.\w+)\s+(?P<action>.*)$", re.S)
_VIEW = re.compile(r"^CREATE OR REPLACE VIEW (?P<view>\{db\}\.\w+)\s+AS\b", re.S)


def quoted(name: str) -> str:
    """A cluster name as a ClickHouse string literal."""
    return "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def cluster_statements(statement: str, cluster: str) -> list[str]:
    """The statements that do what ``statement`` (a migration's, ``{db}`` still in it) does, on ``cluster``.

    Raises ValueError for a statement this module does not know how to
    spread: a new kind of migration statement needs a rule here.
    """
    on = f"ON CLUSTER {quoted(cluster)}"
    text = statement.strip()
    table = _CREATE_TABLE.match(text)
    if table is not None:
        name, rest = table["table"], table["rest"]
        order = _ORDER_BY.search(rest)
        if order is None:
            raise ValueError(f"{name}: no ORDER BY to shard by")
        local = name + LOCAL_SUFFIX
        bare_local = local.split(".", 1)[1]
        return [
            f"CREATE TABLE IF NOT EXISTS {local} {on}\n{table['columns']}\n"
            f"ENGINE = ReplicatedReplacingMergeTree({table['args']}){rest}",
            f"CREATE TABLE IF NOT EXISTS {name} {on} AS {local}\n"
            f"ENGINE = Distributed({quoted(cluster)}, '{{db}}', '{bare_local}', cityHash64({order[1]}))",
        ]
    alter = _ALTER.match(text)
    if alter is not None:
        if not re.match(r"(ADD|MODIFY|DROP|COMMENT) COLUMN\b", alter["action"].strip()):
            raise ValueError(f"cannot spread over a cluster: {text.splitlines()[0]}")
        name = alter["table"]
        return [f"ALTER TABLE {t} {on} {alter['action']}" for t in (name + LOCAL_SUFFIX, name)]
    view = _VIEW.match(text)
    if view is not None:
        return [f"CREATE OR REPLACE VIEW {view['view']} {on} AS" + text[view.end() :]]
    raise ValueError(f"cannot spread over a cluster: {text.splitlines()[0]}")


def database_statement(database: str, cluster: str) -> str:
    """``CREATE DATABASE`` of the pipeline's database on every node."""
    return f"CREATE DATABASE IF NOT EXISTS {database} ON CLUSTER {quoted(cluster)}"


def migrations_table_statement(cluster: str, table: str) -> str:
    """The table of applied migrations: one replicated table that every node of every shard shares.

    Sharded like the others, a node would see only its shard's record and
    apply migrations again; here every replica path is the same.
    """
    return (
        f"CREATE TABLE IF NOT EXISTS {{db}}.{table} ON CLUSTER {quoted(cluster)} "
        "(version String, checksum String, applied_at DateTime64(3, 'UTC')) "
        f"ENGINE = ReplicatedReplacingMergeTree('/clickhouse/o2o/{{db}}/{table}', '{{replica}}', applied_at) "
        "ORDER BY version"
    )


def delete_target(table: str, cluster: str) -> str:
    """Where a delete of ``table``'s rows goes: its ``_local`` tables on every node."""
    return f"{table}{LOCAL_SUFFIX} ON CLUSTER {quoted(cluster)}"
