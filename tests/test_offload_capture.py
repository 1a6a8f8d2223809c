"""test_offload_capture.py - a long write on a database whose change capture
is on moves to a worker thread like any long write (issue 22: no call holds
the main thread past kvsql.offload-after-us plus 50 ms).

The worker captures the call's row changes and writes their entries in the
same atomic landing as the pages, holding Redis's lock: after the pages
and the version's INCR, in the one MULTI/EXEC of a one-step write or of a
staged write's swap (docs/FORMAT.md, "The changes stream"). Everything that
could make an entry fail is checked before anything is written, and
capture turned on or off while the write runs fails it with nothing
written. Only the order of events and counters are asserted, never times.
"""
import re

import pytest
import redis

from harness import attach_replica, query, run_in_thread, sql, wait_for
from test_offload_stage import BIG_WRITE, ROWS as STAGED_ROWS, STAGE, aof_commands, make_db

STREAM = "{db}:changes"
ROWS = 200000
FILL = ("with recursive c(x) as (select 1 union all select x+1 from c where x<%d) "
        "insert into t select x, 'v'||x from c" % ROWS)
# A write that takes a while (a correlated count for every row) and changes
# 199 rows: those whose id is a multiple of 1000 and has 100 rows after it.
# One term, so SQLite cannot test the cheap part first.
SLOW_CAPTURED_WRITE = ("update t set v = v || 'x' where (select count(*) from t t2 where t2.id between t.id "
                       "and t.id + 100) = 101 - (id % 1000 != 0) * 1000")
CHANGED = 199


def info(r):
    return r.info("kvsql")


def version(r):
    v = r.get("{db}:v")
    return int(v) if v else 0


def ops(r):
    return [f[b"op"].decode() for _, f in r.xrange(STREAM)]


def filled(r):
    sql(r, "db", "create table t(id integer primary key, v text)")
    sql(r, "db", FILL)
    r.execute_command("SQL.CHANGES", "db", "ON")


def on_a_worker(server, call):
    """Runs call(client) in a thread; waits until it runs on a worker thread
    and checks that another client's PING is answered meanwhile. Returns
    the thread and its outcome."""
    other = server.client()
    t, out = run_in_thread(lambda: call(server.client()))
    wait_for(lambda: info(other)["kvsql_worker_calls_running"] > 0 or not t.is_alive(), timeout=60,
             what="the write on a worker")
    assert info(other)["kvsql_worker_calls_running"] > 0, \
        "the write ran to its end on the main thread: %r" % (out,)
    assert other.ping() and t.is_alive()
    return t, out


def test_a_long_write_with_capture_on_moves_and_lands_with_its_entries(servers):
    server = servers(args=["--appendonly", "yes", "--appendfsync", "always"])
    r = server.client()
    filled(r)
    before, v0 = info(r)["kvsql_offloaded_calls"], version(r)
    t, out = on_a_worker(server, lambda c: sql(c, "db", SLOW_CAPTURED_WRITE))
    t.join(60)
    assert out.get("value") == CHANGED, out
    assert info(r)["kvsql_offloaded_calls"] == before + 1
    assert version(r) == v0 + 1
    entries = r.xrange(STREAM)
    assert [f[b"op"] for _, f in entries] == [b"on"] + [b"update"] * CHANGED
    assert all(f[b"version"] == str(v0 + 1).encode() for _, f in entries[1:])
    assert entries[1][1][b"new"] == b'{"id":["integer","1000"],"v":["text","v1000x"]}'
    assert query(r, "db", "select count(*) from t where v like '%x'")[1] == [CHANGED]
    # The AOF (the replicas' stream): pages, version, then the entries, in one MULTI/EXEC.
    names = [c[0].upper() for c in aof_commands(server)]
    first = names.index(b"XADD", names.index(b"XADD") + 1)  # the first after SQL.CHANGES's marker
    start = max(i for i in range(first) if names[i] == b"MULTI")
    assert names[start:names.index(b"EXEC", start) + 1] == \
        [b"MULTI", b"HSET", b"INCR", b"SET"] + [b"XADD"] * CHANGED + [b"EXEC"]
    server.restart()
    r = server.client()
    assert len(r.xrange(STREAM)) == CHANGED + 1
    assert query(r, "db", "select count(*) from t where v like '%x'")[1] == [CHANGED]


def test_a_big_captured_write_is_staged_and_its_entries_go_with_the_swap(servers):
    server = servers(args=["--appendonly", "yes", "--appendfsync", "always"])
    r = server.client()
    make_db(r)
    r.execute_command("SQL.CHANGES", "db", "ON", "MAXLEN", "=", "5000")
    r.config_set("kvsql.capture-max-rows", 0)  # 20,000 entries: past the default bound (tested below)
    before = info(r)
    assert sql(r, "db", BIG_WRITE, 1, 1) == STAGED_ROWS
    after = info(r)
    assert after["kvsql_offloaded_calls"] == before["kvsql_offloaded_calls"] + 1
    assert after["kvsql_offload_staged_writes"] == before["kvsql_offload_staged_writes"] + 1
    assert r.xlen(STREAM) == 5000  # trimmed exactly, as configured
    last = r.xrevrange(STREAM, count=1)[0][1]
    assert last[b"op"] == b"insert" and last[b"key"] == b'[["integer","%d"]]' % STAGED_ROWS
    assert not r.exists(STAGE)
    cmds = aof_commands(server)
    names = [c[0].upper() for c in cmds]
    swap = names.index(b"RENAME")
    assert names[swap:names.index(b"EXEC", swap) + 1] == \
        [b"RENAME", b"RENAME", b"PERSIST", b"UNLINK", b"INCR", b"SET"] + [b"XADD"] * STAGED_ROWS + [b"EXEC"]
    assert cmds[swap + 6][1:4] == [STREAM.encode(), b"MAXLEN", b"="]


