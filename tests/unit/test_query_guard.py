"""The read-only query path refuses statements that write, reach out, lift limits or read other databases."""

from __future__ import annotations

import pytest

from pipeline.clickhouse.query_guard import QueryRefused, check_read_query, tokens

DATABASES = ("o2o", "other", "default", "system")


def check(sql: str) -> None:
    check_read_query(sql, ["o2o"], DATABASES)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count() FROM o2o.events",
        "select * from events where page_url = 'file(''/etc/passwd'')'",  # a string, not a call
        "WITH x AS (SELECT 1) SELECT * FROM x;",
        "(SELECT 1) UNION ALL (SELECT 2)",
        "SHOW TABLES FROM o2o",
        "DESCRIBE TABLE o2o.events",
        "EXPLAIN SELECT sum(number) FROM numbers(10)",
        "SELECT name FROM system.columns WHERE database = 'o2o'",
        "SELECT e.event_id FROM o2o.events AS e JOIN o2o.sessions AS s ON e.session_id = s.session_id",
        "SELECT 1 -- SETTINGS in a comment is fine\n",
        "SELECT $$ url('x') $$",
        'SELECT `other`, "settings" FROM o2o.events',  # quoted identifiers are names, not keywords
    ],
)
def test_reads_of_the_project_database_pass(sql: str) -> None:
    check(sql)


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("", "empty"),
        (";", "empty"),
        ("INSERT INTO o2o.events VALUES (1)", "only"),
        ("DROP TABLE o2o.events", "only"),
        ("SELECT 1; DROP TABLE o2o.events", "one statement"),
        ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "reaches files"),
        ("SELECT file('/etc/passwd')", "reaches files"),
        ("SELECT * FROM URL('http://example.com/x', 'CSV')", "reaches files"),
        ("SELECT * FROM remote('10.0.0.1', system.one)", "reaches files"),
        ("DESCRIBE TABLE s3('http://bucket/key')", "reaches files"),
        ("SELECT * FROM merge('other', '.*')", "reaches files"),
        ("SELECT * FROM generateRandom('a Int8')", "table function generateRandom"),
        ("SELECT sleep(1) FROM numbers(10) SETTINGS max_execution_time = 0", "SETTINGS"),
        ("SELECT 1 INTO OUTFILE '/tmp/x'", "INTO OUTFILE"),
        ("SELECT * FROM other.secrets", "database 'other'"),
        ("SELECT * FROM `other`.secrets", "database 'other'"),
        ("SHOW TABLES FROM other", "database 'other'"),
        ("SELECT 1 /* */ ; SELECT 2", "one statement"),
        ("SELECT '\\'' , file('/etc/passwd')", "reaches files"),  # an escaped quote does not hide the call
        ("SELECT 'it''s', url('x')", "reaches files"),
        ("SELECT $t$ ' $t$, file('/etc/passwd')", "reaches files"),  # a heredoc holding a quote
    ],
)
def test_everything_else_is_refused_with_the_reason(sql: str, reason: str) -> None:
    with pytest.raises(QueryRefused, match=reason):
        check(sql)


def test_an_alias_is_not_taken_for_a_database() -> None:
    check_read_query("SELECT x.a FROM (SELECT 1 AS a) AS x", ["o2o"], [*DATABASES, "y"])


def test_tokens_leave_out_comments_and_keep_strings_whole() -> None:
    found = tokens("SELECT /* file( */ 'a;b' -- url(\n, `q``x`")
    assert [(t.kind, t.text) for t in found] == [
        ("word", "SELECT"),
        ("string", "'a;b'"),
        ("symbol", ","),
        ("quoted", "q``x"),
    ]
