"""test_keyspace.py - whatever Redis does to a key, the next SQL command
sees exactly what the hash holds now.

Each test first warms the module's cached connection on the key (so a
stale cache would show), then changes the key through Redis, then checks.
"""
import os
import time

import pytest
import redis

from harness import attach_replica, query, sql


def make(r, key, value):
    sql(r, key, "create table t(v); insert into t values (?)", value)
    assert query(r, key, "select v from t")[1] == [value.encode()]  # cached now


def value_of(r, key):
    return query(r, key, "select v from t")[1][0]


def no_table(r, key):
    with pytest.raises(redis.ResponseError, match="no such table"):
        query(r, key, "select v from t")
    return True


def test_del_and_unlink_leave_an_empty_database(r):
    make(r, "a", "x")
    make(r, "b", "y")
    r.delete("a")
    r.unlink("b")
    assert no_table(r, "a") and no_table(r, "b")


def test_renamed_database_works_under_its_new_name(r):
    make(r, "old", "moved")
    make(r, "new", "replaced")
    r.rename("old", "new")
    assert no_table(r, "old")
    assert value_of(r, "new") == b"moved"
    sql(r, "new", "insert into t values ('more')")
    assert query(r, "new", "select count(*) from t")[1] == [2]


def test_copy_gives_an_independent_database(r):
    make(r, "src", "original")
    make(r, "dst", "overwritten")
    r.copy("src", "dst", replace=True)
    assert value_of(r, "dst") == b"original"
    sql(r, "dst", "update t set v = 'changed copy'")
    assert value_of(r, "src") == b"original"
    assert value_of(r, "dst") == b"changed copy"


def test_move_takes_the_database_to_another_db(server):
    r0, r1 = server.client(db=0), server.client(db=1)
    make(r0, "k", "in zero")
    make(r1, "other", "x")
    assert query(r1, "k", "select 1")[1] == [1]  # a cached empty database in db 1
    r0.move("k", 1)
    assert no_table(r0, "k")
    assert value_of(r1, "k") == b"in zero"


def test_expired_database_is_gone(r):
    make(r, "k", "short")
    r.pexpire("k", 50)
    time.sleep(0.2)
    assert no_table(r, "k")


def test_restore_replaces_the_database(r):
    make(r, "a", "dumped")
    dump = r.dump("a")
    sql(r, "a", "update t set v = 'changed after dump'")
    r.restore("a", 0, dump, replace=True)
    assert value_of(r, "a") == b"dumped"


def test_swapdb_swaps_databases(server):
    r0, r1 = server.client(db=0), server.client(db=1)
    make(r0, "k", "zero")
    make(r1, "k", "one")
    r0.swapdb(0, 1)
    assert value_of(r0, "k") == b"one"
    assert value_of(r1, "k") == b"zero"


def test_flushdb_and_flushall_empty_everything(server):
    r0, r1 = server.client(db=0), server.client(db=1)
    make(r0, "k", "zero")
    make(r1, "k", "one")
    r0.flushdb()
    assert no_table(r0, "k")
    assert value_of(r1, "k") == b"one"
    r0.flushall()
    assert no_table(r1, "k")


def test_debug_reload_and_loadaof_reload_from_disk(servers):
    s = servers(args=["--appendonly", "yes"])
    r = s.client()
    make(r, "k", "kept")
    r.execute_command("DEBUG", "RELOAD")
    assert value_of(r, "k") == b"kept"
    sql(r, "k", "insert into t values ('after reload')")
    r.execute_command("DEBUG", "LOADAOF")
    assert query(r, "k", "select count(*) from t")[1] == [2]


def test_hand_made_hset_is_seen(r):
    make(r, "a", "from a")
    make(r, "b", "from b")
    for field, page in r.hgetall("b").items():
        r.hset("a", field, page)
    assert value_of(r, "a") == b"from b"


def test_sql_exec_inside_multi_is_atomic_with_the_transaction(r):
    sql(r, "db", "create table t(v)")
    p = r.pipeline(transaction=True)
    p.execute_command("SQL.EXEC", "db", "insert into t values ('in multi')")
    p.set("flag", "set")
    p.execute_command("SQL.QUERY", "db", "select count(*) from t")
    out = p.execute()
    assert out[0] == 1 and out[2][1] == [1]
    assert r.get("flag") == b"set"


def test_watch_sees_a_change_made_by_sql(r):
    sql(r, "db", "create table t(v)")
    with r.pipeline() as p:
        p.watch("db")
        r.execute_command("SQL.EXEC", "db", "insert into t values (1)")
        p.multi()
        p.set("x", 1)
        with pytest.raises(redis.WatchError):
            p.execute()


