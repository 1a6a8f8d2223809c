"""test_replication.py - replicas, restarts and crashes keep every database.

Masters and replicas are real redis-server processes on loopback ports
(fixture `servers`, conftest.py). Loads are bounded in count and time.
Tests taking the fixture `writer` run twice: on databases written by the
module (SQL.EXEC) and on databases written through libkvsql.so (the
`redis` VFS, by the sqlite3 shell), whose commits replicate and persist
as the same HSET/HDEL/INCR.
"""

import pytest
import redis

from harness import attach_replica, kill_9_while_writing, monitored_commands, query, sql, wait_for
from libhelp import built, shell_ok


@pytest.fixture(params=["module", "library"])
def writer(request):
    """writer(server) -> write(key, sql_text): SQL.EXEC, or the library."""
    if request.param == "library" and not built():
        pytest.skip("libkvsql.so is not built")

    def make(server):
        if request.param == "module":
            r = server.client()
            return lambda key, text: sql(r, key, text)
        return lambda key, text: shell_ok(server, key, text + ";\n")
    return make


def wait_replicas(m, n):
    """WAIT n on m, covering writes made on other connections too (the
    library's): WAIT counts a client's own writes, so m first makes one
    (PUBLISH is replicated and changes no key)."""
    m.publish("kvsql-sync", "")
    return m.execute_command("WAIT", n, 5000)


def digest(r, key):
    return r.execute_command("DEBUG", "DIGEST-VALUE", key)


def make_database(r, key="db", rows=300, write=None):
    """Table t of `rows` rows in key, written by write(key, text) (SQL.EXEC on r by default)."""
    write = write or (lambda k, text: sql(r, k, text))
    write(key, "create table t(id integer primary key, v text, r real, b blob)")
    write(key, "with recursive s(x) as (select 1 union all select x + 1 from s where x < %d)"
                " insert into t select x, 'row ' || x, random(), randomblob(50) from s" % rows)


# ---- physical replication --------------------------------------------------

def test_replica_holds_the_same_bytes_even_with_nondeterministic_sql(servers, writer):
    master = servers()
    m, write = master.client(), writer(master)
    with_module = attach_replica(servers, master).client()
    without_module = attach_replica(servers, master, module=False).client()
    make_database(m, write=write)
    write("db", "update t set v = datetime('now'), r = random(), b = randomblob(20) where id % 3 = 0")
    write("db", "delete from t where id > 250; vacuum")
    assert wait_replicas(m, 2) == 2
    assert digest(with_module, "db") == digest(m, "db") == digest(without_module, "db")
    assert without_module.hlen("db") == m.hlen("db")


def test_replication_stream_carries_hset_not_sql(servers):
    master = servers()
    m = master.client()
    rep = attach_replica(servers, master)
    sql(m, "db", "create table t(a)")
    m.execute_command("WAIT", 1, 5000)
    seen = monitored_commands(rep.client(), lambda: sql(m, "db", "insert into t values (random())"), "HSET")
    assert any(c.startswith("HSET db ") for c in seen), seen
    assert not any("SQL" in c.upper() and c.upper().startswith("SQL") for c in seen), seen


def test_one_commit_is_one_hset(servers):
    master = servers()
    m = master.client()
    rep = attach_replica(servers, master)
    make_database(m, rows=2000)
    m.execute_command("WAIT", 1, 5000)
    r = rep.client()
    rep_before = r.info("commandstats").get("cmdstat_hset", {}).get("calls", 0)
    sql(m, "db", "update t set v = 'x' where id = 77; update t set v = 'y' where id = 1500")
    m.execute_command("WAIT", 1, 5000)
    assert r.info("commandstats")["cmdstat_hset"]["calls"] == rep_before + 1


# ---- reads on replicas ------------------------------------------------------

def test_replica_answers_sql_query_and_refuses_sql_exec(servers, writer):
    master = servers()
    m, write = master.client(), writer(master)
    r = attach_replica(servers, master).client()
    make_database(m, rows=50, write=write)
    assert wait_replicas(m, 1) == 1
    assert query(r, "db", "select count(*) from t")[1] == [50]
    with pytest.raises(redis.ReadOnlyError):
        sql(r, "db", "insert into t(v) values ('no')")
    write("db", "insert into t(id, v) values (51, 'later')")
    assert wait_replicas(m, 1) == 1
    assert query(r, "db", "select v from t where id = 51")[1] == [b"later"]
    assert digest(r, "db") == digest(m, "db")


def test_promoted_replica_reads_and_writes_every_database(servers):
    master = servers()
    m = master.client()
    r = attach_replica(servers, master).client()
    for i in range(5):
        make_database(m, key="db%d" % i, rows=20)
    m.execute_command("WAIT", 1, 5000)
    master.kill()
    r.replicaof("no", "one")
    for i in range(5):
        assert sql(r, "db%d" % i, "insert into t(v) values ('after')") == 1
        assert query(r, "db%d" % i, "select count(*) from t")[1] == [21]
        assert query(r, "db%d" % i, "pragma integrity_check")[1] == [b"ok"]


