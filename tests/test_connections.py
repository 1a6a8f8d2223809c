"""test_connections.py - what a cached connection costs (issue 11).

A change to a database's hash made elsewhere (a user's HSET, a replicated
write) keeps the module's cached connection and only makes it take a new
snapshot (by dropping its page cache alone when the hash kept its length);
a commit too big for a replica's output buffer is refused before anything
is written; idle connections keep no page buffers, and those past the
1000 most recently used no page cache either. Real redis-server processes
(conftest.py), bounded loads, no timing.
"""
import pytest
import redis

from harness import attach_replica, query, sql


def kvsql_info(r):
    return r.info("kvsql")


def opened(r):
    return kvsql_info(r)["kvsql_connections_opened"]


# ---- 1. invalidate pages, not connections --------------------------------------

def test_hand_made_hset_keeps_the_connection_and_shows_the_new_pages(r):
    sql(r, "a", "create table t(v); insert into t values ('old')")
    sql(r, "b", "create table t(v); insert into t values ('new')")
    assert query(r, "a", "select v from t")[1] == [b"old"]
    before = opened(r)
    r.hset("a", mapping=r.hgetall("b"))  # same schema, other rows
    assert query(r, "a", "select v from t")[1] == [b"new"]
    assert opened(r) == before
    assert kvsql_info(r)["kvsql_snapshots_renewed"] >= 1


def test_schema_changed_by_hset_is_read_again(r):
    sql(r, "a", "create table t(v); insert into t values (1)")
    sql(r, "b", "create table t(v); create table u(w); insert into u values (2)")
    assert query(r, "a", "select v from t")[1] == [1]
    r.hset("a", mapping=r.hgetall("b"))
    assert query(r, "a", "select w from u")[1] == [2]
    assert query(r, "a", "select count(*) from t")[1] == [0]


def test_replica_keeps_its_connection_through_replicated_writes(servers):
    master = servers()
    m = master.client()
    rep = attach_replica(servers, master).client()
    sql(m, "db", "create table t(id integer primary key, v)")
    sql(m, "db", "insert into t values (1, 'one')")
    m.execute_command("WAIT", 1, 5000)
    assert query(rep, "db", "select v from t where id = 1")[1] == [b"one"]
    before = opened(rep)
    for i in range(2, 30):
        sql(m, "db", "insert into t values (?, ?)", i, "row %d" % i)
        m.execute_command("WAIT", 1, 5000)
        assert query(rep, "db", "select count(*) from t")[1] == [i]
    sql(m, "db", "create table u(x); insert into u values (42)")  # a schema change
    m.execute_command("WAIT", 1, 5000)
    assert query(rep, "db", "select x from u")[1] == [42]
    assert opened(rep) == before
    assert query(rep, "db", "pragma integrity_check")[1] == [b"ok"]


def test_change_of_the_same_length_drops_only_the_page_cache(r):
    sql(r, "a", "create table t(v); create table u(w); insert into t values ('old')")
    sql(r, "b", "create table t(v); create table x(w); alter table x add column y;"  # schema cookie 3, not 2
                " insert into t values ('new'); insert into x values (7, 0)")
    assert r.hlen("a") == r.hlen("b")  # same length: no SQL needed to renew
    assert query(r, "a", "select v from t")[1] == [b"old"]
    before, resets = opened(r), kvsql_info(r)["kvsql_snapshots_reset_cache"]
    r.hset("a", mapping=r.hgetall("b"))  # other rows and another schema, same pages count
    assert query(r, "a", "select v from t")[1] == [b"new"]
    assert query(r, "a", "select w from x")[1] == [7]  # the schema is read again
    with pytest.raises(redis.ResponseError, match="no such table: u"):
        query(r, "a", "select w from u")
    sql(r, "a", "insert into x values (8, 1)")
    assert query(r, "a", "select count(*) from x")[1] == [2]
    assert query(r, "a", "pragma integrity_check")[1] == [b"ok"]
    assert opened(r) == before
    assert kvsql_info(r)["kvsql_snapshots_reset_cache"] == resets + 1


def test_change_that_grows_the_hash_renews_the_length_too(r):
    sql(r, "a", "create table t(v); insert into t values ('a')")
    sql(r, "b", "create table t(v)")
    sql(r, "b", "with recursive s(x) as (select 1 union all select x+1 from s where x < 50)"
                " insert into t select randomblob(1000) from s")
    assert r.hlen("b") > r.hlen("a")
    assert query(r, "a", "select count(*) from t")[1] == [1]
    resets = kvsql_info(r)["kvsql_snapshots_reset_cache"]
    r.hset("a", mapping=r.hgetall("b"))
    assert query(r, "a", "select count(*) from t")[1] == [50]
    assert query(r, "a", "pragma integrity_check")[1] == [b"ok"]
    assert kvsql_info(r)["kvsql_snapshots_reset_cache"] == resets  # the pager had to learn the length


def test_write_after_a_renewed_snapshot_leaves_page_one_out(r):
    sql(r, "db", "create table t(id integer primary key, v)")
    sql(r, "db", "insert into t values (1, 'a')")
    r.hset("db", "1", r.hget("db", "1"))  # an event: the connection renews its snapshot
    before = r.hgetall("db")
    sql(r, "db", "insert into t values (2, 'b')")  # SQLite moves page 1's change counter
    after = r.hgetall("db")
    assert [f for f in after if before.get(f) != after[f]] == [b"1"]


