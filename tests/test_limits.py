"""test_limits.py - every call is bounded in time and memory however it
spends them, and nothing of a call runs after it (src/module/connections/budget.c).

Time bounds here are generous on purpose: each test's SQL would run for
far longer (or forever) without the bound it checks.
"""
import os
import time

import pytest
import redis

from harness import kill_when_busy, query, sql

SANITIZED = os.environ.get("BUILD", "build") != "build"

# 300 steps of ~16 MB each (~0.15 s each): most of a minute of work in a
# few thousand VM steps.
HEAVY_STEPS = ("with recursive c(x) as (select 1 union all select x + 1 from c where x < 300)"
               " select sum(length(hex(randomblob(16000000)))) from c")


def view_chain(r, key, n):
    """n views, each reading the previous one twice: 2^n rows, and as much
    work to prepare a statement that reads the last one (v16: about 5 s and
    230 MB with the sqlite3 library alone)."""
    columns = ", ".join("c%d" % i for i in range(6))
    statements = ["create table t0(x, %s)" % columns, "create table t1(x, %s)" % columns,
                  "create view v1 as select * from t0 union all select * from t1"]
    statements += ["create view v%d as select * from v%d union all select * from v%d" % (i, i - 1, i - 1)
                   for i in range(2, n + 1)]
    sql(r, key, "; ".join(statements))


def assert_alive(server):
    assert server.client().ping()
    assert not server.problems()


# ---- nothing of a call runs after it ---------------------------------------------

def test_schema_reread_outside_a_call_runs_no_callback(server):
    """The progress handler used to stay installed: re-reading the schema on
    CONFIG SET ran it with no command context (SIGSEGV in RM_Yield)."""
    r = server.client()
    sql(r, "many", "; ".join("create table t%d(a, b, c)" % i for i in range(600)))
    sql(r, "many", "select count(*) from t599")  # long enough to be allowed to yield
    sql(r, "many", "BEGIN; CREATE TABLE zz(x); ROLLBACK")
    r.config_set("kvsql.page-cache-kb", 4096)
    r.config_set("kvsql.query-timeout-ms", 5000)
    assert_alive(server)
    assert query(r, "many", "select count(*) from sqlite_master")[1] == [600]
    assert query(r, "many", "pragma cache_size")[1] == [-4096]


# ---- time --------------------------------------------------------------------------

def test_few_heavy_steps_are_stopped_at_the_time_limit(server):
    r = server.client()
    r.config_set("kvsql.query-timeout-ms", 500)
    start = time.time()
    with pytest.raises(redis.ResponseError, match="stopped after 500 ms"):
        query(r, "db", HEAVY_STEPS)
    assert time.time() - start < 8
    assert_alive(server)


def test_one_step_cannot_work_on_huge_values(server):
    """With SQLite's default length limit (1e9 bytes) this ran 1.5 s per
    step, 20 steps between two checks of the time limit."""
    r = server.client()
    r.config_set("kvsql.query-timeout-ms", 500)
    start = time.time()
    with pytest.raises(redis.ResponseError, match="too big|stopped after 500 ms"):
        query(r, "db", HEAVY_STEPS.replace("x < 300", "x < 20").replace("16000000", "150000000"))
    assert time.time() - start < 8
    assert_alive(server)


def test_heavy_steps_give_busy_replies_and_sql_kill_stops_them(server):
    r = server.client()
    r.config_set("kvsql.query-timeout-ms", 0)
    r.config_set("busy-reply-threshold", 100)
    r.config_set("kvsql.worker-threads", 0)  # kept on the main thread: -BUSY (test_offload.py: workers)
    _, error = kill_when_busy(server, lambda c: query(c, "db", HEAVY_STEPS.replace("x < 100", "x < 1000")),
                              busy_within=20, join_within=30, what="heavy steps ran")
    assert "stopped by SQL.KILL" in error
    assert_alive(server)


