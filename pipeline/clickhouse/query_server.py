"""Read-only queries against a chDB folder held by another process.

The embedded engine lets one process open a folder, so the process holding
it (the sink) runs a :class:`QueryServer`: a small HTTP server on 127.0.0.1
that answers ``POST /query`` with ``{"sql": ...}`` by running the query
read-only, and ``POST /erase`` for ``o2o forget``. Its address, pid and two
access tokens, one per route, go to the endpoint file
(``<state_dir>/clickhouse.endpoint``, mode 0600) while it runs: whoever is
given the query token to read (a dashboard, a script) cannot erase with it.

:func:`query_any` is the client side (``o2o sql``, ``o2o report``): it asks
a ClickHouse server directly, else the live query server of the folder, else
opens the folder itself.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import secrets
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from pipeline.clickhouse.client import ClickHouse, QueryError, chdb_folder, connect, folder_holder
from pipeline.clickhouse.format import dumps, jsonable_rows
from pipeline.config import Settings
from pipeline.errors import ClickHouseUnavailable, FatalError, PipelineError
from pipeline.private_files import write_private_file

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAX_BODY = 1_000_000
TOKEN_KEYS = {"/query": "token", "/erase": "erase_token"}  # the endpoint file's key of each route's token
HEALTH_TIMEOUT = 2.0
QUERY_TIMEOUT = 600.0


def endpoint_file(settings: Settings) -> Path:
    """Where the query server of ``settings``' chDB folder announces itself."""
    return settings.state_dir / "clickhouse.endpoint"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, ch: ClickHouse, tokens: dict[str, str]) -> None:
        super().__init__((HOST, 0), _Handler)
        self.ch = ch
        self.tokens = tokens  # route -> the token it needs


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("query server: " + format, *args)

    def _reply(self, status: int, body: Any) -> None:
        payload = dumps(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._reply(
                HTTPStatus.OK, {"ok": True, "pid": os.getpid(), "folder": _folder_text(self.server.ch)}
            )
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}"})

    def do_POST(self) -> None:
        needed = self.server.tokens.get(self.path)
        if needed is None:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}"})
            return
        given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), needed.encode()):
            wanted = f"missing or wrong token ({TOKEN_KEYS[self.path]!r} of the endpoint file)"
            self._reply(HTTPStatus.FORBIDDEN, {"error": wanted})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length <= 0 or length > MAX_BODY:
            self.close_connection = True
            self._reply(
                HTTPStatus.BAD_REQUEST, {"error": f"a JSON body of 1 to {MAX_BODY} bytes is required"}
            )
            return
        try:
            body = orjson.loads(self.rfile.read(length))
        except orjson.JSONDecodeError as exc:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": f"body is not JSON: {exc}"})
            return
        if self.path == "/erase":
            self._erase(body)
            return
        sql = body.get("sql") if isinstance(body, dict) else None
        if not isinstance(sql, str) or not sql.strip():
            self._reply(HTTPStatus.BAD_REQUEST, {"error": 'body must be {"sql": "<query>"}'})
            return
        try:
            result = self.server.ch.query(sql, readonly=True)
        except QueryError as exc:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        except PipelineError as exc:  # unreachable or closed: the caller may try again later
            self._reply(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})
            return
        except Exception as exc:
            log.exception("query server: unexpected error")
            self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {exc}"})
            return
        rows = jsonable_rows(result.rows)
        self._reply(
            HTTPStatus.OK, {"columns": result.column_names, "types": result.column_types, "rows": rows}
        )

    def _erase(self, body: Any) -> None:
        """``o2o forget`` while this process holds chDB: count and delete a person's rows.

        Only statements built by :func:`pipeline.identity.erasure.erase_statements`
        from the request's person ids and identifiers run here, never SQL sent in.
        """
        from pipeline.identity.erasure import Erasure, erase_statements, execute

        if not isinstance(body, dict) or not all(isinstance(body.get(k), list) for k in ("persons", "keys")):
            self._reply(HTTPStatus.BAD_REQUEST, {"error": 'body must be {"persons": [...], "keys": [...]}'})
            return
        erasure = Erasure.of(body["persons"], body["keys"])
        ch = self.server.ch
        try:
            statements = erase_statements(ch.database, erasure, ch.cluster)
            counts = execute(
                lambda sql: ch.query(sql).rows, ch.command, statements, bool(body.get("dry_run"))
            )
        except PipelineError as exc:
            self._reply(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})
            return
        self._reply(HTTPStatus.OK, {"counts": counts})