def test_a_hash_replaced_by_another_page_size_reopens(r):
    sql(r, "a", "create table t(v); insert into t values ('4k')")
    sql(r, "b", "pragma page_size=1024; create table t(v); insert into t values ('1k')")
    assert query(r, "a", "select v from t")[1] == [b"4k"]
    fields = r.hgetall("b")
    with r.pipeline(transaction=True) as p:  # one change made by hand: fields only
        p.hdel("a", *r.hkeys("a"))
        p.hset("a", mapping=fields)
        p.execute()
    assert query(r, "a", "select v from t")[1] == [b"1k"]


# ---- 2. a connection costs about its database ----------------------------------

def test_default_limit_is_ten_thousand_connections(r):
    assert r.config_get("kvsql.max-connections")["kvsql.max-connections"] == "10000"


WARM_CONNECTIONS = 1000  # src/module/cache.c: the rest keep no page cache
SMALL_DB = "create table t(id integer primary key, v text); insert into t values (1, 'x')"


def make_small_dbs(r, first, last, prefix="sm"):
    """Databases prefix:first..prefix:last of 2 pages, each leaving its
    connection cached."""
    pipe = r.pipeline(transaction=False)
    for i in range(first, last + 1):
        pipe.execute_command("SQL.EXEC", "%s:%d" % (prefix, i), SMALL_DB)
    pipe.execute()


def test_connections_past_the_warm_ones_cost_about_their_schema(r):
    make_small_dbs(r, 1, WARM_CONNECTIONS)
    base = kvsql_info(r)["kvsql_sqlite_memory"]
    n = 200
    make_small_dbs(r, WARM_CONNECTIONS + 1, WARM_CONNECTIONS + n)  # each cools the oldest warm one
    assert kvsql_info(r)["kvsql_connections"] == WARM_CONNECTIONS + n
    per = (kvsql_info(r)["kvsql_sqlite_memory"] - base) / n
    print("SQLite memory per connection past the warm ones: %.0f bytes" % per)
    assert per <= 26 * 1024  # 2 pages less than a warm one (about 35 KB)


def test_a_cold_connection_reads_and_writes_as_before(r):
    sql(r, "db", "create table t(id integer primary key, v)")
    sql(r, "db", "with recursive s(x) as (select 1 union all select x+1 from s where x < 300)"
                 " insert into t select x, randomblob(100) from s")
    assert query(r, "db", "select count(*) from t")[1] == [300]
    make_small_dbs(r, 1, WARM_CONNECTIONS)  # db's connection is cold now
    before = opened(r)
    assert query(r, "db", "select count(*), sum(id) from t")[1] == [300, 45150]
    sql(r, "db", "delete from t where id > 100")
    assert opened(r) == before  # the same connection, its pages read again
    make_small_dbs(r, 1, WARM_CONNECTIONS, prefix="sm2")  # cold again, after a write
    before = opened(r)
    assert query(r, "db", "select count(*) from t")[1] == [100]
    assert query(r, "db", "pragma integrity_check")[1] == [b"ok"]
    assert opened(r) == before


def test_idle_connections_keep_no_page_buffers(r):
    sql(r, "db", "create table t(v)")
    sql(r, "db", "with recursive s(x) as (select 1 union all select x+1 from s where x < 2000)"
                 " insert into t select randomblob(100) from s")
    base = kvsql_info(r)["kvsql_sqlite_memory"]
    for i in range(20):
        sql(r, "db", "insert into t values (randomblob(100))")
    assert kvsql_info(r)["kvsql_sqlite_memory"] <= base + 64 * 1024


# ---- 3. big commits and replication ----------------------------------------------

BIG_COMMIT = ("with recursive s(x) as (select 1 union all select x+1 from s where x < 600)"
              " insert into t select randomblob(4000) from s")  # about 2.4 MB of pages


def master_and_replica(servers, limit):
    """A master with client-output-buffer-limit `limit` and table db.t(v),
    and a client of its replica."""
    master = servers()
    m = master.client()
    m.config_set("client-output-buffer-limit", limit)
    rep = attach_replica(servers, master).client()
    sql(m, "db", "create table t(v)")
    return m, rep


def test_commit_too_big_for_a_replica_is_refused_before_writing(servers):
    m, rep = master_and_replica(servers, "replica 1mb 0 0")
    full_syncs = m.info("stats")["sync_full"]
    with pytest.raises(redis.ResponseError, match="client-output-buffer-limit"):
        sql(m, "db", BIG_COMMIT)
    assert query(m, "db", "select count(*) from t")[1] == [0]
    sql(m, "db", "insert into t values (randomblob(4000))")  # small commits pass
    m.execute_command("WAIT", 1, 5000)
    assert query(rep, "db", "select count(*) from t")[1] == [1]
    assert m.info("replication")["connected_slaves"] == 1
    assert m.info("stats")["sync_full"] == full_syncs


def test_big_commit_passes_when_the_limit_allows_it(servers):
    m, rep = master_and_replica(servers, "replica 64mb 0 0")
    sql(m, "db", BIG_COMMIT)
    m.execute_command("WAIT", 1, 10000)
    assert query(rep, "db", "select count(*) from t")[1] == [600]


def test_big_commit_without_replicas_is_not_refused(r):
    r.config_set("client-output-buffer-limit", "replica 1mb 0 0")
    sql(r, "db", "create table t(v)")
    sql(r, "db", BIG_COMMIT)
    assert query(r, "db", "select count(*) from t")[1] == [600]
