"""A thread-safe ClickHouse handle over clickhouse-connect, for chDB folders and servers alike.

:func:`connect` opens the configured target: ``chdb://<folder>`` runs the
embedded engine in this process (one folder per process, and one process per
folder), ``http(s)://host:8123`` talks to a server. Errors come back as the
pipeline's own: :class:`~pipeline.errors.ClickHouseUnavailable` when ClickHouse
cannot be reached or is briefly overloaded (retry), :class:`QueryError` when
ClickHouse rejected the statement itself (bad SQL, unknown table, read-only
violation, ...).

Writes and read-only queries use two separate client handles: settings of
one analyst's query (or a ``SET`` it sneaks in) can never leak into the
sink's inserts, and each handle has its own lock so threads may share one
:class:`ClickHouse`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import (
    ClickHouseError,
    DataError,
    InterfaceError,
    NotSupportedError,
    ProgrammingError,
)

from pipeline.clickhouse.cluster import INSERT_SETTINGS, READ_SETTINGS
from pipeline.clickhouse.query_guard import CATALOG_DATABASES, QueryRefused, check_read_query, qualifiers
from pipeline.config import Settings
from pipeline.errors import ClickHouseUnavailable, ConfigError, FatalError, PipelineError
from pipeline.private_files import private_dir, read_secret

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10
RECEIVE_TIMEOUT = 300
READONLY_SETTINGS = {"readonly": 2}  # 2: reads may still tune settings (max_threads, ...), never write

# Server error codes that say "not now" rather than "never": retry them.
RETRYABLE_CODES = frozenset(
    {
        3,  # UNEXPECTED_END_OF_FILE
        159,  # TIMEOUT_EXCEEDED
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        236,  # ABORTED
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        252,  # TOO_MANY_PARTS
        285,  # TOO_FEW_LIVE_REPLICAS
        319,  # UNKNOWN_STATUS_OF_INSERT
        425,  # SYSTEM_ERROR
        439,  # CANNOT_SCHEDULE_TASK
        999,  # KEEPER_EXCEPTION
        1000,  # POCO_EXCEPTION
    }
)
# ClickHouse's own storage failing (a full, read-only or unmounted disk) comes back as
# STD_EXCEPTION wrapping a C++ filesystem error: the statement was fine, retry it.
STORAGE_FAILURE = re.compile(r"filesystem error")
_CALLER_ERRORS = (ProgrammingError, DataError, NotSupportedError, InterfaceError)
_SESSION_STATEMENT = re.compile(r"^\s*(?:(?:--[^\n]*(?:\n|$)|/\*.*?\*/)\s*)*(SET|USE)\b", re.I | re.S)
_BACKEND_CLAUSES = re.compile(r"\s*SETTINGS readonly = '\d'|\n FORMAT Native")
_EXPECTED = re.compile(r"Expected one of: ([^.]*)")
_MAX_EXPECTED = 8
_VERSION_TRAILER = re.compile(r"\s*\(version\s+(?:[^()]|\([^()]*\))*\)")
_MAX_MESSAGE = 1500


class QueryError(FatalError):
    """ClickHouse rejected a statement: bad SQL, unknown table or column, read-only violation, ...

    ``code`` and ``name`` are ClickHouse's error code and symbolic name when known.
    """

    def __init__(self, message: str, code: int | None = None, name: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.name = name


@dataclass(frozen=True)
class QueryResult:
    """The result of :meth:`ClickHouse.query`: column names, ClickHouse type names, row tuples."""

    column_names: list[str]
    column_types: list[str]
    rows: list[tuple[Any, ...]]


def chdb_folder(dsn: str) -> Path | None:
    """The data folder of a ``chdb://`` DSN (None for an in-memory engine or a server DSN)."""
    if not dsn.startswith("chdb://"):
        return None
    location = dsn[len("chdb://") :].split("?", 1)[0]
    if location in ("", "memory", ":memory:"):
        return None
    return Path(location).expanduser().resolve()


