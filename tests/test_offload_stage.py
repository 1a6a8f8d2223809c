"""test_offload_stage.py - a big write of a worker's call is staged (issue #14).

A long SQL.EXEC runs on a worker thread (test_offload.py). When it wrote
more than 4 MiB of pages, the worker builds the new hash in the staging key
{db}:wstage, 256 pages per step, each step holding Redis's lock, and the
reply callback only swaps it in with RENAME (src/module/offload/stage.c,
docs/FORMAT.md "Big writes of the module"). These tests check that such a
write lands whole (master, replica, AOF), that the AOF got it in several
steps before the swap, and that a user's HSET, SQL.KILL, the time limit or
a client that goes away while it is staged leave nothing. The server's
KVSQL_TEST_STAGE_PAUSE_MS makes the worker wait between steps, so that a
test can act while a write is staged; no timing is asserted."""
import glob
import os
import signal

import pytest
import redis

from harness import attach_replica, query, run_in_thread, sql, wait_for

ROWS = 20000  # rows of about 300 bytes: about 6 MiB of pages, more than the 4 MiB that stage
BIG_WRITE = ("with recursive c(x) as (select ? union all select x+1 from c where x < ? + %d - 1) "
             "insert into t select x, printf('%%0300d', x) from c" % ROWS)
STAGE = "{db}:wstage"
PAUSE_MS = 300  # between steps, when a test acts during staging: about 7 steps


def info(r):
    return r.info("kvsql")


def version(r):
    v = r.get("{db}:v")
    return int(v) if v else 0


def make_db(r):
    sql(r, "db", "create table t(id integer primary key, v text)")
    sql(r, "db", "insert into t values (0, 'first')")


def big_write(r, first=1):
    return sql(r, "db", BIG_WRITE, first, first)


def count(r):
    return query(r, "db", "select count(*), sum(id) from t")[1]


def expected(n_big_writes):
    ids = [x for k in range(n_big_writes) for x in range(1 + k * ROWS, 1 + (k + 1) * ROWS)]
    return [len(ids) + 1, sum(ids)]


def intact(r):
    return query(r, "db", "pragma integrity_check")[1] == [b"ok"]


def aof_commands(server):
    """The commands of the server's AOF (its incremental files), in order."""
    out = []
    for path in sorted(glob.glob(os.path.join(server.dir, "appendonlydir", "*.incr.aof"))):
        with open(path, "rb") as f:
            data = f.read()
        i = 0
        while i < len(data):
            assert data[i:i + 1] == b"*", "not a RESP array in the AOF at %d" % i
            end = data.index(b"\r\n", i)
            n, i = int(data[i + 1:end]), end + 2
            cmd = []
            for _ in range(n):
                end = data.index(b"\r\n", i)
                size = int(data[i + 1:end])
                cmd.append(data[end + 2:end + 2 + size])
                i = end + 2 + size + 2
            out.append(cmd)
    return out


def staged_server(servers, monkeypatch, **kw):
    """A server whose workers pause PAUSE_MS between staging steps."""
    monkeypatch.setenv("KVSQL_TEST_STAGE_PAUSE_MS", str(PAUSE_MS))
    return servers(**kw)


def while_staged(server, action):
    """Starts the big write on a client of its own, runs action() once its
    staging key exists, and returns the write's outcome."""
    r = server.client()
    t, out = run_in_thread(lambda: big_write(server.client()))
    wait_for(lambda: r.exists(STAGE), what="the write to be staged")
    action()
    t.join(60)
    assert not t.is_alive()
    return out


def test_a_big_write_is_staged_and_lands_whole(server):
    r = server.client()
    make_db(r)
    before, v0 = info(r), version(r)
    assert big_write(r) == ROWS
    after = info(r)
    assert after["kvsql_offloaded_calls"] == before["kvsql_offloaded_calls"] + 1
    assert after["kvsql_offload_staged_writes"] == before["kvsql_offload_staged_writes"] + 1
    assert version(r) == v0 + 1
    assert count(r) == expected(1)
    assert intact(r)
    assert not r.exists(STAGE) and not r.exists("{db}:stage:old")
    assert r.ttl("db") == -1
    # A second one: new pages, and the pages it left as they were copied from the hash.
    r.expire("db", 1000)  # the database's own expiry stays
    assert big_write(r, ROWS + 1) == ROWS
    assert info(r)["kvsql_offload_staged_writes"] == before["kvsql_offload_staged_writes"] + 2
    assert version(r) == v0 + 2
    assert count(r) == expected(2)
    assert intact(r)
    assert 0 < r.ttl("db") <= 1000
    assert not r.exists(STAGE)