def test_preparing_a_statement_is_within_the_time_limit(server):
    r = server.client()
    view_chain(r, "db", 16)
    r.config_set("kvsql.query-timeout-ms", 500)
    r.config_set("kvsql.call-memory-kb", 0)  # time, not memory, is what stops it here
    start = time.time()
    with pytest.raises(redis.ResponseError, match="stopped after 500 ms"):
        query(r, "db", "select count(*) from v16 where 0")
    # Unbounded, preparing takes about 5 s (much longer under the sanitizer,
    # whose checks also slow the stop itself): the error above says the
    # limit stopped it; this says it did so promptly.
    assert time.time() - start < (12 if SANITIZED else 4)
    assert_alive(server)
    assert query(r, "db", "select count(*) from v3")[1] == [0]


def test_preparing_gives_busy_replies_and_sql_kill_stops_it(server):
    r = server.client()
    view_chain(r, "db", 16)
    r.config_set("kvsql.query-timeout-ms", 0)
    r.config_set("kvsql.call-memory-kb", 0)
    r.config_set("busy-reply-threshold", 100)
    r.config_set("kvsql.worker-threads", 0)  # kept on the main thread: -BUSY (test_offload.py: workers)
    _, error = kill_when_busy(server, lambda c: query(c, "db", "select count(*) from v16 where 0"),
                              busy_within=3,  # preparing alone takes longer than this
                              join_within=30, what="the statement was prepared")
    assert "stopped by SQL.KILL" in error
    assert_alive(server)


def test_huge_sql_text_is_refused_before_it_is_parsed(r):
    text = "select 1 /* " + "x" * 1200000 + " */"
    with pytest.raises(redis.ResponseError, match="more than kvsql.max-sql-kb"):
        query(r, "db", text)
    r.config_set("kvsql.max-sql-kb", 2048)
    assert query(r, "db", text)[1] == [1]


def test_values_longer_than_the_limit_are_refused(r):
    r.config_set("kvsql.call-memory-kb", 16384)  # values up to 4 MiB
    with pytest.raises(redis.ResponseError, match="too big"):
        query(r, "db", "select length(hex(randomblob(3000000)))")
    assert query(r, "db", "select length(hex(randomblob(1000000)))")[1] == [2000000]


def test_time_limit_holds_inside_multi_and_scripts(server):
    """With offloading off (offload-after-us 0) the time limit is what
    bounds a call inside MULTI or a script; with it on such a call stops
    sooner (test_main_thread.py)."""
    r = server.client()
    r.config_set("kvsql.query-timeout-ms", 300)
    r.config_set("kvsql.offload-after-us", 0)
    sql(r, "db", "create table t(x)")
    forever = ("with recursive c(x) as (select 1 union all select x + 1 from c)"
               " select count(*) from c")
    pipe = r.pipeline(transaction=True)
    pipe.execute_command("SQL.QUERY", "db", forever)
    pipe.execute_command("SQL.QUERY", "db", "select 1")
    first, second = pipe.execute(raise_on_error=False)
    assert "stopped after 300 ms" in str(first)
    assert second[1] == [1]
    with pytest.raises(redis.ResponseError, match="stopped after 300 ms"):
        r.eval("return redis.call('SQL.QUERY', KEYS[1], ARGV[1])", 1, "db", forever)
    with pytest.raises(redis.ResponseError, match="stopped after 300 ms"):
        r.eval("return redis.call('SQL.QUERY', KEYS[1], ARGV[1])", 1, "db", HEAVY_STEPS)
    assert_alive(server)


# ---- memory ------------------------------------------------------------------------

def test_statement_cache_is_bounded(r):
    sql(r, "db", "create table t(a)")
    start = r.info("kvsql")
    for i in range(16):
        text = "select count(*) from t where a in (%d, %s)" % (i, ",".join(["1"] * 90000))
        assert query(r, "db", text)[1] == [0]
    info = r.info("kvsql")
    assert info["kvsql_statement_cache_bytes"] <= 16 * 65536
    assert info["kvsql_sqlite_memory"] - start["kvsql_sqlite_memory"] < 8000000
    if not SANITIZED:
        assert r.info("memory")["used_memory"] - r.info("memory")["used_memory_startup"] < 60000000


