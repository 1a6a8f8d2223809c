"""test_guard.py - SQL cannot take or hand out addresses, reach
process-wide state, or leave settings behind for the next call on the same
cached connection (src/module/connections/guard.c, docs/SECURITY.md).
"""
import os
import sqlite3
import tempfile

import pytest
import redis

from harness import query, sql

EIGHT_BYTES = b"\x41" * 7 + b"\xff"  # binds as a BLOB: an address the caller chose


def refused(call, *args):
    with pytest.raises(redis.ResponseError, match="not authorized|authorization denied|no such|unsafe use"):
        call(*args)


# ---- addresses -----------------------------------------------------------------

@pytest.mark.parametrize("statement,args", [
    ("select hex(fts3_tokenizer('simple'))", ()),
    ("select fts3_tokenizer('evil', X'4141414141414141')", ()),
    ("select fts3_tokenizer('evil', ?)", (EIGHT_BYTES,)),
    ("select fts3_tokenizer('simple', ?)", (EIGHT_BYTES,)),
    ("select sqlite_log(1, 'x')", ()),
    ("select rtreenode(2, X'00000000')", ()),
    ("select rtreedepth(X'0000')", ()),
    ("select sql from sqlite_stmt", ()),
    ("select count(*) from sqlite_stmt", ()),
])
def test_functions_and_tables_that_leak_or_take_addresses_are_refused(server, statement, args):
    r = server.client()
    refused(query, r, "t", statement, *args)
    refused(sql, r, "t", statement, *args)
    assert r.ping()


def test_a_chosen_tokenizer_pointer_cannot_crash_the_server(server):
    r = server.client()
    refused(sql, r, "x", "SELECT fts3_tokenizer('evil', X'4141414141414141')")
    with pytest.raises(redis.ResponseError, match="unknown tokenizer"):
        sql(r, "x", "CREATE VIRTUAL TABLE f USING fts3(body, tokenize=evil)")
    assert r.ping()


def load_database(r, key, statements):
    """Builds a database with the sqlite3 library and stores its pages in key."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "db")
        db = sqlite3.connect(path)
        db.executescript(statements)
        db.close()
        with open(path, "rb") as f:
            data = f.read()
    size = int.from_bytes(data[16:18], "big")
    size = 65536 if size == 1 else size
    r.hset(key, mapping={str(i): data[i * size:(i + 1) * size] for i in range(len(data) // size)})


def test_a_stored_schema_cannot_call_refused_functions(server):
    """A hash written with HSET may hold any schema: its views and
    triggers pass the same guard when a read-only tenant queries them."""
    admin = server.client()
    load_database(admin, "tenant1:db", """
        CREATE TABLE t(a);
        CREATE VIEW v AS SELECT fts3_tokenizer('simple', X'4141414141414141') AS p;
        CREATE VIEW leak AS SELECT hex(fts3_tokenizer('simple')) AS p;
        CREATE VIRTUAL TABLE f USING fts3(body, tokenize=simple);
    """)
    admin.acl_setuser("reader", enabled=True, passwords=["+pw"], reset=True)
    admin.execute_command("ACL", "SETUSER", "reader", "~tenant1:*", "+sql.query")
    reader = server.client(username="reader", password="pw")
    refused(query, reader, "tenant1:db", "select * from v")
    refused(query, reader, "tenant1:db", "select * from leak")
    admin.execute_command("CONFIG", "SET", "kvsql.max-connections", 1)  # reopen the connection
    query(reader, "tenant1:other", "select 1")
    assert query(reader, "tenant1:db", "select count(*) from f where f match 'x'")[1] == [0]
    assert admin.ping()


def test_process_wide_settings_are_refused(r):
    for statement in ["pragma hard_heap_limit = 1000000", "pragma soft_heap_limit = 1000000", "pragma threads = 4",
                      "pragma cache_spill = 100000", "pragma default_cache_size = 100000",
                      "pragma writable_schema = 1", "pragma no_such_pragma = 1"]:
        refused(query, r, "t", statement)
        refused(sql, r, "t", statement)
    assert query(r, "t", "pragma threads")[1] == [0]


def test_unknown_virtual_table_modules_are_dropped_and_audited_ones_kept(r):
    modules = {row[0] for row in query(r, "t", "select name from pragma_module_list")[1:]}
    assert b"sqlite_stmt" not in modules
    assert {b"fts5", b"rtree", b"json_each", b"dbstat"} <= modules


# ---- one call's settings never reach the next ------------------------------------

def probe(r, key="k"):
    """What a call sees of its connection's settings."""
    names = ["analysis_limit", "automatic_index", "busy_timeout", "cell_size_check", "checkpoint_fullfsync",
             "count_changes", "defer_foreign_keys", "empty_result_callbacks", "foreign_keys",
             "full_column_names", "fullfsync", "ignore_check_constraints", "legacy_alter_table", "query_only",
             "read_uncommitted", "recursive_triggers", "reverse_unordered_selects", "secure_delete",
             "short_column_names", "synchronous", "trusted_schema", "max_page_count", "page_size",
             "auto_vacuum", "encoding", "cache_size", "temp_store"]
    seen = {n: query(r, key, "pragma " + n)[1:] for n in names}
    seen["like"] = query(r, key, "select 'a' like 'A'")[1]
    seen["databases"] = query(r, key, "select name from pragma_database_list where name != 'temp'")[1:]
    seen["changes"] = query(r, key, "select changes(), total_changes(), last_insert_rowid()")[1]
    return seen


