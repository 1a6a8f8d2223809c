"""test_safety.py - no query can freeze, crash, bloat or escape the Redis
it runs in: time limits, SQL.KILL, -BUSY, memory, the SQL guard and ACLs.
"""
import os
import time

import pytest
import redis

from harness import kill_when_busy, query, sql

SANITIZED = os.environ.get("BUILD", "build") != "build"

FOREVER = ("with recursive c(x) as (select 1 union all select x + 1 from c where x < 4000000000)"
           " select count(*) from c")


def pages(r, key):
    return r.hgetall(key)


# ---- runaway queries -------------------------------------------------------

def test_query_past_the_time_limit_is_stopped_and_rolled_back(r):
    sql(r, "db", "create table t(x); insert into t values (0)")
    before = pages(r, "db")
    r.config_set("kvsql.query-timeout-ms", 200)
    start = time.time()
    with pytest.raises(redis.ResponseError, match="stopped after 200 ms"):
        sql(r, "db", "insert into t values (1); " + FOREVER.replace("select count(*) from c",
                                                                 "insert into t select x from c"))
    assert time.time() - start < 5
    assert pages(r, "db") == before
    assert query(r, "db", "select count(*) from t")[1] == [1]


def test_long_query_gets_busy_replies_and_sql_kill_stops_it(server):
    r = server.client()
    r.config_set("kvsql.query-timeout-ms", 0)
    r.config_set("busy-reply-threshold", 100)
    r.config_set("kvsql.worker-threads", 0)  # kept on the main thread: -BUSY (test_offload.py: workers)
    sql(r, "db", "create table t(x)")
    before = pages(r, "db")
    other, error = kill_when_busy(server, lambda c: sql(c, "db", "insert into t values (1); " + FOREVER),
                                  busy_within=20, join_within=20, poll=0.05, what="the query ran")
    assert "stopped by SQL.KILL" in error
    assert other.ping()
    assert pages(r, "db") == before


def test_sql_kill_with_nothing_running_is_notbusy(r):
    with pytest.raises(redis.ResponseError, match="No SQL is running"):
        r.execute_command("SQL.KILL")


# ---- memory ------------------------------------------------------------------

@pytest.mark.skipif(SANITIZED, reason="sanitized builds keep SQLite on the sanitizer's malloc")
def test_sqlite_memory_is_counted_by_redis(r):
    for i in range(40):
        sql(r, "db%d" % i, "create table t(a, b); create index ia on t(a)")
        query(r, "db%d" % i, "select * from t")
    with_connections = r.info("memory")["used_memory"]
    r.config_set("kvsql.max-connections", 1)
    assert r.info("kvsql")["kvsql_connections"] <= 1
    freed = with_connections - r.info("memory")["used_memory"]
    assert freed > 39 * 20000, freed  # each SQLite connection was tens of KB of Redis memory


def test_max_connections_bounds_open_connections(r):
    r.config_set("kvsql.max-connections", 3)
    for i in range(10):
        sql(r, "db%d" % i, "create table t(a)")
        assert r.info("kvsql")["kvsql_connections"] <= 3
    for i in range(10):
        assert query(r, "db%d" % i, "select count(*) from t")[1] == [0]


def test_page_cache_size_is_a_config(r):
    r.config_set("kvsql.page-cache-kb", 512)
    assert query(r, "db", "pragma cache_size")[1] == [-512]
    with pytest.raises(redis.ResponseError, match="not authorized"):
        sql(r, "db", "pragma cache_size = 100000")


def test_writes_are_refused_with_oom_and_reads_keep_working(r):
    sql(r, "db", "create table t(b); insert into t values (randomblob(1000))")
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", r.info("memory")["used_memory"] + 2000000)
    refused = False
    for _ in range(200):
        before = pages(r, "db")
        try:
            sql(r, "db", "insert into t values (randomblob(100000))")
        except redis.ResponseError as e:
            assert str(e).startswith("OOM command not allowed when used memory > 'maxmemory'")
            assert pages(r, "db") == before
            refused = True
            break
    assert refused
    assert query(r, "db", "pragma integrity_check")[1] == [b"ok"]
    assert query(r, "db", "select count(*) > 1 from t")[1] == [1]
    r.config_set("maxmemory", 0)


# ---- no escape to the host ---------------------------------------------------------

@pytest.mark.parametrize("statement", [
    "attach 'other.db' as o",
    "attach 'file:/etc/passwd?vfs=unix' as o",
    "vacuum into 'copy.db'",
    "select load_extension('libm.so.6')",
    "pragma temp_store_directory = '/tmp'",
    "pragma data_store_directory = '/tmp'",
    "pragma journal_mode = wal",
    "pragma journal_mode = delete",
    "pragma journal_mode = off",
    "pragma locking_mode = normal",
    "pragma temp_store = file",
    "pragma mmap_size = 1000000",
])
def test_sql_that_reaches_outside_the_database_is_refused(server, statement):
    r = server.client()
    sql(r, "db", "create table t(a); insert into t values (1)")
    before = set(os.listdir(server.dir))
    with pytest.raises(redis.ResponseError, match="not authorized|authorization denied"):
        sql(r, "db", statement)
    assert set(os.listdir(server.dir)) == before
    assert query(r, "db", "select a from t")[1] == [1]