def test_full_resync_replaces_what_the_replica_cached(servers):
    master = servers()
    m = master.client()
    other = servers()
    o = other.client()
    sql(o, "db", "create table t(v); insert into t values ('old master')")
    r_server = attach_replica(servers, other)
    r = r_server.client()
    assert query(r, "db", "select v from t")[1] == [b"old master"]
    sql(m, "db", "create table t(v); insert into t values ('new master')")
    r.replicaof("127.0.0.1", master.port)
    wait_for(lambda: r.info("replication").get("master_link_status") == "up"
             and r.info("replication").get("master_host") == "127.0.0.1"
             and r.info("replication")["master_port"] == master.port, what="resync")
    wait_for(lambda: query(r, "db", "select v from t")[1] == [b"new master"], what="new data")


# ---- persistence --------------------------------------------------------------

def check_databases(r, n=3):
    for i in range(n):
        assert query(r, "db%d" % i, "pragma integrity_check")[1] == [b"ok"]
        assert query(r, "db%d" % i, "select count(*), sum(id) from t")[1] == [100, 5050]


def fill(r, n=3, write=None):
    for i in range(n):
        make_database(r, key="db%d" % i, rows=100, write=write)


def test_databases_survive_restart_after_save(servers, writer):
    s = servers()
    fill(s.client(), write=writer(s))
    s.client().save()
    s.restart()
    check_databases(s.client())


def test_databases_survive_restart_after_bgsave(servers):
    s = servers()
    c = s.client()
    fill(c)
    c.bgsave()
    wait_for(lambda: c.info("persistence")["rdb_bgsave_in_progress"] == 0, what="bgsave")
    assert c.info("persistence")["rdb_last_bgsave_status"] == "ok"
    s.restart()
    check_databases(s.client())


def test_databases_survive_restart_with_aof(servers, writer):
    s = servers(args=["--appendonly", "yes"])
    fill(s.client(), write=writer(s))
    s.restart()
    check_databases(s.client())


def test_databases_survive_restart_after_bgrewriteaof(servers):
    s = servers(args=["--appendonly", "yes"])
    c = s.client()
    fill(c)
    sql(c, "db0", "update t set v = 'rewritten'")
    c.bgrewriteaof()
    wait_for(lambda: c.info("persistence")["aof_rewrite_in_progress"] == 0
             and c.info("persistence")["aof_rewrite_scheduled"] == 0, what="aof rewrite")
    sql(c, "db1", "update t set v = 'after rewrite'")
    s.restart()
    c = s.client()
    check_databases(c)
    assert query(c, "db0", "select count(*) from t where v = 'rewritten'")[1] == [100]
    assert query(c, "db1", "select count(*) from t where v = 'after rewrite'")[1] == [100]


def test_aof_replays_on_a_redis_without_the_module(servers, writer):
    s = servers(args=["--appendonly", "yes"])
    c = s.client()
    fill(c, n=1, write=writer(s))
    want = digest(c, "db0")
    s.stop()
    plain = servers(module=False, args=["--appendonly", "yes"], dir=s.dir)
    assert digest(plain.client(), "db0") == want


# ---- crashes ----------------------------------------------------------------------

def test_kill_9_with_appendfsync_always_loses_no_acknowledged_write(servers):
    s = servers(args=["--appendonly", "yes", "--appendfsync", "always"])
    c = s.client()
    sql(c, "db", "create table t(id integer primary key, pad blob default (randomblob(300)))")
    acked = kill_9_while_writing(s, "db", 300, what="300 acknowledged writes")
    s.start()
    c = s.client()
    assert query(c, "db", "pragma integrity_check")[1] == [b"ok"]
    ids = {row[0] for row in query(c, "db", "select id from t")[1:]}
    assert set(acked) <= ids
    assert len(ids) - len(acked) <= 1  # at most the write in flight


def test_after_master_crash_promoted_replica_has_every_write_confirmed_by_wait(servers):
    master = servers()
    m = master.client()
    rep = attach_replica(servers, master)
    sql(m, "db", "create table t(id integer primary key)")
    m.execute_command("WAIT", 1, 5000)
    acked = kill_9_while_writing(master, "db", 200, what="200 writes confirmed by WAIT 1", wait_replicas=1)
    r = rep.client()
    r.replicaof("no", "one")
    ids = {row[0] for row in query(r, "db", "select id from t")[1:]}
    assert set(acked) <= ids
    assert query(r, "db", "pragma integrity_check")[1] == [b"ok"]
