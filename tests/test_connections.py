"""test_connections.py - what a cached connection costs (issue 11).

A change to a database's hash made elsewhere (a user's HSET, a replicated
write) keeps the module's cached connection and only makes it take a new
snapshot (by dropping just the pages the writes named, or its whole page
cache when it cannot name them, when the hash kept its length);
a commit too big for a replica's output buffer is refused before anything
is written; idle connections keep no page buffers, and those past the
1000 most recently used no page cache either; the module's own page cache
(src/pcache.c) keeps every database whole, TEMP tables and worker threads
included. Real redis-server processes (conftest.py), bounded loads, no
timing.
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


def test_replica_drops_only_the_pages_a_replicated_write_changed(servers):
    """The master's HSET names the pages a write changed; the replica's
    command filter sees it before it runs, so the replica's connection
    drops just those pages from SQLite's cache and keeps the rest. Every
    change must still show: new rows, an UPDATE of a row the replica read
    (and so cached) just before, a schema change of the same length."""
    master = servers()
    m = master.client()
    rep = attach_replica(servers, master).client()
    sql(m, "db", "create table t(id integer primary key, v); create table w(x)")
    sql(m, "db", "with recursive s(x) as (select 1 union all select x+1 from s where x < 2000)"
                 " insert into t select x, printf('%0100d', x) from s")
    m.execute_command("WAIT", 1, 5000)
    assert query(rep, "db", "select count(*) from t")[1] == [2000]
    hlen, before = m.hlen("db"), kvsql_info(rep)
    n = 30
    for i in range(n):
        row = 1 + 61 * i
        assert query(rep, "db", "select v from t where id = ?", row)[1] == [b"%0100d" % row]  # cached
        sql(m, "db", "update t set v = ? where id = ?", "u%d" % i, row)
        sql(m, "db", "insert into w values (?)", i)
        m.execute_command("WAIT", 1, 5000)
        assert query(rep, "db", "select v from t where id = ?", row)[1] == [b"u%d" % i]
        assert query(rep, "db", "select count(*), sum(x) from w")[1] == [i + 1, i * (i + 1) // 2]
    sql(m, "db", "alter table w add column y default 5")  # page 1 only
    m.execute_command("WAIT", 1, 5000)
    assert query(rep, "db", "select sum(y) from w")[1] == [5 * n]
    assert m.hlen("db") == hlen  # every write kept the length: each renewal could drop pages alone
    after = kvsql_info(rep)
    renewed = after["kvsql_snapshots_renewed"] - before["kvsql_snapshots_renewed"]
    assert renewed >= n
    assert after["kvsql_snapshots_pages_dropped"] - before["kvsql_snapshots_pages_dropped"] == renewed
    assert after["kvsql_connections_opened"] == before["kvsql_connections_opened"]
    assert query(rep, "db", "pragma integrity_check")[1] == [b"ok"]


# ---- a write that never runs must not stand for one that does (issue 22) ------

def stale_page_setup(r):
    """db with row 1000 cached by a warm connection; returns (field, the
    page that holds row 1000 after an UPDATE of it, made on a copy)."""
    sql(r, "db", "create table t(id integer primary key, v text)")
    sql(r, "db", "with recursive c(x) as (select 1 union all select x+1 from c where x<2000)"
                 " insert into t select x, printf('%050d', x) from c")
    r.copy("db", "shadow")
    sql(r, "shadow", "update t set v = 'new' where id = 1000")
    changed = [f for f in r.hkeys("db") if f != b"0" and r.hget("db", f) != r.hget("shadow", f)]
    assert len(changed) == 1
    assert query(r, "db", "select v from t where id = 1000")[1] == [b"%050d" % 1000]  # cached
    return changed[0], r.hget("shadow", changed[0])


def queue_page_write_then_rewarm(server, r, field, page):
    """Client A queues the page's HSET in MULTI; another client's HSET of
    the same bytes to another field makes the connection take a new
    snapshot before A's EXEC. Returns A."""
    a, b = server.client(), server.client()
    a.execute_command("MULTI")
    assert a.execute_command("HSET", "db", field, page) == b"QUEUED"
    b.hset("db", "1", r.hget("db", "1"))
    assert query(r, "db", "select v from t where id = 1000")[1] == [b"%050d" % 1000]  # new snapshot
    return a