def test_reading_settings_is_allowed(r):
    assert sql(r, "db", "pragma journal_mode")[1] == [b"memory"]
    assert sql(r, "db", "pragma locking_mode")[1] == [b"exclusive"]


def test_temporary_data_stays_in_memory(server):
    r = server.client()
    before = set(os.listdir(server.dir))
    sql(r, "db", "create table t(a, b)")
    sql(r, "db", "with recursive s(x) as (select 1 union all select x + 1 from s where x < 20000)"
                 " insert into t select random(), randomblob(200) from s")
    reply = query(r, "db", "select a, b from t order by b limit 1 offset 10000")
    assert len(reply) == 2
    assert set(os.listdir(server.dir)) == before


# ---- ACL --------------------------------------------------------------------------

def user(server, name, *rules):
    server.client().acl_setuser(name, enabled=True, passwords=["+pw"], commands=[], keys=[], reset=True)
    server.client().execute_command("ACL", "SETUSER", name, *rules)
    return server.client(username=name, password="pw")


def test_key_patterns_of_acl_users_apply_to_sql(server):
    # ~{tenant1:*: the auxiliary keys kvsql writes with a database (test_acl_aux.py)
    tenant = user(server, "tenant1", "~tenant1:*", "~{tenant1:*", "+sql.exec", "+sql.query")
    assert sql(tenant, "tenant1:db", "create table t(a)") == 0
    with pytest.raises(redis.exceptions.NoPermissionError):
        sql(tenant, "tenant2:db", "create table t(a)")
    with pytest.raises(redis.exceptions.NoPermissionError):
        query(tenant, "tenant2:db", "select 1")
    assert server.client().exists("tenant2:db") == 0


def test_read_only_user_can_query_but_not_exec(server):
    sql(server.client(), "db", "create table t(a); insert into t values (1)")
    reader = user(server, "reader", "~*", "+sql.query")
    assert query(reader, "db", "select a from t")[1] == [1]
    with pytest.raises(redis.exceptions.NoPermissionError):
        sql(reader, "db", "insert into t values (2)")


def test_read_only_key_permission_allows_query_not_exec(server):
    sql(server.client(), "db", "create table t(a)")
    reader = user(server, "keyreader", "%R~*", "+sql.query", "+sql.exec")
    assert query(reader, "db", "select count(*) from t")[1] == [0]
    with pytest.raises(redis.exceptions.NoPermissionError):
        sql(reader, "db", "insert into t values (2)")


# ---- leaks and damage -------------------------------------------------------------

def test_many_databases_opened_used_and_deleted_leave_nothing_behind(r):
    """Under SANITIZE=1 LeakSanitizer checks the server at shutdown too."""
    sql(r, "warm", "create table t(a)")
    r.delete("warm")
    start = r.info("memory")["used_memory"]
    for i in range(300):
        key = "db%d" % i
        sql(r, key, "create table t(a integer primary key, b); create index ib on t(b)")
        sql(r, key, "insert into t(b) values (randomblob(100)), (randomblob(2000))")
        assert query(r, key, "select count(*) from t where b is not null")[1] == [2]
        r.delete(key)
    assert r.info("kvsql")["kvsql_connections"] == 0
    assert all(k.endswith((b":v", b":id")) for k in r.keys("*"))  # only versions and identities stay (FORMAT.md)
    if not SANITIZED:
        assert r.info("memory")["used_memory"] - start < 1000000


def test_random_damage_to_pages_never_crashes(r):
    rng = __import__("random").Random(7)
    for round_ in range(40):
        key = "db%d" % round_
        sql(r, key, "create table t(a integer primary key, b text); create index ib on t(b)")
        sql(r, key, "with recursive s(x) as (select 1 union all select x + 1 from s where x < 300)"
                    " insert into t select x, hex(randomblob(30)) from s")
        n = r.hlen(key)
        for _ in range(rng.randint(1, 4)):
            field = str(rng.randrange(n))
            page = bytearray(r.hget(key, field))
            if rng.random() < 0.8:
                for _ in range(rng.randint(1, 50)):
                    page[rng.randrange(len(page))] = rng.randrange(256)
            else:
                page = os.urandom(rng.choice([10, 4096, 5000]))
            r.hset(key, field, bytes(page))
        for statement in ["select count(*) from t", "select * from t where b > 'A' order by b limit 5",
                          "pragma integrity_check", "insert into t(b) values ('new')", "delete from t where a < 50",
                          "vacuum"]:
            try:
                sql(r, key, statement)
            except redis.ResponseError:
                pass
    assert r.ping()
