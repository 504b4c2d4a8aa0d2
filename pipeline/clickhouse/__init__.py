"""ClickHouse access: thread-safe client, schema migrations, read-only query server, output formats."""

from pipeline.clickhouse.client import ClickHouse, QueryError, QueryResult, connect
from pipeline.clickhouse.format import FORMATS, jsonable, render
from pipeline.clickhouse.migrations import DEFAULT_FOLDER, apply_migrations, load_migrations
from pipeline.clickhouse.query_server import QueryServer, endpoint_file, query_any

__all__ = [
    "DEFAULT_FOLDER",
    "FORMATS",
    "ClickHouse",
    "QueryError",
    "QueryResult",
    "QueryServer",
    "apply_migrations",
    "connect",
    "endpoint_file",
    "jsonable",
    "load_migrations",
    "query_any",
    "render",
]