def test_read_only_sql_does_not_touch_watch(r):
    sql(r, "db", "create table t(v)")
    with r.pipeline() as p:
        p.watch("db")
        r.execute_command("SQL.EXEC", "db", "select * from t")
        p.multi()
        p.set("x", 1)
        assert p.execute() == [True]


def test_sql_from_lua_scripts_runs_and_replicates_effects(r):
    sql(r, "db", "create table t(v)")
    n = r.eval("return redis.call('SQL.EXEC', KEYS[1], ARGV[1])", 1, "db", "insert into t values (random())")
    assert n == 1
    assert r.eval("return redis.call('SQL.QUERY', KEYS[1], 'select count(*) from t')[2][1]", 1, "db") == 1


def test_keyspace_notification_fires_for_sql_writes(r):
    r.config_set("notify-keyspace-events", "Kh")
    p = r.pubsub()
    p.subscribe("__keyspace@0__:db")
    p.get_message(timeout=1)
    sql(r, "db", "create table t(v)")
    msg = None
    deadline = time.time() + 5
    while time.time() < deadline and msg is None:
        msg = p.get_message(timeout=0.5)
    assert msg and msg["data"] == b"hset"


# ---- damage -------------------------------------------------------------------

def test_garbage_pages_answer_malformed_and_redis_keeps_serving(r):
    sql(r, "db", "create table t(a, b); create index ib on t(b)")
    sql(r, "db", "with recursive s(x) as (select 1 union all select x + 1 from s where x < 500)"
                 " insert into t select x, randomblob(200) from s")
    other = {"other": "value"}
    r.hset("elsewhere", mapping=other)
    n = r.hlen("db")
    for i in range(1, n):
        r.hset("db", str(i), os.urandom(4096))
    with pytest.raises(redis.ResponseError, match="malformed|corrupt"):
        query(r, "db", "select count(*), sum(length(b)) from t")
    with pytest.raises(redis.ResponseError):
        sql(r, "db", "insert into t values (1, 2)")
    assert r.ping() and r.hgetall("elsewhere") == {b"other": b"value"}


def test_page_of_the_wrong_length_is_reported(r):
    sql(r, "db", "create table t(a); insert into t values (1)")
    r.hset("db", "1", b"short")
    with pytest.raises(redis.ResponseError, match="not one page long"):
        query(r, "db", "select * from t")
    assert r.ping()


def test_damaged_header_page_is_not_a_database(r):
    sql(r, "db", "create table t(a)")
    r.hset("db", "0", os.urandom(4096))
    with pytest.raises(redis.ResponseError, match="not a kvsql database"):
        query(r, "db", "select 1")


def test_the_version_counts_as_incr_does_on_master_and_replica(servers):
    """Each write adds 1 to {K}:v as INCR would (the module writes it in place
    and sends INCR to the replicas): a carry to a new digit, a missing key,
    values a plain counter never holds (left to INCR itself), the overflow
    refused with nothing written. The replica's copy agrees at every step."""
    master = servers()
    m = master.client()
    rep = attach_replica(servers, master)
    rc = rep.client()
    sql(m, "vk", "create table t(a)")
    cases = [("9", b"10"), ("99", b"100"), ("0", b"1"), ("-5", b"-4"), ("007", None),
             ("999999999999999999", b"1000000000000000000"), ("9223372036854775806", b"9223372036854775807")]
    for start, want in cases:
        m.set("{vk}:v", start)
        if want is None:  # INCR refuses a leading zero: so does the module
            with pytest.raises(redis.ResponseError, match="increment the version"):
                sql(m, "vk", "insert into t values(1)")
            assert m.get("{vk}:v") == start.encode()
            continue
        assert sql(m, "vk", "insert into t values(1)") == 1
        assert m.get("{vk}:v") == want
        m.execute_command("WAIT", 1, 5000)
        assert rc.get("{vk}:v") == want
    rows = query(m, "vk", "select count(*) from t")
    m.set("{vk}:v", "9223372036854775807")
    with pytest.raises(redis.ResponseError, match="overflow"):
        sql(m, "vk", "insert into t values(1)")
    assert query(m, "vk", "select count(*) from t") == rows  # nothing written
    m.delete("{vk}:v")
    assert sql(m, "vk", "insert into t values(1)") == 1
    assert m.get("{vk}:v") == b"1"
    m.execute_command("WAIT", 1, 5000)
    assert rc.get("{vk}:v") == b"1"
    assert query(rc, "vk", "select count(*) from t") == query(m, "vk", "select count(*) from t")