def display_dsn(dsn: str) -> str:
    """The DSN without its password, fit for messages and logs."""
    if dsn.startswith("chdb://"):
        return dsn
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def folder_holder(folder: Path) -> int | None:
    """The pid of the process holding a chDB folder, from the engine's ``status`` file, if any."""
    try:
        text = (folder / "status").read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"^PID:\s*(\d+)", text, re.M)
    return int(match.group(1)) if match else None


def _shorten_expected(match: re.Match[str]) -> str:
    items = match.group(1).split(", ")
    more = f" (and {len(items) - _MAX_EXPECTED} more)" if len(items) > _MAX_EXPECTED else ""
    return "Expected one of: " + ", ".join(items[:_MAX_EXPECTED]) + more


def clean_message(exc: BaseException) -> str:
    """ClickHouse's error text without the server version trailer and the clauses the driver appends."""
    text = _BACKEND_CLAUSES.sub("", str(exc))
    text = _VERSION_TRAILER.sub("", text).strip()
    text = _EXPECTED.sub(_shorten_expected, text)
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE] + " ..."
    return text


def translate(exc: Exception, what: str) -> PipelineError:
    """Map a clickhouse-connect (or socket) error to ClickHouseUnavailable or QueryError."""
    message = f"{what}: {clean_message(exc)}"
    if isinstance(exc, ClickHouseError):
        code: int | None = getattr(exc, "code", None)
        name: str | None = getattr(exc, "name", None)
        if code in RETRYABLE_CODES or (code == 1001 and STORAGE_FAILURE.search(str(exc))):
            return ClickHouseUnavailable(message)
        if code is None and not isinstance(exc, _CALLER_ERRORS):
            return ClickHouseUnavailable(message)  # transport failure: no answer from ClickHouse
        return QueryError(message, code=code, name=name)
    if isinstance(exc, OSError):
        return ClickHouseUnavailable(message)
    return QueryError(message)


def _read_settings(client: Client, limits: Mapping[str, Any]) -> dict[str, Any]:
    """READONLY_SETTINGS and ``limits``, or nothing when the user is read-only already.

    A read-only user may not change any setting: its server profile sets the limits then.
    """
    current = getattr(client, "server_settings", {}).get("readonly")
    if current is not None and str(getattr(current, "value", "0")) not in ("", "0"):
        return {}
    return {**READONLY_SETTINGS, **limits}


def _strip_statement(sql: str) -> str:
    return sql.strip().rstrip(";").rstrip()