def exec_and_check_page_seen(r, a, field, page):
    assert a.execute_command("EXEC") == [0]
    assert r.hget("db", field) == page
    assert query(r, "db", "select v from t where id = 1000")[1] == [b"new"]
    sql(r, "db", "update t set v = 'next' where id = 1001")  # a write on the cached connection
    assert query(r, "db", "select group_concat(v, ',') from t where id in (1000, 1001)")[1] == [b"new,next"]
    r.copy("db", "fresh")
    assert query(r, "fresh", "select v from t where id = 1000")[1] == [b"new"]
    assert query(r, "db", "pragma integrity_check")[1] == [b"ok"]


def refuse_by_acl(server, r):
    r.execute_command("ACL", "SETUSER", "pinger", "on", ">pw", "-@all", "+ping")
    d = server.client(username="pinger", password="pw")
    with pytest.raises(redis.ResponseError, match="no permissions"):
        d.execute_command("HSET", "db", "5", "x")


def refuse_in_the_command(server, r):
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        server.client().execute_command("HSET", "db", "5", "x", "6")


def refuse_for_arity(server, r):
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        server.client().execute_command("HSETNX", "db", "5", "x", "y")  # HSETNX takes exactly 3


def queue_and_discard(server, r):
    c = server.client()
    c.execute_command("MULTI")
    assert c.execute_command("HSET", "db", "5", "x") == b"QUEUED"
    assert c.execute_command("DISCARD") == b"OK"


def queue_then_abort_exec(server, r):
    c = server.client()
    c.execute_command("MULTI")
    assert c.execute_command("HSET", "db", "5", "x") == b"QUEUED"
    with pytest.raises(redis.ResponseError):
        c.execute_command("NOSUCHCOMMAND")
    with pytest.raises(redis.ResponseError, match="discarded because of previous errors"):
        c.execute_command("EXEC")


def refuse_for_memory(server, r):
    r.config_set("maxmemory", "1")
    try:
        with pytest.raises(redis.ResponseError, match="OOM"):
            server.client().execute_command("HSET", "db", "5", "x")
    finally:
        r.config_set("maxmemory", "0")


def refuse_in_a_script(server, r):
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        server.client().eval("return redis.pcall('HSET', KEYS[1], '5', 'x', '6')", 1, "db")


@pytest.mark.parametrize("refuse", [refuse_by_acl, refuse_in_the_command, refuse_for_arity, queue_and_discard,
                                    queue_then_abort_exec, refuse_for_memory, refuse_in_a_script])
def test_a_page_write_that_never_runs_does_not_stand_for_one_that_does(server, r, refuse):
    """A command the filter saw but Redis never ran (refused by ACL, by the
    command itself, for its arity, for memory, inside a script; queued and discarded or
    aborted) named page 5; the write that did run is a queued HSET of
    another page, whose event comes at EXEC. The connection must drop the
    page that changed: it reads and keeps A's page, never its stale copy."""
    field, page = stale_page_setup(r)
    a = queue_page_write_then_rewarm(server, r, field, page)
    refuse(server, r)
    exec_and_check_page_seen(r, a, field, page)


def test_change_of_the_same_length_drops_only_the_page_cache(r):
    sql(r, "a", "create table t(v); create table u(w); insert into t values ('old')")
    sql(r, "b", "create table t(v); create table x(w); alter table x add column y;"  # schema cookie 3, not 2
                " insert into t values ('new'); insert into x values (7, 0)")
    assert r.hlen("a") == r.hlen("b")  # same length: no SQL needed to renew
    assert query(r, "a", "select v from t")[1] == [b"old"]
    info = kvsql_info(r)
    before, resets = opened(r), info["kvsql_snapshots_reset_cache"] + info["kvsql_snapshots_pages_dropped"]
    r.hset("a", mapping=r.hgetall("b"))  # other rows and another schema, same pages count
    assert query(r, "a", "select v from t")[1] == [b"new"]
    assert query(r, "a", "select w from x")[1] == [7]  # the schema is read again
    with pytest.raises(redis.ResponseError, match="no such table: u"):
        query(r, "a", "select w from u")
    sql(r, "a", "insert into x values (8, 1)")
    assert query(r, "a", "select count(*) from x")[1] == [2]
    assert query(r, "a", "pragma integrity_check")[1] == [b"ok"]
    assert opened(r) == before
    info = kvsql_info(r)  # the HSET named every page it wrote: the connection dropped those
    assert info["kvsql_snapshots_reset_cache"] + info["kvsql_snapshots_pages_dropped"] == resets + 1


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