@pytest.mark.skipif(SANITIZED, reason="sanitized builds keep SQLite on the sanitizer's malloc")
def test_read_only_queries_evict_no_keys(r):
    """Four SQL.QUERY calls of big SQL on a missing key used to keep their
    statements, and with allkeys-lru Redis evicted every key for them."""
    sql(r, "db", "create table t(a); insert into t values (1)")
    for i in range(50):
        r.set("plain%d" % i, "x" * 1000)
    r.config_set("maxmemory-policy", "allkeys-lru")
    r.config_set("maxmemory", r.info("memory")["used_memory"] + 12000000)
    for i in range(4):
        text = "select %d where 1 in (%s)" % (i, ",".join(["1"] * 300000))
        assert query(r, "missing", text)[1] == [i]
    r.ping()
    assert r.info("stats")["evicted_keys"] == 0
    assert query(r, "db", "select a from t")[1] == [1]
    r.config_set("maxmemory", 0)


def test_a_call_past_its_memory_limit_is_stopped_and_writes_nothing(server):
    r = server.client()
    sql(r, "db", "create table t(a); insert into t values (1)")
    before = r.hgetall("db")
    r.config_set("kvsql.call-memory-kb", 8192)
    big = ("with recursive c(x) as (select 1 union all select x + 1 from c where x < 20000)"
           " insert into t select randomblob(1000) from c")
    with pytest.raises(redis.ResponseError, match="more than 8192 KiB of memory"):
        sql(r, "db", big)
    assert r.hgetall("db") == before
    with pytest.raises(redis.ResponseError, match="more than 8192 KiB of memory"):
        query(r, "db", "with recursive c(x) as (select 1 union all select x + 1 from c where x < 20000)"
                       " select randomblob(1000) from c order by 1")
    r.config_set("kvsql.offload-after-us", 0)  # a TEMP call runs here; with offloading on it stops sooner
    with pytest.raises(redis.ResponseError, match="more than 8192 KiB of memory"):
        sql(r, "db", "create temp table tt as " + big.replace(" insert into t", ""))
    r.config_set("kvsql.offload-after-us", 1000)
    assert query(r, "db", "select count(*) from t")[1] == [1]
    assert query(r, "db", "pragma integrity_check")[1] == [b"ok"]
    r.config_set("kvsql.call-memory-kb", 0)
    assert sql(r, "db", big) == 20000
    assert_alive(server)


def test_temp_storage_left_between_calls_is_bounded(r):
    """TEMP objects live in the key's connection (COMMANDS.md): small ones
    may stay for later calls, but a call that leaves more than 2 MiB of
    them closes the connection (CACHE_TEMP_KEEP_BYTES). Offloading off: a
    call on TEMP objects cannot move, and with it on one that runs past
    offload-after-us plus 30 ms (a sanitized build's 5 MB insert) stops."""
    r.config_set("kvsql.offload-after-us", 0)
    sql(r, "db", "create table t(a)")
    start = r.info("kvsql")["kvsql_sqlite_memory"]
    sql(r, "db", "create temp table tt as with recursive c(x) as (select 1 union all select x + 1 from c"
                 " where x < 5000) select randomblob(1000) from c")
    assert query(r, "db", "select count(*) from temp.sqlite_master")[1] == [0]
    assert r.info("kvsql")["kvsql_sqlite_memory"] - start < 2000000
    sql(r, "db", "create temp view small as select 1")
    assert query(r, "db", "select * from small")[1] == [1]
    sql(r, "db", "create temp table tt2(x)")
    sql(r, "db", "insert into tt2 with recursive c(x) as (select 1 union all select x + 1 from c"
                 " where x < 5000) select randomblob(1000) from c")
    assert query(r, "db", "select count(*) from temp.sqlite_master")[1] == [0]
    assert r.info("kvsql")["kvsql_sqlite_memory"] - start < 2000000