class ClickHouse:
    """One ClickHouse target and database, shareable between threads.

    ``dsn`` is ``chdb://<folder>`` (the folder is created) or ``http(s)://...``;
    ``database`` is the pipeline's database, substituted for ``{db}`` by :meth:`sql`
    and used for unqualified table names in :meth:`insert` (and, once it exists,
    in queries).
    """

    def __init__(
        self, dsn: str, database: str, read_limits: Mapping[str, Any] | None = None, cluster: str = ""
    ) -> None:
        self.dsn = dsn
        self.database = database
        self.cluster = cluster  # O2O_CLICKHOUSE_CLUSTER: migrations and deletes go ON CLUSTER
        self.read_limits = dict(read_limits or {})
        self._databases: frozenset[str] = frozenset()
        self.embedded = dsn.startswith("chdb://")
        self.folder = chdb_folder(dsn)
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._closed = False
        self._reader: Client | None = None
        self._read_settings: dict[str, Any] = dict(READONLY_SETTINGS)
        self._writer: Client = self._open()

    def __repr__(self) -> str:
        return f"ClickHouse({display_dsn(self.dsn)!r}, database={self.database!r})"

    # -- connection ------------------------------------------------------------------

    def _open(self) -> Client:
        target = display_dsn(self.dsn)
        try:
            if self.embedded:
                client = self._open_chdb()
            else:
                client = clickhouse_connect.get_client(
                    dsn=self.dsn,
                    connect_timeout=CONNECT_TIMEOUT,
                    send_receive_timeout=RECEIVE_TIMEOUT,
                    autogenerate_session_id=False,
                )
        except PipelineError:
            raise
        except Exception as exc:
            raise translate(exc, f"cannot connect to ClickHouse at {target}") from exc
        try:
            exists = client.command(f"EXISTS DATABASE {self.database}")
            if str(exists).strip() == "1":
                client.database = self.database
        except Exception as exc:
            client.close()
            raise translate(exc, f"cannot use ClickHouse at {target}") from exc
        log.debug("connected to ClickHouse at %s", target)
        return client

    def _open_chdb(self) -> Client:
        folder = self.folder
        if folder is None:
            return clickhouse_connect.get_client(interface="chdb", path=":memory:")
        try:
            private_dir(folder)
        except OSError as exc:
            raise FatalError(f"cannot create the chDB folder {folder}: {exc}") from exc
        try:
            return clickhouse_connect.get_client(interface="chdb", path=str(folder))
        except ProgrammingError as exc:
            text = str(exc)
            if "already initialized with path" in text:
                raise FatalError(
                    f"cannot open the chDB folder {folder}: this process already runs the embedded "
                    f"engine on another folder (one chDB folder per process): {clean_message(exc)}"
                ) from exc
            holder = folder_holder(folder)
            if holder is not None:
                raise ClickHouseUnavailable(
                    f"the chDB folder {folder} is in use by another process (pid {holder}); "
                    "only one process may open it at a time"
                ) from exc
            raise ClickHouseUnavailable(
                f"cannot open the chDB folder {folder}: {clean_message(exc)}"
            ) from exc

    def use_database(self) -> None:
        """Make the pipeline database the default of every handle (call once it exists)."""
        with self._lock:
            self._check_open()
            self._writer.database = self.database
        with self._read_lock:
            if self._reader is not None:
                self._reader.database = self.database

    def _check_open(self) -> None:
        if self._closed:
            raise FatalError(f"the ClickHouse client for {display_dsn(self.dsn)} is closed")

    def close(self) -> None:
        """Close both handles; idempotent. For chDB, the folder is released once every handle is closed."""
        with self._lock, self._read_lock:
            if self._closed:
                return
            self._closed = True
            for client in (self._reader, self._writer):
                if client is None:
                    continue
                try:
                    client.close()
                except Exception:
                    log.debug("error closing a ClickHouse handle", exc_info=True)
            self._reader = None
        log.debug("closed ClickHouse at %s", display_dsn(self.dsn))

    def __enter__(self) -> ClickHouse:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- statements ------------------------------------------------------------------

    def sql(self, text: str) -> str:
        """``text`` with every ``{db}`` replaced by the database name."""
        return text.replace("{db}", self.database)

    def command(self, sql: str, settings: Mapping[str, Any] | None = None) -> str:
        """Run a statement without a result set (DDL, INSERT ... SELECT, ...); return ClickHouse's answer."""
        statement = _strip_statement(sql)
        with self._lock:
            self._check_open()
            try:
                answer = self._writer.command(statement, settings=dict(settings) if settings else None)
            except Exception as exc:
                raise translate(exc, "ClickHouse statement failed") from exc
        if isinstance(answer, (str, int)):
            return str(answer)
        if isinstance(answer, Sequence):
            return "\t".join(str(part) for part in answer)
        return ""

    def query(
        self,
        sql: str,
        parameters: Mapping[str, Any] | Sequence[Any] | None = None,
        readonly: bool = False,
    ) -> QueryResult:
        """Run a query and return all of its rows.

        With ``readonly=True`` the query runs on a separate handle with ClickHouse's
        ``readonly`` setting and the :attr:`read_limits`, so it cannot write, and only
        statements :func:`~pipeline.clickhouse.query_guard.check_read_query` lets
        through run (``SET``/``USE`` never).
        """
        statement = _strip_statement(sql)
        if not statement:
            raise QueryError("empty query")
        params: Any = dict(parameters) if isinstance(parameters, Mapping) else parameters
        if readonly:
            if _SESSION_STATEMENT.match(statement):
                raise QueryError("SET and USE statements are not allowed in read-only queries")
            with self._read_lock:
                self._check_open()
                if self._reader is None:
                    self._reader = self._open()
                    self._read_settings = _read_settings(self._reader, self.read_limits)
                self._guard(statement)
                try:
                    result = self._reader.query(statement, parameters=params, settings=self._read_settings)
                except Exception as exc:
                    raise translate(exc, "ClickHouse query failed") from exc
        else:
            with self._lock:
                self._check_open()
                try:
                    result = self._writer.query(statement, parameters=params)
                except Exception as exc:
                    raise translate(exc, "ClickHouse query failed") from exc
        return QueryResult(
            column_names=list(result.column_names),
            column_types=[column_type.name for column_type in result.column_types],
            rows=[tuple(row) for row in result.result_rows],
        )

    def _guard(self, statement: str) -> None:
        """Refuse what the read-only path must not run (the server's databases are read when needed)."""
        try:
            if qualifiers(statement) - {self.database, *CATALOG_DATABASES} - self._databases:
                # a name that may be a database created since: read the list again
                assert self._reader is not None
                names = self._reader.query("SHOW DATABASES").result_rows
                self._databases = frozenset(str(row[0]) for row in names)
            check_read_query(statement, [self.database], self._databases)
        except QueryRefused as exc:
            raise QueryError(f"refused: {exc}", name="REFUSED") from None

    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        column_names: Sequence[str],
    ) -> int:
        """Insert ``rows`` (values in ``column_names`` order) into ``table``; returns the row count.

        An unqualified ``table`` is in the pipeline database. DateTime64 columns take
        epoch milliseconds as ints.
        """
        if not rows:
            return 0
        database = None if "." in table else self.database
        with self._lock:
            self._check_open()
            try:
                self._writer.insert(
                    table, rows, column_names=list(column_names), database=database,
                    settings=dict(INSERT_SETTINGS) if self.cluster else None,
                )  # fmt: skip
            except (TypeError, ValueError, OverflowError) as exc:
                raise QueryError(f"cannot insert into {table}: bad row values: {exc}") from exc
            except Exception as exc:
                raise translate(exc, f"insert into {table} failed") from exc
        return len(rows)