WARM_CONNECTIONS = 1000  # src/module/connections/cache.c: the rest keep no page cache
SMALL_DB = "create table t(id integer primary key, v text); insert into t values (1, 'x')"


def make_small_dbs(r, first, last, prefix="sm"):
    """Databases prefix:first..prefix:last of 2 pages, each leaving its
    connection cached: none moves to a worker thread (a create slowed past
    kvsql.offload-after-us by a loaded machine would leave no connection)."""
    after = r.config_get("kvsql.offload-after-us")["kvsql.offload-after-us"]
    r.config_set("kvsql.offload-after-us", 0)
    try:
        pipe = r.pipeline(transaction=False)
        for i in range(first, last + 1):
            pipe.execute_command("SQL.EXEC", "%s:%d" % (prefix, i), SMALL_DB)
        pipe.execute()
    finally:
        r.config_set("kvsql.offload-after-us", after)


def test_connections_past_the_warm_ones_cost_about_their_schema(r):
    make_small_dbs(r, 1, WARM_CONNECTIONS)
    base = kvsql_info(r)["kvsql_sqlite_memory"]
    n = 200
    make_small_dbs(r, WARM_CONNECTIONS + 1, WARM_CONNECTIONS + n)  # each cools the oldest warm one
    assert kvsql_info(r)["kvsql_connections"] == WARM_CONNECTIONS + n
    per = (kvsql_info(r)["kvsql_sqlite_memory"] - base) / n
    print("SQLite memory per connection past the warm ones: %.0f bytes" % per)
    assert per <= 23 * 1024  # 2 pages less than a warm one (about 32 KB); 24.4 KB with SQLite's page cache


def test_a_connection_that_cools_down_keeps_only_its_newest_statement(r):
    sql(r, "db", "create table t(id integer primary key, v)")
    sql(r, "db", "insert into t values (1, 'x')")
    for q in ("select count(*) from t", "select max(id) from t", "select v from t where id = 1"):
        query(r, "db", q)  # each cached; the point select is the newest
    make_small_dbs(r, 1, WARM_CONNECTIONS)  # db's connection is cold now
    before = kvsql_info(r)
    assert query(r, "db", "select v from t where id = 1")[1] == [b"x"]
    mid = kvsql_info(r)
    assert mid["kvsql_statement_cache_hits"] == before["kvsql_statement_cache_hits"] + 1  # kept
    assert mid["kvsql_statements_prepared"] == before["kvsql_statements_prepared"]
    assert query(r, "db", "select count(*) from t")[1] == [1]
    after = kvsql_info(r)
    assert after["kvsql_statements_prepared"] == mid["kvsql_statements_prepared"] + 1  # freed when it cooled
    assert after["kvsql_statement_cache_hits"] == mid["kvsql_statement_cache_hits"]


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


# ---- the module's page cache (src/pcache.c) -------------------------------------
# SQLite calls a page cache through sqlite3_pcache_methods2; these tests drive
# each method through SQL: a cache smaller than the database (pages recycled,
# dirty pages spilled), pages moved and cut off (xRekey, xTruncate), caches
# that are not purgeable (TEMP tables, which only SQLite may drop), the
# release of a cooling connection (xShrink), worker threads' caches beside
# the main thread's.

def fill(r, key, table, n, first=1, shift=0):
    """Rows id first..first+n-1 of table, v = the 300-digit text of id+shift."""
    sql(r, key, "with recursive s(x) as (select %d union all select x+1 from s where x < %d)"
                " insert into %s select x, printf('%%0300d', x + %d) from s" % (first, first + n - 1, table, shift))


