"""test_spread_cluster.py - the spread layout (docs/FORMAT.md, "The spread
layout") through the library on a real 3-master Redis Cluster
(tests/cluster.py): pages on every master, round trips, a writer stopped
at each step boundary, a zombie's late copies, slot migration of page-key
slots and of the home slot under a writer and a reader, and a master
killed (-9) then failed over with wait=1.

Clients that must be separate processes (stopped, killed) are this file's
BANK script run by the Python interpreter; every loop is bounded in count
and time, every wait is for an event. The slowest test (failover: 6 nodes,
a replica's election) is marked `slow` in its name and docstring and costs
about 35 s here; the file about a minute on this 2-core machine."""
import json
import os
import signal
import sqlite3
import subprocess
import sys

import pytest

from cluster import move_slot, slot_of, wait_for
from libhelp import built, env, pydb, uri, writer_stopped_at

pytestmark = pytest.mark.skipif(not built(), reason="libkvsql.so is not built")
needs_inprocess = pytest.mark.skipif(bool(os.environ.get("KVSQL_PRELOAD")),
                                     reason="a sanitized library loads only into a preloaded process")

ROWS = 3000  # rows of about 230 bytes: about 180 pages of 4 KiB, 12 runs
SCAN_ROWS = 20000  # about 1100 pages: the b-tree read-ahead reaches its full width


def stats(db):
    return json.loads(db.execute("select kvsql_stats()").fetchone()[0])


def run_keys_on(node, key):
    """The run keys of key that node itself holds."""
    return node.client().keys("{%s/*}%s:p" % (key, key))


def command_calls(node, cmd):
    got = node.client().info("commandstats").get("cmdstat_" + cmd)
    return got["calls"] if got else 0


def fill(seed, key, rows=ROWS, **params):
    db = pydb(seed, key, layout="spread", **params)
    db.execute("create table t(id integer primary key, v integer, pad text)")
    db.execute("begin")
    for i in range(rows):
        db.execute("insert into t values (?, ?, ?)", (i, i % 7, "%06d" % i * 35))
    db.execute("commit")
    return db


def native(rows=ROWS):
    db = sqlite3.connect(":memory:")
    db.execute("create table t(id integer primary key, v integer, pad text)")
    db.executemany("insert into t values (?, ?, ?)", ((i, i % 7, "%06d" % i * 35) for i in range(rows)))
    return db


QUERIES = ["select * from t order by id", "select v, count(*), sum(id) from t group by v order by v",
           "select id from t where pad like '%0042%' order by id"]


@needs_inprocess
def test_a_spread_database_lives_on_every_master_and_reads_as_a_native_copy(clusters):
    c = clusters(masters=3)
    seed = c.masters()[0]
    db = fill(seed, "sc")
    masters = c.masters()
    per_master = {m.port: len(run_keys_on(m, "sc")) for m in masters}
    print("run keys per master:", per_master)
    assert all(n > 0 for n in per_master.values()), per_master
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    db.execute("update t set v = v + 1 where id % 100 = 0")
    ref = native()
    ref.execute("update t set v = v + 1 where id % 100 = 0")
    other = pydb(c.masters()[1], "sc", layout="spread")  # another seed, a cold cache
    for q in QUERIES:
        assert other.execute(q).fetchall() == ref.execute(q).fetchall(), q
    assert other.execute("pragma integrity_check").fetchone()[0] == "ok"