SETTINGS = [
    "pragma query_only = 1",
    "pragma ignore_check_constraints = 1",
    "pragma case_sensitive_like = 1",
    "pragma count_changes = 1",
    "pragma max_page_count = 5",
    "pragma foreign_keys = 1",
    "pragma recursive_triggers = 0",
    "pragma reverse_unordered_selects = 1",
    "pragma automatic_index = 0",
    "pragma short_column_names = 0",
    "pragma full_column_names = 1",
    "pragma legacy_alter_table = 1",
    "pragma secure_delete = 0",
    "pragma synchronous = 0",
    "pragma busy_timeout = 5000",
    "pragma trusted_schema = 0",
    "pragma analysis_limit = 100",
    "pragma cell_size_check = 1",
    "pragma page_size = 1024",
    "pragma auto_vacuum = full",
    "pragma main.foreign_keys = 1",
    "pragma temp.secure_delete = 0",
    "attach ':memory:' as m",
    "insert into t(a) values (1)",
]


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("command", [query, sql])
def test_a_setting_made_by_one_call_is_gone_in_the_next(r, setting, command):
    sql(r, "k", "create table t(a check (a < 100), b text)")
    before = probe(r)
    for _ in range(2):  # also when the statement comes from the statement cache
        try:
            command(r, "k", setting)
        except redis.ResponseError as e:
            assert "read-only" in str(e) and command is query
        assert probe(r) == before, setting


def test_writers_are_not_broken_by_a_readers_settings(server):
    r = server.client()
    reader = server.client()
    sql(r, "k", "create table p(id integer primary key); create table t(a check (a < 100),"
                " p references p(id))")
    query(reader, "k", "pragma query_only = 1")
    query(reader, "k", "pragma ignore_check_constraints = 1")
    query(reader, "k", "pragma count_changes = 1")
    query(reader, "k", "pragma foreign_keys = 1")
    assert sql(r, "k", "insert into t(a, p) values (1, 42)") == 1  # no FK check: the default
    with pytest.raises(redis.ResponseError, match="CHECK constraint failed"):
        sql(r, "k", "insert into t(a) values (1000)")
    query(reader, "k", "select * from pragma_table_info('t')")
    assert sql(r, "k", "insert into t(a) values (2)") == 1


def test_a_call_may_use_a_setting_within_itself(r):
    sql(r, "k", "create table p(id integer primary key); create table c(p references p(id))")
    with pytest.raises(redis.ResponseError, match="FOREIGN KEY constraint failed"):
        sql(r, "k", "pragma foreign_keys = 1; insert into c values (7)")
    assert query(r, "k", "pragma case_sensitive_like = 1; select 'a' like 'A'")[1] == [0]
    assert query(r, "k", "select 'a' like 'A'")[1] == [1]


def test_counters_of_earlier_calls_are_not_seen(r):
    sql(r, "k", "create table t(a)")
    sql(r, "k", "insert into t values (1), (2), (3)")
    assert sql(r, "k", "select changes(), total_changes(), last_insert_rowid()")[1] == [0, 0, 0]
    assert sql(r, "k", "insert into t values (4); select changes(), total_changes(), last_insert_rowid()")[1] == \
        [1, 1, 4]