def table_sums(r, key, table):
    """count, sum of ids, total length, and the last digits of the values
    weighted by id."""
    return query(r, key, "select count(*), sum(id), sum(length(v)), sum(unicode(substr(v, 300)) * id) from %s"
                 % table)[1]


def expected_sums(ids, shift=0):
    return [len(ids), sum(ids), 300 * len(ids), sum(ord(str(i + shift)[-1]) * i for i in ids)]


def test_a_page_cache_smaller_than_the_database_recycles_and_spills(r):
    r.config_set("kvsql.page-cache-kb", 16)  # 4 pages; the table and its index take about 240
    r.config_set("kvsql.offload-after-us", 0)  # all on this connection
    sql(r, "db", "create table t(id integer primary key, v text)")
    fill(r, "db", "t", 1500)
    sql(r, "db", "create index tv on t(v)")
    assert table_sums(r, "db", "t") == expected_sums(range(1, 1501))
    held = kvsql_info(r)["kvsql_sqlite_memory"]
    print("SQLite memory with a 16 KB page cache after a scan of 1.2 MB: %d bytes" % held)
    assert held < 200 * 1024  # the connection and its few pages
    # One transaction dirtier than the cache: SQLite writes pages out early.
    sql(r, "db", "update t set v = printf('%0300d', id + 7)")
    assert table_sums(r, "db", "t") == expected_sums(range(1, 1501), shift=7)
    assert query(r, "db", "select count(*) from t where v > printf('%0300d', 1000)")[1] == [1500 - 993]
    assert query(r, "db", "pragma integrity_check")[1] == [b"ok"]


def test_pages_moved_and_cut_off_read_back_right(r):
    """auto_vacuum=full moves pages (xRekey) and cuts the file (xTruncate)
    in the transactions that free them."""
    r.config_set("kvsql.page-cache-kb", 16)
    sql(r, "av", "pragma auto_vacuum=full; create table a(id integer primary key, v text);"
                 " create table b(id integer primary key, v text)")
    for first in range(1, 1200, 200):  # a and b interleaved in the file
        fill(r, "av", "a", 200, first)
        fill(r, "av", "b", 200, first)
    pages = r.hlen("av")
    sql(r, "av", "delete from a where id % 3 != 0")
    sql(r, "av", "drop table b")
    assert r.hlen("av") < pages / 2
    kept = [i for i in range(1, 1201) if i % 3 == 0]
    assert table_sums(r, "av", "a") == expected_sums(kept)
    assert query(r, "av", "pragma integrity_check")[1] == [b"ok"]
    make_small_dbs(r, 1, WARM_CONNECTIONS)  # av's connection drops its pages: read again from the hash
    assert table_sums(r, "av", "a") == expected_sums(kept)
    assert query(r, "av", "pragma integrity_check")[1] == [b"ok"]


def test_temp_tables_outlive_the_release_of_the_page_cache(r):
    """A TEMP table's page cache is its only copy: a connection cooling
    down may not drop its pages. (Past 2 MiB of TEMP data the connection
    closes at the end of the call: guard.c.)"""
    r.config_set("kvsql.offload-after-us", 0)  # calls on tt cannot move: no stop for them on a busy machine
    sql(r, "db", "create table t(id integer primary key, v text)")
    sql(r, "db", "create temp table tt(id integer primary key, v text)")
    fill(r, "db", "tt", 4000)  # 1.2 MB, about 330 pages
    sums = expected_sums(range(1, 4001))
    assert table_sums(r, "db", "tt") == sums
    make_small_dbs(r, 1, WARM_CONNECTIONS)  # db's connection cools down: sqlite3_db_release_memory
    assert table_sums(r, "db", "tt") == sums
    assert query(r, "db", "pragma temp.integrity_check")[1] == [b"ok"]
    sql(r, "db", "delete from tt where id > 100")  # pages cut off, in a cache that is not purgeable
    assert table_sums(r, "db", "tt") == expected_sums(range(1, 101))