@pytest.mark.parametrize("damage", ["stream", "config"])
def test_entries_that_cannot_be_written_fail_the_moved_write_with_nothing_written(server, damage):
    r = server.client()
    filled(r)
    if damage == "stream":  # another type: XADD would fail
        r.delete(STREAM)
        r.set(STREAM, "not a stream")
        match = "holds another type than a stream: nothing was written"
    else:
        r.hset("{db}:changes:cfg", "maxlen", "1e3")
        match = "is not valid.*nothing was written"
    before, v0 = info(r)["kvsql_offloaded_calls"], version(r)
    t, out = on_a_worker(server, lambda c: sql(c, "db", SLOW_CAPTURED_WRITE))
    t.join(60)
    assert "error" in out, out
    assert re.search(match, out["error"]), out["error"]
    assert info(r)["kvsql_offloaded_calls"] == before + 1
    assert version(r) == v0
    assert query(r, "db", "select count(*) from t where v like '%x'")[1] == [0]


@pytest.mark.parametrize("turn", ["OFF", "ON"])
def test_capture_turned_on_or_off_while_the_write_runs_fails_it(server, turn):
    r = server.client()
    filled(r)
    if turn == "ON":
        r.execute_command("SQL.CHANGES", "db", "OFF")
    v0, length = version(r), r.xlen(STREAM)
    t, out = on_a_worker(server, lambda c: sql(c, "db", SLOW_CAPTURED_WRITE))
    assert r.execute_command("SQL.CHANGES", "db", turn) == b"OK"
    t.join(60)
    assert re.search("SQLITE_BUSY .*capture was turned (on|off).*nothing was written", out.get("error", "")), out
    assert version(r) == v0
    assert r.xlen(STREAM) == length + 1  # the marker only
    assert query(r, "db", "select count(*) from t where v like '%x'")[1] == [0]


def test_entries_too_big_for_a_replicas_buffer_fail_a_staged_write_with_nothing_written(servers):
    """A staged write's pages reach the replicas in steps, but its change
    entries go in the swap's one MULTI/EXEC: more bytes of them than a
    replica's output buffer may hold (client-output-buffer-limit replica
    8mb) would make Redis drop the replica and resync it in full."""
    master = servers()
    m = master.client()
    m.config_set("client-output-buffer-limit", "replica 8mb 4mb 60")
    replica = attach_replica(servers, master)
    make_db(m)
    m.execute_command("SQL.CHANGES", "db", "ON")
    m.config_set("kvsql.capture-max-rows", 0)  # the replicas' bound, not the rows' (tested below)
    before, v0, syncs = info(m), version(m), m.info("stats")["sync_full"]
    with pytest.raises(redis.ResponseError, match="SQLITE_TOOBIG kvsql: the change entries of this write"):
        sql(m, "db", BIG_WRITE, 1, 1)  # about 11 MB of entries
    assert info(m)["kvsql_offloaded_calls"] == before["kvsql_offloaded_calls"] + 1
    assert version(m) == v0 and m.xlen(STREAM) == 1 and not m.exists(STAGE)
    assert query(m, "db", "select count(*) from t")[1] == [1]
    assert sql(m, "db", "insert into t values (2, 'two')") == 1  # a small one goes
    m.execute_command("WAIT", 1, 5000)
    assert replica.client().xlen(STREAM) == 2 and m.info("stats")["sync_full"] == syncs


def insert_rows(n, first=1):
    return ("with recursive c(x) as (select %d union all select x+1 from c where x<%d) "
            "insert into t select x, 'v' from c" % (first, first + n - 1))


def test_a_captured_write_past_capture_max_rows_is_refused_with_nothing_written(servers):
    """A captured write's entries are written in one step under Redis's
    lock (about 3 us each): past kvsql.capture-max-rows the write is refused
    before anything is written, so no write holds the main thread long."""
    server = servers()
    r = server.client()
    sql(r, "db", "create table t(id integer primary key, v text)")
    r.execute_command("SQL.CHANGES", "db", "ON")
    r.config_set("kvsql.capture-max-rows", 100)
    v0, n0 = version(r), r.xlen(STREAM)
    with pytest.raises(redis.ResponseError, match="SQLITE_TOOBIG.*101 rows.*capture-max-rows \\(100\\)"):
        sql(r, "db", insert_rows(101))
    assert version(r) == v0 and r.xlen(STREAM) == n0
    assert query(r, "db", "select count(*) from t")[1] == [0]
    assert sql(r, "db", insert_rows(100)) == 100  # at the bound: written, with its entries
    assert r.xlen(STREAM) == n0 + 100
    r.config_set("kvsql.capture-max-rows", 0)  # no limit
    assert sql(r, "db", insert_rows(1000, first=101)) == 1000
    assert r.xlen(STREAM) == n0 + 1100


def test_by_default_a_captured_write_of_200k_rows_is_refused(servers):
    """The default bound (15,000 rows, about 45 ms of entries) refuses the
    200,000-row captured update that held the main thread 0.55 s."""
    server = servers()
    r = server.client()
    filled(r)
    v0, n0 = version(r), r.xlen(STREAM)
    with pytest.raises(redis.ResponseError, match="SQLITE_TOOBIG.*200000 rows"):
        sql(r, "db", "update t set v = v || 'x'")
    assert version(r) == v0 and r.xlen(STREAM) == n0
    assert query(r, "db", "select count(*) from t where v like '%x'")[1] == [0]