def connect(settings: Settings) -> ClickHouse:
    """Open the configured ClickHouse (``settings.clickhouse_dsn``, ``settings.clickhouse_database``)."""
    return ClickHouse(
        server_dsn(settings), settings.clickhouse_database, read_limits(settings), settings.clickhouse_cluster
    )


def server_dsn(settings: Settings) -> str:
    """The DSN to connect with: ``clickhouse_dsn``, with the password of ``clickhouse_password_file`` if set.

    The file is read at every connection, so a rotated secret is used by the next one.
    """
    if settings.clickhouse_password_file is None:
        return settings.clickhouse_dsn
    try:
        password = read_secret(settings.clickhouse_password_file, "O2O_CLICKHOUSE_PASSWORD_FILE")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    parts = urlsplit(settings.clickhouse_dsn)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    netloc = f"{quote(parts.username or 'default', safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def read_limits(settings: Settings) -> dict[str, Any]:
    """ClickHouse settings that bound a read-only query: time, memory and result size."""
    limits: dict[str, Any] = {
        "max_execution_time": settings.query_max_seconds,
        "max_memory_usage": settings.query_max_memory_mb << 20,
        "max_result_rows": settings.query_max_result_rows,
        "result_overflow_mode": "throw",
    }
    return limits | (READ_SETTINGS if settings.clickhouse_cluster else {})
