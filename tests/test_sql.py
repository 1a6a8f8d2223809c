"""test_sql.py - SQL, SQL.EXEC and SQL.QUERY against a real redis-server.

The behaviours of docs/COMMANDS.md and docs/FORMAT.md, one per test.
Fixtures (conftest.py): `r` is a client of a fresh server with kvsql.so.
"""
import os
import subprocess
import tempfile

import pytest
import redis

from harness import query, sql


def pages(r, key):
    """The hash of a database as {page index: bytes}."""
    return {int(f): v for f, v in r.hgetall(key).items()}


def sqlite_file(r, key, path):
    """Writes the fields of `key`, in order, as an SQLite file."""
    p = pages(r, key)
    assert sorted(p) == list(range(len(p)))
    with open(path, "wb") as f:
        for i in range(len(p)):
            f.write(p[i])


def sqlite3_shell(path, statement):
    return subprocess.run(["sqlite3", path, statement], capture_output=True, text=True, timeout=30).stdout.strip()


# ---- the original session ------------------------------------------------

def test_original_session_replies_exactly(r):
    assert r.execute_command("SQL", "create table test (a int, b text)") == 0
    assert r.execute_command("SQL", "insert into test values (1, 'hello')") == 1
    assert r.execute_command("SQL", "select * from test") == [[[b"a", b"int"], [b"b", b"text"]], [1, b"hello"]]
    assert r.hlen("_sql:redis_db") == 2
    assert r.hget("_sql:redis_db", "0").startswith(b"SQLite format 3\x00")