@needs_inprocess
def test_with_wait_a_commit_whose_copies_lack_replicas_publishes_nothing(clusters):
    """wait=1: the copies must be on a replica of every node that holds some
    before the publish; a map naming copies that a failover could lose would
    leave pages unreadable. Replicas stopped: the commit fails, nothing
    published, its copies dropped; once they run again, writes go on."""
    c = clusters(masters=3, replicas=1)
    seed = c.masters()[0]
    db = fill(seed, "wr", wait=1, wait_timeout_ms=300)
    home = c.owner("wr")
    v0 = home.client().get("{wr}:v")
    replicas = [r for m in c.masters() for r in c.replicas_of(m)]  # asked before any node stops
    for r in replicas:
        os.kill(r.proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(sqlite3.OperationalError):
            db.execute("update t set v = v + 100")  # every page: copies on every master
        assert "nothing was published" in db.execute("select kvsql_error()").fetchone()[0]
        assert home.client().get("{wr}:v") == v0
    finally:
        for r in replicas:
            os.kill(r.proc.pid, signal.SIGCONT)
    assert db.execute("select count(*), sum(v) from t").fetchone() == (ROWS, sum(i % 7 for i in range(ROWS)))
    db.execute("update t set v = v + 1 where id = 1")  # the replicas run again: a commit goes
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"


@needs_inprocess
def test_round_trips_on_the_cluster(clusters):
    c = clusters(masters=3)
    seed = c.masters()[0]
    fill(seed, "rt", SCAN_ROWS).close()
    db = pydb(seed, "rt", layout="spread")
    db.execute("select v from t where id = 5").fetchone()  # warm: the page and the map cached
    before = stats(db)["round_trips"]
    assert db.execute("select v from t where id = 5").fetchone()[0] == 5
    warm = stats(db)["round_trips"] - before
    before = stats(db)["round_trips"]
    db.execute("update t set v = v + 1 where id = 5")
    write = stats(db)["round_trips"] - before
    cold = pydb(seed, "rt", layout="spread")
    hmget = {m.port: command_calls(m, "hmget") for m in c.masters()}
    s0 = stats(cold)
    cold.execute("begin")
    assert cold.execute("select count(*), sum(v) from t").fetchone()[0] == SCAN_ROWS
    cold.execute("commit")
    s1 = stats(cold)
    per_node = {m.port: command_calls(m, "hmget") - hmget[m.port] for m in c.masters()}
    trips, pages = s1["round_trips"] - s0["round_trips"], s1["pages_read"] - s0["pages_read"]
    reads = s1["reads"] - s0["reads"]
    print("warm read txn: %d round trip(s); one-row write: %d; cold scan: %d pages in %d round trips "
          "(%d page reads), %.1f pages per round trip; HMGETs per master %s"
          % (warm, write, pages, trips, reads, pages / trips, per_node))
    assert warm == 1
    assert write <= 3
    assert pages / trips >= 32
    assert all(n > 0 for n in per_node.values()), per_node
    assert sum(per_node.values()) > reads  # a read's HMGETs went to several nodes in its one round trip


# ---- processes: a writer stopped at a step boundary, a bank ----------------------

def home_state(c, key):
    r = c.owner(key).client()
    return r.get("{%s}:v" % key), r.get("{%s}:id" % key), r.hgetall(key)


def total(db):
    return db.execute("select sum(v) from t").fetchone()[0]


def copies_of(c, key, copy):
    return [f for m in c.masters() for k in run_keys_on(m, key) for f in m.client().hkeys(k)
            if f.decode().endswith(":" + copy)]


@needs_inprocess
@pytest.mark.parametrize("at", ["lock", "copies"])
def test_a_writer_stopped_at_a_step_boundary_changes_nothing_on_any_node(clusters, at):
    c = clusters(masters=3)
    seed = c.masters()[0]
    db = fill(seed, "f")
    before, sum0 = home_state(c, "f"), total(db)
    w = writer_stopped_at(seed, "f", at, lease_ms=300)
    home = c.owner("f").client()
    pending = home.zrange("{f}:pending", 0, -1)
    if at == "copies":
        assert len(pending) == 1
        copy = pending[0].decode().split(":")[0]
        where = {m.port for m in c.masters() for k in run_keys_on(m, "f")
                 for f in m.client().hkeys(k) if f.decode().endswith(":" + copy)}
        assert len(where) == 3, where  # its copies are on every master...
    else:
        assert pending == []
    assert home_state(c, "f") == before  # ...and no snapshot sees them
    reader = pydb(c.masters()[2], "f", layout="spread")
    assert total(reader) == sum0 and total(db) == sum0
    w.kill()
    w.wait()
    db.execute("update t set v = v + 10")  # the lease lapsed: another writer goes on
    assert total(pydb(seed, "f", layout="spread")) == sum0 + 10 * ROWS
    if at == "copies":
        def swept():
            db.execute("select kvsql_gc()").fetchone()
            return home.zcard("{f}:pending") == 0
        wait_for(swept, timeout=30, what="the dead writer's intent to lapse and be swept")
        assert copies_of(c, "f", copy) == []


@needs_inprocess
def test_a_zombie_writers_late_copies_on_every_node_change_nothing(clusters):
    c = clusters(masters=3)
    seed = c.masters()[0]
    db = fill(seed, "z")
    sum0 = total(db)
    home = c.owner("z").client()
    w = writer_stopped_at(seed, "z", "lock", lease_ms=300)
    wait_for(lambda: not home.exists("{z}:lease"), what="the stopped writer's lease to lapse")
    db.execute("update t set v = v + 10")
    after = home_state(c, "z")
    w.send_signal(signal.SIGCONT)  # it writes its copies to every node now, late, and tries to publish
    out, err = w.communicate(timeout=60)
    assert out.startswith("failed:") and "lease" in out, out + err
    assert home_state(c, "z") == after
    assert total(pydb(c.masters()[1], "z", layout="spread")) == sum0 + 10 * ROWS
    assert home.zcard("{z}:pending") == 0


BANK = """
import os, random, sqlite3, sys, time
c = sqlite3.connect(":memory:"); c.enable_load_extension(True); c.load_extension(os.environ["KVSQL_LIB"])
url, mode, stop, first = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
db = sqlite3.connect(url, uri=True, isolation_level=None, timeout=30)
deadline, n, errors, reads = time.time() + 150, 0, 0, 0  # reads: counted, said at the end (a pipe holds 64 KiB)
while not os.path.exists(stop) and time.time() < deadline and n < (100000 if mode == "write" else 2000000):
    try:
        if mode == "write":
            a, b = random.sample(range(ACCOUNTS), 2)
            db.execute("begin immediate")
            db.execute("update acct set bal = bal - 1 where id = ?", (a,))
            db.execute("update acct set bal = bal + 1 where id = ?", (b,))
            db.execute("insert into acks values (?)", (first + n,))
            db.execute("commit")
            print("ack", first + n, flush=True)
        else:
            db.execute("begin")
            s, k = db.execute("select sum(bal), count(*) from acct").fetchone()
            db.execute("commit")
            if (s, k) != (ACCOUNTS * 100, ACCOUNTS):
                print("torn", s, k, flush=True)
            reads += 1
        n += 1
    except sqlite3.Error as e:
        errors += 1
        try:
            db.execute("rollback")
        except sqlite3.Error:
            pass
        msg = str(e)
        try:
            msg = db.execute("select kvsql_error()").fetchone()[0]
        except sqlite3.Error:
            pass
        print("error", msg.replace(chr(10), " "), file=sys.stderr, flush=True)
        if mode == "write":
            n += 1  # its id is never acknowledged: not reused
        time.sleep(0.01)
        if errors > 2000:
            sys.exit("too many errors")
print("reads", reads)
"""
ACCOUNTS = 240  # rows of about 1 KiB: 3 a page, about 80 pages over 5 runs or more


def bank(seed, key, **params):
    db = pydb(seed, key, layout="spread", **params)
    db.execute("create table acct(id integer primary key, bal integer, pad text)")
    db.execute("create table acks(id integer primary key)")
    db.execute("begin")
    for i in range(ACCOUNTS):
        db.execute("insert into acct values (?, 100, ?)", (i, "%04d" % i * 250))
    db.execute("commit")
    return db


def client(seed, key, mode, stop, first=0, **params):
    script = BANK.replace("ACCOUNTS", str(ACCOUNTS))
    return subprocess.Popen([sys.executable, "-c", script, uri(seed, key, layout="spread", **params), mode,
                             str(stop), str(first)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env())


def lines_of(p, stop, timeout=200):
    stop.write_text("stop")
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, (out[-2000:], err[-4000:])
    return out.splitlines(), err


def check_bank(db, acked):
    assert db.execute("select sum(bal), count(*) from acct").fetchone() == (ACCOUNTS * 100, ACCOUNTS)
    have = {r[0] for r in db.execute("select id from acks")}
    assert acked <= have, sorted(acked - have)[:10]  # no acknowledged commit lost
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"


@needs_inprocess
def test_slot_migration_of_page_keys_and_of_the_home_slot_under_a_writer_and_a_reader(clusters, tmp_path):
    c = clusters(masters=3)
    seed = c.masters()[0]
    db = bank(seed, "b")
    runs = sorted({k.decode() for m in c.masters() for k in run_keys_on(m, "b")})
    stop = tmp_path / "stop"
    w, r = client(seed, "b", "write", stop), client(seed, "b", "read", stop)
    acks_now = lambda: db.execute("select count(*) from acks").fetchone()[0]  # noqa: E731
    wait_for(lambda: w.poll() is not None or acks_now() >= 10, timeout=60, what="the writer to commit")
    moves, moved = 0, []
    # two page-key slots of each master, then the home slot: moved key by key while both run
    for m in c.masters():
        moved += [k for k in runs if c.owner(k) is m][:2]
    for key in moved + ["b"]:
        src = c.owner(key)
        dst = next(m for m in c.masters() if m is not src)
        move_slot(c, slot_of(key), src, dst)
        moves += 1
        assert c.owner(key) is dst
    n0 = acks_now()
    wait_for(lambda: w.poll() is not None or acks_now() >= n0 + 20, timeout=60,
             what="the writer to go on after the migrations")
    wout, werr = lines_of(w, stop)
    rout, rerr = lines_of(r, stop)
    acked = {int(x.split()[1]) for x in wout if x.startswith("ack ")}
    torn = [x for x in rout if x.startswith("torn")]
    reads = sum(int(x.split()[1]) for x in rout if x.startswith("reads "))
    print("slot migration: %d slots moved, %d commits acknowledged, %d reads, %d torn; writer errors %d, "
          "reader errors %d %s" % (moves, len(acked), reads, len(torn), werr.count("error"), rerr.count("error"),
                                   (werr + rerr).splitlines()[:3]))
    assert torn == [] and reads > 0 and acked
    check_bank(pydb(c.masters()[1], "b", layout="spread"), acked)


@needs_inprocess
def test_slow_a_master_killed_then_failed_over_with_wait_1_keeps_every_acknowledged_commit(clusters, tmp_path):
    """slow: 6 nodes, a replica's election and the killed master's return as
    a replica, about 40 s here (the rest of the file: about 20 s)."""
    c = clusters(masters=3, replicas=1)
    seed = c.masters()[0]
    db = bank(seed, "k", wait=1)
    home = c.owner("k")
    victim = next(m for m in c.masters() if m is not home and run_keys_on(m, "k"))
    stop = tmp_path / "stop"
    w = client(seed, "k", "write", stop, wait=1)
    r = client(seed, "k", "read", stop)
    wait_for(lambda: w.poll() is not None or db.execute("select count(*) from acks").fetchone()[0] >= 30,
             timeout=60, what="commits before the kill")
    waits = {m.port: command_calls(m, "wait") for m in c.masters()}
    assert all(n > 0 for n in waits.values()), waits  # WAIT on the home node and on every node written
    victim.kill()
    c.wait_stable(timeout=60)
    # The promoted replica has no replica of its own: commits with a page on
    # it fail, nothing published (wait=1 cannot hold there), until the
    # killed master comes back as its replica.
    victim.start()
    wait_for(lambda: any(r.port == victim.port for m in c.masters() for r in c.replicas_of(m))
             and victim.client().info("replication").get("master_link_status") == "up",
             timeout=60, what="the killed master back as a replica")
    n0 = db.execute("select count(*) from acks").fetchone()[0]
    wait_for(lambda: w.poll() is not None or db.execute("select count(*) from acks").fetchone()[0] >= n0 + 20,
             timeout=60, what="commits after the failover")
    wout, werr = lines_of(w, stop)
    rout, _ = lines_of(r, stop)
    acked = {int(x.split()[1]) for x in wout if x.startswith("ack ")}
    torn = [x for x in rout if x.startswith("torn")]
    reads = sum(int(x.split()[1]) for x in rout if x.startswith("reads "))
    print("failover: %d commits acknowledged with wait=1, %d reads, %d torn, writer errors %d %s"
          % (len(acked), reads, len(torn), werr.count("error"), werr.splitlines()[:3]))
    assert torn == [] and reads > 0
    check_bank(pydb(c.masters()[0], "k", layout="spread"), acked)