def _folder_text(ch: ClickHouse) -> str:
    return str(ch.folder) if ch.folder is not None else ""


class QueryServer:
    """Answers read-only queries on ``ch`` over HTTP on 127.0.0.1, announced in ``endpoint_file``."""

    def __init__(self, ch: ClickHouse, endpoint_file: Path) -> None:
        self.ch = ch
        self.endpoint_file = endpoint_file
        self._token = secrets.token_urlsafe(24)
        self._erase_token = secrets.token_urlsafe(24)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on (0 before :meth:`start`)."""
        return self._server.server_address[1] if self._server is not None else 0

    def start(self) -> None:
        """Listen, serve in a daemon thread and write the endpoint file."""
        if self._server is not None:
            return
        try:
            self._server = _Server(self.ch, {"/query": self._token, "/erase": self._erase_token})
        except OSError as exc:
            raise FatalError(f"cannot start the query server on {HOST}: {exc}") from exc
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="clickhouse-query-server", daemon=True
        )
        self._thread.start()
        endpoint = {
            "host": HOST,
            "port": self.port,
            "pid": os.getpid(),
            "token": self._token,
            "erase_token": self._erase_token,
            "folder": _folder_text(self.ch),
        }
        try:
            write_private_file(self.endpoint_file, orjson.dumps(endpoint))
        except OSError as exc:
            self.stop()
            raise FatalError(f"cannot write the endpoint file {self.endpoint_file}: {exc}") from exc
        log.info("query server listening on %s:%d (endpoint %s)", HOST, self.port, self.endpoint_file)

    def stop(self) -> None:
        """Remove the endpoint file (if still ours) and stop serving; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        try:
            current = orjson.loads(self.endpoint_file.read_bytes())
            if isinstance(current, dict) and current.get("token") == self._token:
                self.endpoint_file.unlink()
        except (OSError, orjson.JSONDecodeError):
            pass
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        log.info("query server stopped")

    def __enter__(self) -> QueryServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# -- client side ---------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def read_endpoint(path: Path) -> dict[str, Any] | None:
    """The endpoint file's content if it names a live process, else None."""
    try:
        endpoint = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(endpoint, dict):
        return None
    pid, port = endpoint.get("pid"), endpoint.get("port")
    if not isinstance(pid, int) or not isinstance(port, int) or not _pid_alive(pid):
        return None
    return endpoint


def _url(endpoint: dict[str, Any], path: str) -> str:
    return f"http://{endpoint.get('host', HOST)}:{endpoint['port']}{path}"


def _healthy(endpoint: dict[str, Any]) -> bool:
    try:
        with urllib.request.urlopen(_url(endpoint, "/healthz"), timeout=HEALTH_TIMEOUT) as response:
            answer = orjson.loads(response.read())
    except (OSError, ValueError):
        return False
    return isinstance(answer, dict) and answer.get("pid") == endpoint["pid"]


