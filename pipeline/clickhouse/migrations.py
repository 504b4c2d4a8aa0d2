"""Schema migrations: the ``NNNN_name.sql`` files of ``deploy/clickhouse``, applied once each, in order.

Each file holds statements separated by ``;`` (``--`` and ``/* */`` comments
allowed) with ``{db}`` standing for the database name. Applied files are
recorded in ``{db}.schema_migrations`` with a checksum of their statements
(comments and surrounding whitespace do not count); a recorded file whose
statements changed afterwards is an error -- add a new file instead.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.clickhouse.client import ClickHouse, QueryError
from pipeline.clickhouse.cluster import cluster_statements, database_statement, migrations_table_statement
from pipeline.errors import MigrationError

log = logging.getLogger(__name__)

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "deploy" / "clickhouse"
MIGRATIONS_TABLE = "schema_migrations"
_FILE_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_.-]+\.sql$")


@dataclass(frozen=True)
class Migration:
    """One migration file: its version (the file stem, e.g. ``0001_storage``) and statements."""

    version: str
    path: Path
    statements: tuple[str, ...]
    checksum: str


def split_statements(text: str) -> list[str]:
    """Split SQL text on ``;`` outside quotes, dropping ``--`` and ``/* */`` comments and empty statements."""
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"`":
            end = i + 1
            while end < n and text[end] != ch:
                end += 2 if text[end] == "\\" else 1
            current.append(text[i : end + 1])
            i = end + 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            current.append(" ")
        elif ch == ";":
            statements.append("".join(current))
            current = []
            i += 1
        else:
            current.append(ch)
            i += 1
    statements.append("".join(current))
    cleaned = ("\n".join(line.rstrip() for line in s.splitlines() if line.strip()) for s in statements)
    return [s for s in cleaned if s]


def statements_checksum(statements: tuple[str, ...] | list[str]) -> str:
    """SHA-256 of the statements, insensitive to comments, indentation and blank lines."""
    normal = ("\n".join(line.strip() for line in s.splitlines()) for s in statements)
    return hashlib.sha256("\n;\n".join(normal).encode()).hexdigest()


def load_migrations(folder: Path = DEFAULT_FOLDER) -> list[Migration]:
    """The migration files of ``folder``, sorted by number; MigrationError if none or numbers repeat."""
    if not folder.is_dir():
        raise MigrationError(f"migrations folder {folder} does not exist")
    migrations: list[Migration] = []
    seen: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        match = _FILE_NAME.match(path.name)
        if not match or not path.is_file():
            continue
        number = match.group(1)
        if number in seen:
            raise MigrationError(f"migrations {seen[number].name} and {path.name} have the same number")
        seen[number] = path
        try:
            statements = tuple(split_statements(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise MigrationError(f"cannot read migration {path}: {exc}") from exc
        migrations.append(Migration(path.stem, path, statements, statements_checksum(statements)))
    if not migrations:
        raise MigrationError(f"no NNNN_name.sql migration files in {folder}")
    return migrations


def applied_migrations(ch: ClickHouse) -> dict[str, str]:
    """Version -> checksum of the migrations recorded in the database (empty if none)."""
    exists = ch.query(f"EXISTS TABLE {ch.database}.{MIGRATIONS_TABLE}").rows
    if not exists or not exists[0][0]:
        return {}
    result = ch.query(
        ch.sql(
            f"SELECT version, argMax(checksum, applied_at) FROM {{db}}.{MIGRATIONS_TABLE} GROUP BY version"
        )
    )
    return {str(version): str(checksum) for version, checksum in result.rows}


def apply_migrations(ch: ClickHouse, folder: Path = DEFAULT_FOLDER) -> list[str]:
    """Create the database and apply the migrations of ``folder`` not applied yet; return their versions.

    Idempotent. Raises MigrationError when a statement fails or an applied file was
    changed; ClickHouseUnavailable (retryable) when ClickHouse cannot be reached.
    """
    migrations = load_migrations(folder)
    try:
        if ch.cluster:
            ch.command(database_statement(ch.database, ch.cluster))
        else:
            ch.command(f"CREATE DATABASE IF NOT EXISTS {ch.database}")
        ch.use_database()
        ch.command(
            ch.sql(
                migrations_table_statement(ch.cluster, MIGRATIONS_TABLE)
                if ch.cluster
                else f"CREATE TABLE IF NOT EXISTS {{db}}.{MIGRATIONS_TABLE} "
                "(version String, checksum String, applied_at DateTime64(3, 'UTC')) "
                "ENGINE = ReplacingMergeTree(applied_at) ORDER BY version"
            )
        )
        applied = applied_migrations(ch)
    except QueryError as exc:
        raise MigrationError(f"cannot prepare database {ch.database} for migrations: {exc}") from exc
    known = {m.version for m in migrations}
    for version in sorted(set(applied) - known):
        log.warning("database %s has migration %s applied, which is not in %s", ch.database, version, folder)
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is not None and recorded != migration.checksum:
            raise MigrationError(
                f"migration {migration.path.name} changed after it was applied to database {ch.database} "
                f"(checksum {recorded[:12]} recorded, {migration.checksum[:12]} now); "
                "restore the file and put the change in a new migration"
            )
    newly: list[str] = []
    for migration in migrations:
        if migration.version in applied:
            continue
        _apply(ch, migration)
        newly.append(migration.version)
    if newly:
        log.info("database %s: applied migrations %s", ch.database, ", ".join(newly))
    else:
        log.debug("database %s: migrations up to date", ch.database)
    return newly


def _apply(ch: ClickHouse, migration: Migration) -> None:
    log.info("applying migration %s to database %s", migration.path.name, ch.database)
    for number, statement in enumerate(migration.statements, start=1):
        try:
            # on a cluster: the same statement ON CLUSTER, a storage table as replicated + Distributed
            for each in cluster_statements(statement, ch.cluster) if ch.cluster else [statement]:
                ch.command(ch.sql(each))
        except (QueryError, ValueError) as exc:
            first_line = statement.splitlines()[0]
            raise MigrationError(
                f"migration {migration.path.name}, statement {number} ({first_line}) failed: {exc}"
            ) from exc
    try:
        ch.insert(
            MIGRATIONS_TABLE,
            [[migration.version, migration.checksum, int(time.time() * 1000)]],
            column_names=["version", "checksum", "applied_at"],
        )
    except QueryError as exc:
        raise MigrationError(f"cannot record migration {migration.path.name}: {exc}") from exc
