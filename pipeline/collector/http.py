"""HTTP plumbing of the collector: error responses, Basic auth, gzip bodies."""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response


class HTTPProblem(Exception):
    """A request-level failure, answered as ``{"error": ..., "detail": ...}`` with ``status``."""

    def __init__(
        self, status: int, error: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = dict(headers or {})
        if status == 401:
            self.headers["WWW-Authenticate"] = 'Basic realm="o2o collector"'

    def response(self) -> Response:
        """The JSON error response."""
        return json_response(self.status, {"error": self.error, "detail": self.detail}, self.headers or None)


def json_response(status: int, doc: Any, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON response serialised with orjson."""
    return Response(orjson.dumps(doc), status, headers=headers, media_type="application/json")


def basic_user(header: str) -> str | None:
    """The user name of an HTTP Basic ``Authorization`` header (Segment: the write key)."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None


def gunzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing (413) output over ``limit`` bytes (no zip bombs)."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HTTPProblem(400, "malformed_body", f"invalid gzip data: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise HTTPProblem(413, "too_large", f"decompressed body over the limit of {limit} bytes")
    return out