def query_endpoint(endpoint: dict[str, Any], sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """POST ``sql`` to a query server; QueryError if ClickHouse rejected it."""
    request = urllib.request.Request(
        _url(endpoint, "/query"),
        data=orjson.dumps({"sql": sql}),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {endpoint.get('token', '')}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=QUERY_TIMEOUT) as response:
            answer = orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        message = f"query server answered HTTP {exc.code}"
        with contextlib.suppress(OSError, ValueError, AttributeError):
            message = str(orjson.loads(exc.read())["error"])
        if exc.code in (HTTPStatus.SERVICE_UNAVAILABLE, HTTPStatus.INTERNAL_SERVER_ERROR):
            raise ClickHouseUnavailable(message) from exc
        raise QueryError(message) from exc
    except (OSError, ValueError) as exc:
        raise ClickHouseUnavailable(f"query server at {_url(endpoint, '')} did not answer: {exc}") from exc
    columns = answer.get("columns") if isinstance(answer, dict) else None
    rows = answer.get("rows") if isinstance(answer, dict) else None
    if not isinstance(columns, list) or not isinstance(rows, list):
        raise ClickHouseUnavailable(f"query server at {_url(endpoint, '')} sent an unexpected answer")
    return [str(name) for name in columns], [tuple(row) for row in rows]


def live_endpoint(settings: Settings) -> dict[str, Any] | None:
    """The answering query server of the configured chDB folder, if a process holds it."""
    if not settings.embedded_clickhouse:
        return None
    endpoint = read_endpoint(endpoint_file(settings))
    folder = chdb_folder(settings.clickhouse_dsn)
    same_folder = endpoint is not None and endpoint.get("folder") in ("", None, str(folder))
    return endpoint if endpoint is not None and same_folder and _healthy(endpoint) else None


def erase_any(
    settings: Settings, persons: Sequence[str], keys: Sequence[str], dry_run: bool
) -> dict[str, int]:
    """Count and delete the rows of ``persons`` (and dead letters naming ``keys``) wherever ClickHouse is.

    For chDB held by a running sink, its query server does it; otherwise the
    configured ClickHouse is opened here.
    """
    from pipeline.identity.erasure import Erasure, erase_statements, execute

    endpoint = live_endpoint(settings)
    if endpoint is not None:
        request = urllib.request.Request(
            _url(endpoint, "/erase"),
            data=orjson.dumps({"persons": list(persons), "keys": list(keys), "dry_run": dry_run}),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {endpoint.get(TOKEN_KEYS['/erase'], '')}",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=QUERY_TIMEOUT * 10) as response:
                return {str(k): int(v) for k, v in orjson.loads(response.read())["counts"].items()}
        except (OSError, ValueError, KeyError) as exc:
            raise ClickHouseUnavailable(f"the query server could not erase: {exc}") from exc
    erasure = Erasure.of(persons, keys)
    with connect(settings) as ch:
        statements = erase_statements(settings.clickhouse_database, erasure, settings.clickhouse_cluster)
        return execute(lambda sql: ch.query(sql).rows, ch.command, statements, dry_run)


def query_any(settings: Settings, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``sql`` read-only wherever the configured ClickHouse is; ``{db}`` is replaced.

    Values come back JSON-shaped (datetimes as ISO text, Decimal as float, ...)
    whichever way the query went: a server DSN is queried directly; for chDB the
    live query server of the folder is used, else the folder is opened here and
    closed afterwards.
    """
    return query_many(settings, [sql])[0]


def query_many(settings: Settings, sqls: Sequence[str]) -> list[tuple[list[str], list[tuple[Any, ...]]]]:
    """:func:`query_any` for several queries, opening ClickHouse (or the chDB folder) once for all."""
    statements = [sql.replace("{db}", settings.clickhouse_database) for sql in sqls]
    endpoint = live_endpoint(settings)
    if endpoint is not None:
        log.debug("querying through the query server of pid %s", endpoint["pid"])
        return [query_endpoint(endpoint, sql) for sql in statements]
    try:
        ch = connect(settings)
    except ClickHouseUnavailable as exc:
        folder = chdb_folder(settings.clickhouse_dsn)
        holder = folder_holder(folder) if folder is not None else None
        if holder is None:
            raise
        raise ClickHouseUnavailable(
            f"the chDB folder {folder} is held by process {holder}, which does not answer queries "
            f"(no live query server in {endpoint_file(settings)}); wait for it, stop it, "
            "or run it with its query server"
        ) from exc
    answers = []
    with ch:
        for sql in statements:
            result = ch.query(sql, readonly=True)
            answers.append((result.column_names, jsonable_rows(result.rows)))
    return answers