def test_sql_in_cluster_mode_points_to_sql_exec(servers):
    s = servers(args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
    with pytest.raises(redis.ResponseError, match="SQL.EXEC"):
        s.client().execute_command("SQL", "select 1")


# ---- replies ----------------------------------------------------------------

def test_statement_without_columns_replies_rows_changed(r):
    assert sql(r, "db", "create table t(a)") == 0
    assert sql(r, "db", "insert into t values (1), (2), (3)") == 3
    assert sql(r, "db", "update t set a = a + 1 where a > 1") == 2
    assert sql(r, "db", "create index ia on t(a)") == 0


def test_values_reply_by_storage_class(r):
    sql(r, "db", "create table t(i integer, f real, s text, b blob, n)")
    sql(r, "db", "insert into t values (-7, 1.5, 'x', x'00ff', null)")
    header, row = query(r, "db", "select * from t")
    assert row == [-7, b"1.5", b"x", b"\x00\xff", None]
    assert header == [[b"i", b"integer"], [b"f", b"real"], [b"s", b"text"], [b"b", b"blob"], [b"n", b"null"]]


def test_header_without_declared_type_names_the_storage_class(r):
    reply = query(r, "db", "select 1 as a, 2.5 as b, 'x' as c, x'01' as d")
    assert reply[0] == [[b"a", b"int"], [b"b", b"real"], [b"c", b"text"], [b"d", b"blob"]]


def test_header_is_sent_with_zero_rows(r):
    sql(r, "db", "create table t(a int, b text)")
    assert query(r, "db", "select * from t") == [[[b"a", b"int"], [b"b", b"text"]]]


def test_large_values_and_many_rows_round_trip(r):
    big = os.urandom(200000)
    sql(r, "db", "create table t(id integer primary key, v blob)")
    sql(r, "db", "insert into t values (1, ?)", big)
    assert query(r, "db", "select v from t")[1] == [big]
    sql(r, "db", "with recursive s(x) as (select 2 union all select x + 1 from s where x < 5000)"
                                        " insert into t select x, x * 2 from s")
    reply = query(r, "db", "select id, v from t where id > 1 order by id")
    assert len(reply) == 1 + 4999 and reply[-1] == [5000, 10000]


# ---- arguments ---------------------------------------------------------------

def test_arguments_bind_canonical_integers_as_integer_else_text(r):
    header, row = query(r, "db", "select typeof(?1), typeof(?2), typeof(?3), typeof(?4), ?5 + 1",
                                    "42", "042", "1.5", "-9223372036854775808", "7")
    assert row == [b"integer", b"text", b"text", b"integer", 8]


def test_argument_that_is_not_utf8_binds_as_blob(r):
    header, row = query(r, "db", "select typeof(?), length(?1)", b"\xff\x00\xfe")
    assert row == [b"blob", 3]


def test_numbered_and_named_parameters_bind_by_position(r):
    reply = query(r, "db", "select ?2 || ?1, :x", "a", "b", "c")
    assert reply[1] == [b"ba", b"c"]


def test_missing_arguments_are_an_error(r):
    with pytest.raises(redis.ResponseError, match="2 parameters but 1 argument"):
        query(r, "db", "select ?, ?", "1")


def test_extra_arguments_are_an_error(r):
    with pytest.raises(redis.ResponseError, match="too many arguments"):
        query(r, "db", "select ?", "1", "2")


def test_null_is_written_in_sql(r):
    assert query(r, "db", "select nullif(?, '')", "")[1] == [None]


# ---- several statements: one transaction -------------------------------------

def test_several_statements_reply_with_the_last(r):
    reply = sql(r, "db", "create table t(a); insert into t values (1); select a from t")
    assert reply == [[[b"a", b"null"]], [1]] or reply[1] == [1]
    assert sql(r, "db", "select 1; insert into t values (2), (3)") == 2


def test_failed_call_leaves_the_hash_byte_identical(r):
    sql(r, "db", "create table t(a integer primary key, b); insert into t values (1, 'one')")
    before = pages(r, "db")
    with pytest.raises(redis.ResponseError, match="UNIQUE"):
        sql(r, "db", "insert into t values (2, 'two'); create table u(x);"
                                            " insert into t values (1, 'again')")
    assert pages(r, "db") == before
    assert query(r, "db", "select count(*) from t")[1] == [1]
    assert query(r, "db", "select count(*) from sqlite_master where name = 'u'")[1] == [0]


def test_begin_commit_inside_one_call(r):
    sql(r, "db", "create table t(a)")
    assert sql(r, "db", "begin; insert into t values (1); insert into t values (2); commit") == 0
    assert query(r, "db", "select count(*) from t")[1] == [2]


def test_rollback_undoes_the_transaction(r):
    sql(r, "db", "create table t(a); insert into t values (1)")
    before = pages(r, "db")
    sql(r, "db", "begin; delete from t; rollback")
    assert pages(r, "db") == before
    assert query(r, "db", "select count(*) from t")[1] == [1]


def test_savepoints_behave_as_in_sqlite(r):
    sql(r, "db", "create table t(a)")
    sql(r, "db", "savepoint a; insert into t values (1); savepoint b; insert into t values (2);"
                                        " rollback to b; insert into t values (3); release a")
    assert query(r, "db", "select group_concat(a) from t")[1] == [b"1,3"]


def test_constraint_failure_inside_begin_fails_the_whole_call(r):
    sql(r, "db", "create table t(a unique); insert into t values (1)")
    before = pages(r, "db")
    with pytest.raises(redis.ResponseError, match="UNIQUE"):
        sql(r, "db", "begin; insert into t values (2); insert into t values (1); commit")
    assert pages(r, "db") == before
    assert sql(r, "db", "insert into t values (2)") == 1


def test_insert_or_ignore_is_not_an_error(r):
    sql(r, "db", "create table t(a unique); insert into t values (1)")
    assert sql(r, "db", "insert or ignore into t values (1)") == 0


def test_transaction_left_open_is_rolled_back_with_an_error(r):
    sql(r, "db", "create table t(a)")
    with pytest.raises(redis.ResponseError, match="transaction left open"):
        sql(r, "db", "begin; insert into t values (1)")
    assert query(r, "db", "select count(*) from t")[1] == [0]
    assert sql(r, "db", "insert into t values (5)") == 1


# ---- SQL.QUERY is read-only ----------------------------------------------------

def test_sql_query_refuses_writes_before_anything_changes(r):
    sql(r, "db", "create table t(a)")
    before = pages(r, "db")
    for statement in ["insert into t values (1)", "select 1; insert into t values (1)", "create table u(a)",
                      "pragma user_version = 3", "drop table t"]:
        with pytest.raises(redis.ResponseError, match="read-only"):
            query(r, "db", statement)
    assert pages(r, "db") == before


def test_sql_query_on_a_missing_key_creates_nothing(r):
    assert query(r, "nothing", "select 1")[1] == [1]
    assert r.exists("nothing") == 0


def test_sql_query_is_flagged_readonly_and_sql_exec_write(r):
    info = r.execute_command("COMMAND", "INFO", "sql.query", "sql.exec", "sql")
    assert "readonly" in info["sql.query"]["flags"]
    assert "write" in info["sql.exec"]["flags"] and "write" in info["sql"]["flags"]
    assert r.command_getkeys("SQL.QUERY", "k1", "select 1") == ["k1"]


# ---- errors --------------------------------------------------------------------

def test_sqlite_errors_reply_err_with_sqlite_message(r):
    with pytest.raises(redis.ResponseError, match="^SQLITE_ERROR no such table: nope"):
        query(r, "db", "select * from nope")
    with pytest.raises(redis.ResponseError, match="syntax error"):
        sql(r, "db", "selec 1")


def test_key_of_another_type_replies_wrongtype(r):
    r.set("s", "x")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        sql(r, "s", "select 1")
    assert r.get("s") == b"x"


def test_hash_that_is_not_a_database_is_refused_untouched(r):
    r.hset("h", mapping={"a": "b", "0": "not a page"})
    with pytest.raises(redis.ResponseError, match="not a kvsql database"):
        sql(r, "h", "create table t(a)")
    assert r.hgetall("h") == {b"a": b"b", b"0": b"not a page"}


def test_wrong_arity_is_an_error(r):
    for args in [("SQL",), ("SQL.EXEC", "k"), ("SQL.QUERY", "k")]:
        with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
            r.execute_command(*args)


def test_bad_input_never_crashes(r):
    inputs = ["", ";", "   ", "-- only a comment", "\x00", "select", "select (" * 500, "x" * 100000,
              "select zeroblob(-1)", "select randomblob(1000000000)", "select * from sqlite_master" + ";" * 1000,
              "pragma integrity_check", "vacuum", "reindex", "analyze", "explain select 1"]
    for statement in inputs:
        try:
            sql(r, "db", statement)
        except redis.ResponseError:
            pass
    sql(r, "db", b"select '\xff\xfe'")
    assert r.ping()


def test_empty_sql_replies_zero(r):
    assert sql(r, "db", "") == 0
    assert r.exists("db") == 0


# ---- storage format --------------------------------------------------------------

def test_fields_concatenated_are_an_sqlite_file_that_passes_integrity_check(r, tmp_path):
    sql(r, "db", "create table t(a integer primary key, b text); create index ib on t(b)")
    sql(r, "db", "with recursive s(x) as (select 1 union all select x + 1 from s where x < 3000)"
                                        " insert into t select x, hex(randomblob(60)) from s")
    sql(r, "db", "delete from t where a % 7 = 0")
    path = str(tmp_path / "db.sqlite")
    sqlite_file(r, "db", path)
    assert sqlite3_shell(path, "pragma integrity_check") == "ok"
    assert sqlite3_shell(path, "select count(*) from t") == str(3000 - 3000 // 7)


def test_hlen_is_the_page_count(r):
    sql(r, "db", "create table t(b); insert into t select randomblob(3000) from"
                                        " (with recursive s(x) as (select 1 union all select x + 1 from s where x < 50)"
                                        " select x from s)")
    assert r.hlen("db") == query(r, "db", "pragma page_count")[1][0]


def test_page_size_comes_from_the_header_and_the_pragma(r):
    sql(r, "small", "create table t(a)")
    assert len(r.hget("small", "0")) == 4096
    sql(r, "big", "pragma page_size = 16384; create table t(a)")
    assert len(r.hget("big", "0")) == 16384
    assert query(r, "big", "pragma page_size")[1] == [16384]


def test_a_commit_writes_only_the_pages_that_changed(r):
    sql(r, "db", "create table t(a integer primary key, b)")
    sql(r, "db", "with recursive s(x) as (select 1 union all select x + 1 from s where x < 2000)"
                                        " insert into t select x, hex(randomblob(100)) from s")
    before = pages(r, "db")
    sql(r, "db", "update t set b = 'changed' where a = 1000")
    after = pages(r, "db")
    changed = [i for i in after if before.get(i) != after[i]]
    assert len(before) > 50 and 1 <= len(changed) <= 2


def test_shrinking_database_deletes_the_fields_cut_off(r):
    sql(r, "db", "create table t(b); insert into t select randomblob(2000) from"
                                        " (with recursive s(x) as (select 1 union all select x + 1 from s where x < 200)"
                                        " select x from s)")
    big = r.hlen("db")
    sql(r, "db", "delete from t; vacuum")
    assert r.hlen("db") < big
    assert sorted(pages(r, "db")) == list(range(r.hlen("db")))
    assert query(r, "db", "pragma integrity_check")[1] == [b"ok"]


# ---- many databases ----------------------------------------------------------------

def test_each_key_is_an_independent_database(r):
    for i in range(20):
        sql(r, "db%d" % i, "create table t(a); insert into t values (?)", str(i))
    for i in range(20):
        assert query(r, "db%d" % i, "select a from t")[1] == [i]


def test_select_n_keeps_separate_databases(server):
    a, b = server.client(db=0), server.client(db=3)
    sql(a, "db", "create table t(a); insert into t values ('zero')")
    sql(b, "db", "create table t(a); insert into t values ('three')")
    assert query(a, "db", "select a from t")[1] == [b"zero"]
    assert query(b, "db", "select a from t")[1] == [b"three"]


# ---- cached connections ----------------------------------------------------------------

def kvsql_info(r):
    return r.info("kvsql")


def test_point_queries_reuse_connection_and_statement(r):
    sql(r, "db", "create table t(id integer primary key, v); insert into t values (1, 'a')")
    start = kvsql_info(r)
    for _ in range(50):
        assert query(r, "db", "select v from t where id = ?", "1")[1] == [b"a"]
    end = kvsql_info(r)
    assert end["kvsql_connections_opened"] == start["kvsql_connections_opened"]
    assert end["kvsql_statements_prepared"] - start["kvsql_statements_prepared"] == 1
    assert end["kvsql_statement_cache_hits"] - start["kvsql_statement_cache_hits"] == 49


def test_change_to_the_hash_outside_sql_is_seen(r):
    sql(r, "a", "create table t(v); insert into t values ('from a')")
    sql(r, "b", "create table t(v); insert into t values ('from b')")
    assert query(r, "a", "select v from t")[1] == [b"from a"]
    # Overwrite a's pages by hand with b's: the next command must see b's data.
    for field, value in r.hgetall("b").items():
        r.hset("a", field, value)
    assert query(r, "a", "select v from t")[1] == [b"from b"]


def test_deleted_key_is_an_empty_database_again(r):
    sql(r, "db", "create table t(a)")
    r.delete("db")
    with pytest.raises(redis.ResponseError, match="no such table"):
        query(r, "db", "select * from t")
    assert sql(r, "db", "create table t(a)") == 0


def test_vacuum_to_another_page_size_is_refused_and_changes_nothing(r):
    sql(r, "db", "create table t(a); insert into t values (1)")
    before = pages(r, "db")
    with pytest.raises(redis.ResponseError, match="I/O error"):
        sql(r, "db", "pragma page_size = 8192; vacuum")
    assert pages(r, "db") == before
    assert query(r, "db", "select a from t")[1] == [1]