def test_a_small_offloaded_write_is_not_staged(server):
    r = server.client()
    make_db(r)
    big_write(r)
    before, v0 = info(r), version(r)
    # Slow (a count over 10M pairs), but it writes one row.
    assert sql(r, "db", "insert into t select 100000, count(*) from t a, t b where a.id < 500") == 1
    after = info(r)
    assert after["kvsql_offloaded_calls"] == before["kvsql_offloaded_calls"] + 1
    assert after["kvsql_offload_staged_writes"] == before["kvsql_offload_staged_writes"]
    assert version(r) == v0 + 1
    assert query(r, "db", "select v from t where id = 100000")[1] == [b"%d" % (500 * (ROWS + 1))]


def test_a_big_write_to_a_much_bigger_database_is_not_staged(server):
    """Staging copies the pages the write left as they were: more than 4
    times the written ones, the write goes the usual way instead."""
    r = server.client()
    make_db(r)
    sql(r, "db", BIG_WRITE.replace("%d - 1" % ROWS, "%d - 1" % (8 * ROWS)), 1, 1)
    before, v0 = info(r), version(r)
    assert sql(r, "db", "update t set v = printf('%0299d', id) where id between 1 and ?", ROWS) == ROWS
    after = info(r)
    assert after["kvsql_offloaded_calls"] == before["kvsql_offloaded_calls"] + 1
    assert after["kvsql_offload_staged_writes"] == before["kvsql_offload_staged_writes"]
    assert version(r) == v0 + 1
    lengths = 5 + ROWS * 299 + 7 * ROWS * 300
    assert query(r, "db", "select count(*), sum(length(v)) from t")[1] == [8 * ROWS + 1, lengths]
    assert intact(r)