def test_a_cooling_connection_gives_back_its_page_cache(r):
    r.config_set("kvsql.offload-after-us", 0)  # every call here: a worker's connection caches for itself
    sql(r, "db", "create table t(id integer primary key, v text)")
    fill(r, "db", "t", 3000)
    assert table_sums(r, "db", "t") == expected_sums(range(1, 3001))  # 230 pages cached
    make_small_dbs(r, 1, WARM_CONNECTIONS - 1)  # db is the least recently used warm connection
    before = kvsql_info(r)["kvsql_sqlite_memory"]
    make_small_dbs(r, WARM_CONNECTIONS, WARM_CONNECTIONS)  # one more: db cools down
    freed = before - kvsql_info(r)["kvsql_sqlite_memory"]
    print("SQLite memory freed as db cooled, net of one new small connection: %d bytes" % freed)
    assert freed > 900 * 1024  # its pages (1.2 MB of data) less the new connection (about 32 KB)
    assert table_sums(r, "db", "t") == expected_sums(range(1, 3001))


def test_the_pages_of_all_databases_stay_within_the_total(r):
    """kvsql.page-cache-total-mb bounds the pages every connection caches,
    together: at the end of a call, the least recently used connections
    free theirs while the total is passed (the call's own connection keeps
    its pages, bounded by kvsql.page-cache-kb); 0 sets no total."""
    r.config_set("kvsql.offload-after-us", 0)  # every call on its cached connection
    r.config_set("kvsql.page-cache-total-mb", 1)
    for key in ("a", "b", "c"):
        sql(r, key, "create table t(id integer primary key, v text)")
        fill(r, key, "t", 3000)  # about 230 pages
    sums = expected_sums(range(1, 3001))
    assert table_sums(r, "a", "t") == sums
    one = kvsql_info(r)["kvsql_page_cache_bytes"]
    assert one > 900 * 1024  # a's pages: more than the total, and kept
    for key in ("b", "c", "a"):
        assert table_sums(r, key, "t") == sums  # read again from the hash once cooled
        assert kvsql_info(r)["kvsql_page_cache_bytes"] < 1.5 * one  # the others cooled down
    r.config_set("kvsql.page-cache-total-mb", 0)
    for key in ("b", "c", "a"):
        assert table_sums(r, key, "t") == sums
    assert kvsql_info(r)["kvsql_page_cache_bytes"] > 2.8 * one  # no total: all three keep theirs


def test_offloaded_writes_beside_main_thread_calls_keep_every_database_whole(server):
    """Worker threads' connections have page caches too: a long write and
    a long read on workers while the main thread writes, reads and cools
    other connections; then every database is whole and as written."""
    import threading
    r = server.client()
    r.config_set("kvsql.page-cache-kb", 64)
    for key in ("w1", "w2"):
        sql(r, key, "create table t(id integer primary key, v text)")
        fill(r, key, "t", 20000)
    slow_write = ("update t set v = printf('%0300d', id + 1)"
                  " where (select count(*) from t t2 where t2.id between t.id and t.id + 30) > 0")
    slow_read = "select count(*) from t a, t b where b.id = a.id + 1 and b.v > a.v"
    out = {}

    def run(name, fn):
        try:
            out[name] = fn(server.client())
        except redis.RedisError as e:
            out[name] = e

    threads = [threading.Thread(target=run, args=("write", lambda c: sql(c, "w1", slow_write))),
               threading.Thread(target=run, args=("read", lambda c: query(c, "w2", slow_read)))]
    offloaded = kvsql_info(r)["kvsql_offloaded_calls"]
    for t in threads:
        t.start()
    for i in range(1, 301):  # the main thread meanwhile, with connections cooling down
        sql(r, "m:%d" % (i % 50), "create table if not exists t(id integer primary key, v text);"
                                   " insert into t(v) values (printf('%0300d', ?))", i)
        if i % 100 == 0:
            make_small_dbs(r, 1, WARM_CONNECTIONS, prefix="c%d" % i)
    for t in threads:
        t.join(120)
    assert out["write"] == 20000 and out["read"][1] == [19999], out
    assert kvsql_info(r)["kvsql_offloaded_calls"] >= offloaded + 2
    assert table_sums(r, "w1", "t")[:3] == expected_sums(range(1, 20001))[:3]
    for key in ("w1", "w2", "m:1", "m:49"):
        assert query(r, key, "pragma integrity_check")[1] == [b"ok"], key
    assert query(r, "m:1", "select count(*) from t")[1] == [6]


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
