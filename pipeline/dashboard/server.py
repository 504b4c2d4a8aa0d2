"""``o2o dashboard``: the dashboard's pages over HTTP, read-only, on 127.0.0.1 by default.

GET only; every page is built from ClickHouse at request time (see
:mod:`pipeline.dashboard.build`), one request at a time. The filters are the
URL's query string. Responses forbid scripts and outside resources
(Content-Security-Policy), which the pages do not need.
"""

from __future__ import annotations

import logging
import threading
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from pipeline.config import Settings
from pipeline.dashboard.build import render_served_page
from pipeline.dashboard.filters import FilterError, Filters
from pipeline.dashboard.html import document
from pipeline.dashboard.pages import SLUGS
from pipeline.errors import PipelineError, RetryableError

log = logging.getLogger(__name__)

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class DashboardServer(ThreadingHTTPServer):
    """Serves the dashboard of ``settings``' database until :meth:`shutdown`."""

    daemon_threads = True

    def __init__(self, settings: Settings, host: str, port: int) -> None:
        super().__init__((host, port), _Handler)
        self.settings = settings
        self.lock = threading.Lock()  # one page at a time: the chDB folder opens once per process

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request's ``Host`` names this server (loopback only: DNS rebinding gets nothing)."""
        host, port = str(self.server_address[0]), self.server_address[1]
        if host not in ("127.0.0.1", "::1", "localhost"):
            return True  # listening on another address: its names are not known here
        return header in {f"{name}:{port}" for name in ("127.0.0.1", "localhost", "[::1]")}

    @property
    def url(self) -> str:
        """Where it listens."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if not self.server.host_allowed(self.headers.get("Host")):
            self._error(HTTPStatus.FORBIDDEN, "This dashboard answers requests to its loopback address only.")
            return
        if url.path == "/healthz":
            self._send(HTTPStatus.OK, "ok", "text/plain; charset=utf-8")
            return
        slug = url.path.strip("/") or "overview"
        if slug not in SLUGS:
            self._error(
                HTTPStatus.NOT_FOUND,
                f"No page {url.path!r}; the pages are /, " + ", ".join(f"/{s}" for s in SLUGS[1:]),
            )
            return
        params = {key: values[0] for key, values in parse_qs(url.query).items()}
        settings = self.server.settings
        try:
            filters = Filters.parse(params, settings.models)
            with self.server.lock:
                page = render_served_page(settings, slug, filters)
        except FilterError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
            return
        except RetryableError as exc:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"ClickHouse is not available: {exc}")
            return
        except PipelineError as exc:
            log.exception("dashboard: %s failed", self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))
            return
        self._send(HTTPStatus.OK, page)

    def _error(self, status: HTTPStatus, message: str) -> None:
        nav = [("/", "Overview", False)]
        content = (
            f'<h1 class="page">{status.value} {status.phrase}</h1>'
            f'<p class="error" role="alert">{escape(message)}</p>'
        )
        self._send(status, document(f"{status.phrase} · O2O dashboard", "", nav, content))

    def _send(self, status: HTTPStatus, body: str, content_type: str = "text/html; charset=utf-8") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("dashboard: " + format, *args)
