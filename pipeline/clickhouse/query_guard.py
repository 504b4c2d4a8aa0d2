"""What the read-only query path lets through (pure, no ClickHouse).

`o2o sql`, the query server and whatever else reads for people run one
statement that reads the project's data, and nothing else: ClickHouse's own
``readonly`` setting still lets a reader call ``file()`` and ``url()`` (as
table functions and, ``file``, as a scalar one), reach other servers with
``remote()``, write a file on the client with ``INTO OUTFILE``, or lift the
time and memory limits with a ``SETTINGS`` clause. :func:`check_read_query`
refuses, with the reason:

- more than one statement, or one that is not ``SELECT``, ``WITH``,
  ``SHOW``, ``DESCRIBE``/``DESC`` or ``EXPLAIN``;
- a ``SETTINGS`` clause and ``INTO OUTFILE``;
- any function that reaches files, URLs, other servers or programs
  (:data:`EXTERNAL_FUNCTIONS`), wherever it appears, and any table function
  not in :data:`TABLE_FUNCTIONS` after ``FROM``, ``JOIN``, ``TABLE`` or
  ``DESCRIBE``;
- a database other than the allowed ones, named before a dot
  (``other.table``) or after ``FROM``/``IN`` (``SHOW TABLES FROM other``).

The statement is split into tokens the way ClickHouse reads it: quoted
strings (with backslash and doubled-quote escapes), heredoc strings
(``$tag$...$tag$``), quoted identifiers and comments are recognised, so a
keyword inside a string never counts and one hidden in a comment never
slips through.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from pipeline.errors import FatalError

STATEMENTS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN"})
TABLE_FUNCTIONS = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "values", "null", "view", "generate_series"}
)
EXTERNAL_FUNCTIONS = frozenset(
    name.lower()
    for name in (
        "file", "fileCluster", "url", "urlCluster", "s3", "s3Cluster", "gcs", "oss", "cosn",
        "azureBlobStorage", "azureBlobStorageCluster", "hdfs", "hdfsCluster", "remote", "remoteSecure",
        "cluster", "clusterAllReplicas", "merge", "mysql", "postgresql", "mongodb", "redis", "sqlite",
        "jdbc", "odbc", "executable", "executablePool", "input", "deltaLake", "deltaLakeCluster",
        "deltaLakeS3", "deltaLakeAzure", "deltaLakeLocal", "hudi", "hudiCluster", "iceberg",
        "icebergS3", "icebergAzure", "icebergHDFS", "icebergLocal", "icebergCluster", "icebergS3Cluster",
        "icebergAzureCluster", "icebergHDFSCluster", "paimon", "arrowFlight", "arrowflight", "ytsaurus",
        "dictionary", "loop", "prometheusQuery", "timeSeriesData", "timeSeriesMetrics", "timeSeriesTags",
    )
)  # fmt: skip
TABLE_POSITIONS = frozenset({"FROM", "JOIN", "TABLE", "DESCRIBE", "DESC"})
CATALOG_DATABASES = ("system", "information_schema", "INFORMATION_SCHEMA")

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<heredoc>\$(?P<tag>[A-Za-z0-9_]*)\$.*?(?:\$(?P=tag)\$|\Z))
  | (?P<string>'(?:[^'\\]|\\.|'')*(?:'|\Z))
  | (?P<quoted>(?:"(?:[^"\\]|\\.|"")*(?:"|\Z))|(?:`(?:[^`\\]|\\.|``)*(?:`|\Z)))
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<number>[0-9][0-9A-Za-z_.]*)
  | (?P<symbol>.)
    """,
    re.S | re.X,
)


class QueryRefused(FatalError):
    """The read-only query path does not run this statement; the message says why."""


@dataclass(frozen=True)
class Token:
    """One token: its kind (word, quoted, string, number, symbol) and text (quotes removed for quoted)."""

    kind: str
    text: str

    @property
    def upper(self) -> str:
        """The text in capitals (keywords are case-insensitive)."""
        return self.text.upper() if self.kind == "word" else ""

    @property
    def name(self) -> str | None:
        """The identifier this token names (a word or a quoted identifier), else None."""
        return self.text if self.kind in ("word", "quoted") else None


def tokens(sql: str) -> list[Token]:
    """The statement's tokens, whitespace, comments and nothing else left out."""
    out: list[Token] = []
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup or "symbol"
        if kind == "tag":
            kind = "heredoc"
        if kind in ("space", "comment"):
            continue
        text = match.group(kind)
        if kind == "heredoc":
            kind = "string"
        elif kind == "quoted":
            text = text[1:-1]
        out.append(Token(kind, text))
    return out


def check_read_query(sql: str, allowed_databases: Collection[str], known_databases: Collection[str]) -> None:
    """Raise :class:`QueryRefused` unless ``sql`` is one statement that only reads what it may.

    ``allowed_databases``: the project's; the catalog (``system``,
    ``information_schema``) is always allowed. ``known_databases``: every
    database the server has, so that ``alias.column`` is not taken for a
    database.
    """
    found = tokens(sql)
    while found and found[-1].text == ";" and found[-1].kind == "symbol":
        found.pop()
    if not found:
        raise QueryRefused("empty query")
    if any(t.kind == "symbol" and t.text == ";" for t in found):
        raise QueryRefused("one statement at a time")
    first = next((t for t in found if not (t.kind == "symbol" and t.text == "(")), found[0])
    if first.upper not in STATEMENTS:
        raise QueryRefused(
            f"only {', '.join(sorted(STATEMENTS))} statements may run here, not {first.text!r}"
        )
    for i, token in enumerate(found):
        before = found[i - 1] if i else None
        after = found[i + 1] if i + 1 < len(found) else None
        _check_keyword(token, after)
        _check_function(token, before, after)
    allowed = {*allowed_databases, *CATALOG_DATABASES}
    for name in sorted(qualifiers(sql) & (set(known_databases) - allowed)):
        readable = ", ".join(sorted(allowed))
        raise QueryRefused(f"database {name!r} is not readable here (allowed: {readable})")


def qualifiers(sql: str) -> set[str]:
    """Names the statement may use as databases: before a dot, or after ``FROM``/``IN``."""
    found = tokens(sql)
    out = set()
    for i, token in enumerate(found):
        name = token.name
        after = found[i + 1] if i + 1 < len(found) else None
        if name is not None and (_is(after, ".") or (i and found[i - 1].upper in ("FROM", "IN"))):
            out.add(name)
    return out


def _check_keyword(token: Token, after: Token | None) -> None:
    if token.upper == "SETTINGS":
        raise QueryRefused("a SETTINGS clause is not allowed here: the query limits are fixed (O2O_QUERY_*)")
    if token.upper == "INTO" and after is not None and after.upper == "OUTFILE":
        raise QueryRefused("INTO OUTFILE is not allowed here")


def _check_function(token: Token, before: Token | None, after: Token | None) -> None:
    if token.kind != "word" or not _is(after, "("):
        return
    function = token.text.lower()
    if function in EXTERNAL_FUNCTIONS:
        raise QueryRefused(f"{token.text}() reaches files, URLs, other servers or programs: not allowed here")
    if before is not None and before.upper in TABLE_POSITIONS and function not in TABLE_FUNCTIONS:
        allowed = ", ".join(sorted(TABLE_FUNCTIONS))
        raise QueryRefused(f"table function {token.text}() is not allowed here (allowed: {allowed})")


def _is(token: Token | None, symbol: str) -> bool:
    return token is not None and token.kind == "symbol" and token.text == symbol