def test_the_replica_and_the_aof_get_it_in_steps(servers):
    master = servers(args=["--appendonly", "yes", "--appendfsync", "always"])
    m = master.client()
    replica = attach_replica(servers, master)
    rc = replica.client()
    make_db(m)
    before = info(m)["kvsql_offload_staged_writes"]
    assert big_write(m) == ROWS
    assert info(m)["kvsql_offload_staged_writes"] == before + 1
    wait_for(lambda: rc.exists("db") and count(rc) == expected(1), what="the replica to have the rows")
    assert intact(rc)
    assert not rc.exists(STAGE) and not rc.exists("{db}:stage:old")
    assert rc.get("{db}:v") == m.get("{db}:v")
    # The AOF (the same stream as the replica's): HSETs of the staging key,
    # each step in a MULTI/EXEC of its own, then one MULTI/EXEC swaps it in.
    cmds = aof_commands(master)
    names = [c[0].upper() for c in cmds]
    swap = names.index(b"RENAME")
    assert cmds[swap][1:] == [b"db", b"{db}:stage:old"] and cmds[swap + 1][1:] == [STAGE.encode(), b"db"]
    steps = [i for i, c in enumerate(cmds) if c[0].upper() == b"HSET" and c[1] == STAGE.encode()]
    assert len(steps) >= 5 and steps[-1] < swap
    assert all(names[i - 1] in (b"MULTI", b"UNLINK") for i in steps)  # the first step unlinks a leftover
    assert names[swap - 1] == b"MULTI"
    assert names[swap:names.index(b"EXEC", swap) + 1] == [b"RENAME", b"RENAME", b"PERSIST", b"UNLINK", b"INCR", b"SET",
                                                          b"EXEC"]  # the old hash is freed in the background
    staged_pages = sum((len(cmds[i]) - 2) // 2 for i in steps)
    assert staged_pages == m.hlen("db")
    master.restart()  # loads the AOF
    m = master.client()
    assert count(m) == expected(1)
    assert intact(m)
    assert not m.exists(STAGE)


def test_a_new_database_made_by_one_big_call(servers):
    master = servers(args=["--appendonly", "yes", "--appendfsync", "always"])
    m = master.client()
    assert sql(m, "db", "create table t(id integer primary key, v text); insert into t values (0, 'first'); "
               + BIG_WRITE.replace("?", "1")) == ROWS  # the last statement's changes
    assert info(m)["kvsql_offload_staged_writes"] == 1
    assert count(m) == expected(1)
    cmds = aof_commands(master)
    names = [c[0].upper() for c in cmds]
    swap = names.index(b"RENAME")  # no key to move aside
    assert cmds[swap][1:] == [STAGE.encode(), b"db"]
    assert names[swap:names.index(b"EXEC", swap) + 1] == [b"RENAME", b"PERSIST", b"INCR", b"SET", b"EXEC"]
    master.restart()
    m = master.client()
    assert count(m) == expected(1)
    assert intact(m)


def assert_nothing_written(r, v0):
    """The staged write left nothing: no staging key, the version as it was,
    only the first row."""
    assert not r.exists(STAGE)
    assert version(r) == v0
    assert count(r) == [1, 0]


def test_a_users_hset_while_staged_fails_the_write(servers, monkeypatch):
    server = staged_server(servers, monkeypatch)
    r = server.client()
    make_db(r)
    before, v0, hlen = info(r), version(r), r.hlen("db")
    out = while_staged(server, lambda: r.hset("db", "0", r.hget("db", "0")))
    assert "SQLITE_BUSY" in out.get("error", "") and "changed" in out["error"]
    after = info(r)
    assert after["kvsql_offload_conflicts"] == before["kvsql_offload_conflicts"] + 1
    assert after["kvsql_offload_staged_writes"] == before["kvsql_offload_staged_writes"]
    assert_nothing_written(r, v0)
    assert r.hlen("db") == hlen
    assert intact(r)


@pytest.mark.parametrize("stop", ["SQL.KILL", "query-timeout-ms"])
def test_sql_kill_or_the_time_limit_while_staged_stops_the_write(servers, monkeypatch, stop):
    server = staged_server(servers, monkeypatch)
    r = server.client()
    make_db(r)
    v0 = version(r)
    if stop == "query-timeout-ms":
        r.config_set("kvsql.query-timeout-ms", 1500)  # the SQL takes less; its 7 steps with pauses over 2 s
    out = while_staged(server, (lambda: r.execute_command("SQL.KILL")) if stop == "SQL.KILL" else (lambda: None))
    assert stop in out.get("error", "") and "nothing was written" in out["error"]
    assert_nothing_written(r, v0)


def test_a_client_gone_while_staged_gets_nothing_written(servers, monkeypatch):
    server = staged_server(servers, monkeypatch)
    r = server.client()
    make_db(r)
    v0 = version(r)
    writer = server.client()
    wid = writer.client_id()
    t, out = run_in_thread(lambda: big_write(writer))
    wait_for(lambda: r.exists(STAGE), what="the write to be staged")
    r.client_kill_filter(_id=wid)
    t.join(60)
    assert "error" in out
    wait_for(lambda: info(r)["kvsql_worker_calls_running"] == 0 and not r.exists(STAGE),
             what="the worker to end and unlink its staging key")
    assert version(r) == v0
    assert count(r) == [1, 0]
    assert info(r)["kvsql_offload_staged_writes"] == 0


def test_a_leftover_staging_key_is_replaced(server):
    """A staging key a crash left (here made by hand) is unlinked by the
    next staged write; it never becomes part of the database."""
    r = server.client()
    make_db(r)
    r.hset(STAGE, mapping={"999999": "junk", "5": "junk"})
    assert big_write(r) == ROWS
    assert count(r) == expected(1)
    assert intact(r)
    assert not r.hexists("db", "999999")
    assert not r.exists(STAGE)


def test_a_library_lease_taken_while_staged_fails_the_write(servers, monkeypatch):
    server = staged_server(servers, monkeypatch)
    r = server.client()
    make_db(r)
    v0 = version(r)
    out = while_staged(server, lambda: r.set("{db}:lease", "someone", px=60000))
    assert "SQLITE_BUSY" in out.get("error", "") and "lease" in out["error"]
    assert not r.exists(STAGE)
    assert version(r) == v0
    r.delete("{db}:lease")
    assert count(r) == [1, 0]


def test_a_shutdown_while_staged_leaves_nothing_for_ever(servers, monkeypatch):
    """Stopped while staging, the write is lost; the AOF may hold part of
    its staging key, which carries a TTL and goes with the next staged
    write."""
    server = staged_server(servers, monkeypatch, args=["--appendonly", "yes", "--appendfsync", "always"])
    r = server.client()
    make_db(r)
    v0 = version(r)
    t, out = run_in_thread(lambda: big_write(server.client()))
    wait_for(lambda: r.exists(STAGE), what="the write to be staged")
    server.stop()  # SHUTDOWN NOSAVE: AOF on, so the AOF is what a restart loads
    t.join(60)
    assert "error" in out
    server.start()
    r = server.client()
    assert version(r) == v0
    assert count(r) == [1, 0]
    assert not r.exists(STAGE) or 0 < r.pttl(STAGE) <= 60000
    assert big_write(r) == ROWS
    assert count(r) == expected(1)
    assert not r.exists(STAGE)


def master_and_small_replica_buffer(servers):
    """A master with table db.t whose replicas may have 8 MB waiting
    (client-output-buffer-limit replica 8mb 4mb 60), and its replica."""
    master = servers()
    m = master.client()
    m.config_set("client-output-buffer-limit", "replica 8mb 4mb 60")
    replica = attach_replica(servers, master)
    make_db(m)
    return master, replica


def test_a_stopped_replica_delays_a_staged_write_instead_of_a_full_resync(servers):
    """A replica that reads slower than the worker stages (here: stopped
    with SIGSTOP) would see its output buffer pass client-output-buffer-limit,
    and Redis would drop it and resync it in full. The worker waits before a
    step while the fullest replica buffer could not take it under half the
    limit, so the write finishes once the replica reads again, and the
    replica keeps its link."""
    rows = 80000  # about 24 MiB of pages: more than the limit and the sockets' buffers together
    master, replica = master_and_small_replica_buffer(servers)
    m, rc = master.client(), replica.client()
    wait_for(lambda: rc.exists("db") and count(rc) == [1, 0], what="the replica to have the table")
    full_syncs, waits = m.info("stats")["sync_full"], info(m)["kvsql_offload_staged_replica_waits"]
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        t, out = run_in_thread(lambda: sql(master.client(), "db", "with recursive c(x) as (select 1 union all "
                                           "select x+1 from c where x < ?) insert into t select x, "
                                           "printf('%0300d', x) from c", rows))
        wait_for(lambda: info(m)["kvsql_offload_staged_replica_waits"] > waits, what="the write to wait")
        assert t.is_alive() and m.exists(STAGE)  # staged in part: it waits for the replica
        assert m.info("replication")["connected_slaves"] == 1
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
    t.join(60)
    assert out == {"value": rows}
    assert count(m) == [rows + 1, rows * (rows + 1) // 2]
    wait_for(lambda: count(rc) == [rows + 1, rows * (rows + 1) // 2], what="the replica to have the rows")
    assert m.info("stats")["sync_full"] == full_syncs  # never dropped, so never resynced
    assert info(m)["kvsql_offload_staged_writes"] >= 1


def test_a_replica_that_never_reads_again_stops_the_write_at_the_time_limit(servers):
    """The wait for a replica's buffer counts toward kvsql.query-timeout-ms:
    the write then fails with nothing written, as any call stopped there."""
    master, replica = master_and_small_replica_buffer(servers)
    m = master.client()
    m.config_set("kvsql.query-timeout-ms", 1500)
    v0 = version(m)
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(redis.ResponseError, match="SQLITE_INTERRUPT.*kvsql.query-timeout-ms"):
            sql(m, "db", "with recursive c(x) as (select 1 union all select x+1 from c where x < 80000) "
                         "insert into t select x, printf('%0300d', x) from c")
        assert info(m)["kvsql_offload_staged_replica_waits"] > 0
        assert version(m) == v0 and count(m) == [1, 0] and not m.exists(STAGE)
        assert m.info("replication")["connected_slaves"] == 1
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
