"""test_library_cluster.py - libkvsql.so (the `redis` VFS) on Redis Cluster,
and its wait= parameter.

Run by `make test` (tests/run, pytest). Clusters are real: redis-server
processes on loopback joined by `redis-cli --cluster create`
(tests/cluster.py). Client programs are this file run as a script (the
`worker` mode at the bottom), each one a separate process as an
application would be. Every loop is bounded in count and time; no
assertion depends on timing.
"""
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from cluster import move_slot, slot_of, wait_for
from fakenode import FakeNode
from libhelp import LIB, built, env, shell

PY = sys.executable
HERE = os.path.abspath(__file__)

pytestmark = pytest.mark.skipif(not built(), reason="libkvsql.so is not built")


def uri(node, key, **params):
    q = "".join("&%s=%s" % kv for kv in params.items())
    return "file:%s?vfs=redis&redis=%s%s" % (key, node.addr, q)


def run_sql(node, key, sql, **params):
    """SQL through the sqlite3 shell on key, seed `node`: stdout; fails on stderr."""
    out, err = shell(node, key, sql, **params)
    assert err == "", err
    return out


def stats_line():
    return "select kvsql_stats();\n"


def worker(stop, *args, **params):
    """A client process: `write` commits rows, `read` checks them, until
    the file `stop` exists (or its count or 150 s run out)."""
    argv = [str(a) for a in args] + ["%s=%s" % kv for kv in params.items()]
    return subprocess.Popen([PY, HERE, "worker"] + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env(KVSQL_CLIENT_SECONDS="150", KVSQL_STOP_FILE=str(stop)))


errs = []  # the workers' stderr (retried errors), for the summaries


def finish(procs, timeout=240):
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, "worker failed (%s):\n%s\n%s" % (p.returncode, out[-2000:], err[-4000:])
        outs.append(out)
        errs.append(err)
    return outs


def acks(outs, word="ack"):
    """{key: set of ids} from worker lines `ack KEY ID`."""
    got = {}
    for out in outs:
        for line in out.splitlines():
            f = line.split()
            if len(f) == 3 and f[0] == word:
                got.setdefault(f[1], set()).add(int(f[2]))
    return got


# ---- routing -----------------------------------------------------------------

def test_a_hundred_databases_spread_over_three_masters_through_one_seed(clusters):
    c = clusters(masters=3)
    seed = c.masters()[0]
    keys = ["lib:%d" % i for i in range(100)]
    # one shell process, 100 databases attached? no: ATTACH opens other keys on the
    # same seed; each key routes on its own
    script = "".join("attach 'file:%s?vfs=redis&redis=%s' as d%d;\n"
                     "create table d%d.t(k text, n int); insert into d%d.t values ('%s', %d);\n"
                     "detach d%d;\n" % (k, seed.addr, i, i, i, k, i, i) for i, k in enumerate(keys))
    run_sql(seed, "lib:main", script)
    held = {}
    for m in c.masters():
        for k in m.client().scan_iter(match="lib:*", count=1000):
            held[k.decode()] = m.port
    assert set(keys) <= set(held)
    for k in keys:
        assert held[k] == c.owner(k).port, k  # each on the master that owns its slot
    per_master = [sum(1 for k in keys if held[k] == m.port) for m in c.masters()]
    assert len(per_master) == 3 and min(per_master) >= 15, per_master
    # read back through the seed; the connection goes to the owner directly
    # (CLUSTER SLOTS in the handshake): no MOVED on the way
    for i, k in enumerate(keys[:30]):
        out = run_sql(seed, k, "select k, n from t;\n" + stats_line())
        lines = out.split("\n")
        assert lines[0] == "%s|%d" % (k, i)
        st = json.loads(lines[1])
        assert st["redirects"] == 0 and st["connects"] == (1 if c.owner(k) is seed else 2), (k, st)


def test_a_moved_database_is_followed_by_an_open_connection(clusters):
    c = clusters(masters=3)
    key = "{moving}db"
    home = c.owner(key)
    away = next(m for m in c.masters() if m is not home)
    p = subprocess.Popen(["sqlite3", "-bail", "-cmd", ".load " + LIB, "-cmd", ".open " + uri(home, key)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env())
    try:
        p.stdin.write("create table t(v text); insert into t values ('home');\nselect 'step1';\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "step1"
        move_slot(c, slot_of(key), home, away)  # while the connection is open
        assert c.owner(key) is away
        p.stdin.write("insert into t values ('away');\nselect group_concat(v) from t;\n" + stats_line())
        p.stdin.flush()
        assert p.stdout.readline().strip() == "home,away"
        st = json.loads(p.stdout.readline())
        assert st["redirects"] >= 1 and st["connects"] == 2, st
        out, err = p.communicate("pragma integrity_check;\n", timeout=60)
        assert err == "" and out.strip() == "ok"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert away.client().exists(key) == 1
    assert home.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot_of(key)) == 0


def test_ask_during_a_migration_then_the_new_owner(clusters):
    """A client that meets the slot half-migrated (every key already on the
    target) follows ASK; the target answers TRYAGAIN while a script's keys
    are missing there, the client waits and, once the slot is done, reads
    from the new owner."""
    c = clusters(masters=3)
    key = "{asking}db"
    source = c.owner(key)
    target = next(m for m in c.masters() if m is not source)
    run_sql(source, key, "create table t(v text); insert into t values ('before');")
    slot = slot_of(key)
    move_slot(c, slot, source, target, finish=False)  # IMPORTING/MIGRATING, keys moved
    assert source.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0

    def finish_soon():
        time.sleep(0.5)
        tid = c.node_id(target)
        for n in [target] + [m for m in c.masters() if m is not target]:  # the target first
            n.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", tid)

    t = threading.Thread(target=finish_soon)
    t.start()
    try:
        out = run_sql(source, key, "select v from t;\n" + stats_line())
    finally:
        t.join()
    lines = out.split("\n")
    assert lines[0] == "before"
    assert json.loads(lines[1])["redirects"] >= 1
    c.wait_stable()
    assert run_sql(source, key, "insert into t values ('after'); select count(*) from t;") == "2\n"


# ---- resharding under load ---------------------------------------------------

def lowest_slot_keys(c, node, prefix, span, n):
    """n keys whose slots are among node's `span` lowest (moved first by reshard)."""
    lowest = set(sorted(c.view(node)[c.node_id(node)]["slots"])[:span])
    out = []
    for i in range(200000):
        k = "%s%d" % (prefix, i)
        if slot_of(k) in lowest:
            out.append(k)
            if len(out) == n:
                break
    return out


def check_databases(c, keys, acked, seed):
    """Every acknowledged id is in its database, which passes integrity_check."""
    lost = {}
    for k in keys:
        out = run_sql(seed, k, "pragma integrity_check; select id from t; select n from meta;")
        lines = out.split()
        assert lines[0] == "ok", (k, out[:300])
        ids = {int(x) for x in lines[1:-1]}
        assert int(lines[-1]) == len(ids), (k, "meta.n disagrees with the rows")
        if acked.get(k, set()) - ids:
            lost[k] = sorted(acked[k] - ids)[:10]
    assert not lost, "acknowledged commits lost: %r" % lost


def create_databases(seed, keys):
    script = "".join("attach 'file:%s?vfs=redis&redis=%s' as d;\n"
                     "create table d.t(id integer primary key, w int, pad blob);\n"
                     "create table d.meta(n int); insert into d.meta values (0);\ndetach d;\n"
                     % (k, seed.addr) for k in keys)
    run_sql(seed, "setup", script)


def test_reshard_under_library_load_loses_no_acknowledged_commit(clusters, tmp_path):
    c = clusters(masters=3)
    a, b, _ = sorted(c.masters(), key=lambda n: min(c.view(n)[c.node_id(n)]["slots"]))
    keys = lowest_slot_keys(c, a, "rs:", 300, 12) + ["rs:other:%d" % i for i in range(12)]
    create_databases(a, keys)
    before = {k: c.owner(k) for k in keys}
    stop = tmp_path / "stop"
    procs = [worker(stop, "write", a.addr, w, 100000, *keys[w::3]) for w in range(3)]
    procs.append(worker(stop, "read", a.addr, 0, 100000, *keys))
    first = procs[0].stdout.readline()  # writing has begun
    c.reshard(a, b, 300)
    c.wait_stable()
    time.sleep(0.5)  # writes after the reshard too (not needed for the checks)
    stop.write_text("")
    outs = finish(procs) + [first]
    c.wait_stable()
    moved = [k for k in keys if c.owner(k) is not before[k]]
    assert len(moved) >= 10, moved
    acked = acks(outs)
    assert sum(len(v) for v in acked.values()) >= 300
    assert not any("bad" in o for o in outs), [o for o in outs if "bad" in o][:1]
    check_databases(c, keys, acked, c.masters()[0])
    print("\nreshard: %d databases moved, %d commits acknowledged, %d errors retried" % (
        len(moved), sum(len(v) for v in acked.values()), sum(o.count("error") for o in errs)))


# ---- failover ----------------------------------------------------------------

def test_failover_keeps_every_commit_acknowledged_after_wait_1(clusters, tmp_path):
    c = clusters(masters=3, replicas=1)
    victim = c.masters()[0]
    heir = c.replicas_of(victim)[0]
    keys = [k for k in ("fo:%d" % i for i in range(300)) if c.owner(k) is victim][:12]
    other = next(m for m in c.masters() if m is not victim)
    create_databases(victim, keys)
    # the writers' seed is the victim itself: after its death they reconnect
    # through the other nodes their slot map named
    stop = tmp_path / "stop"
    procs = [worker(stop, "write", victim.addr, w, 100000, *keys[w::2], wait=1) for w in range(2)]
    seen = []
    for _ in range(100000):  # 100 acknowledged commits of the first writer, then the kill
        line = procs[0].stdout.readline()
        seen.append(line)
        if not line or sum(1 for x in seen if x.startswith("ack ")) >= 100:
            break
    victim.kill()
    wait_for(lambda: heir.client().info("replication")["role"] == "master", timeout=60, what="failover")
    c.wait_stable()
    # the writers go on through the promoted node
    after = procs[0].stdout.readline()
    seen.append(after)
    stop.write_text("")
    outs = finish(procs) + ["".join(seen)]
    acked = acks(outs)
    assert sum(len(v) for v in acked.values()) >= 100
    for k in keys:
        assert c.owner(k) is heir
    check_databases(c, keys, acked, other)
    assert run_sql(other, keys[0], "insert into t(id) values (-1); select count(*) from t where id = -1;") == "1\n"
    print("\nfailover: %d commits acknowledged after WAIT 1, %d short, %d landed after an error" % (
        sum(len(v) for v in acked.values()), sum(len(v) for v in acks(outs, "short").values()),
        sum(o.count("landed") for o in outs)))


# ---- wait= -------------------------------------------------------------------

def test_wait_counts_a_commit_no_replica_acknowledged_and_keeps_it(servers):
    s = servers(module=False)
    s.addr = "127.0.0.1:%d" % s.port
    out = run_sql(s, "w", "create table t(a); insert into t values (1);\nselect kvsql_error();\n"
                          "select count(*) from t;\n" + stats_line(), wait=1, wait_timeout_ms=50)
    lines = out.split("\n")
    assert "the commit landed on the master" in lines[0] and "only 0 of wait=1" in lines[0], lines[0]
    assert lines[1] == "1"
    st = json.loads(lines[2])
    assert st["wait_short"] == 2 and st["commits"] == 2, st  # create table, insert
    assert s.client().exists("w") == 1
    # with a replica that keeps up: nothing short
    rep = servers(module=False, args=["--replicaof", "127.0.0.1", str(s.port)])
    wait_for(lambda: rep.client().info("replication").get("master_link_status") == "up", what="replica")
    out = run_sql(s, "w", "insert into t values (2);\nselect kvsql_error();\n" + stats_line(), wait=1,
                  wait_timeout_ms=5000)
    lines = out.split("\n")
    assert lines[0] == "" and json.loads(lines[1])["wait_short"] == 0
    assert rep.client().hget("w", "0") == s.client().hget("w", "0")


def test_bad_wait_parameters_are_refused_by_name(servers):
    s = servers(module=False)
    s.addr = "127.0.0.1:%d" % s.port
    for params, word in (({"wait": "-1"}, "wait=-1"), ({"wait": "x"}, "wait=x"),
                         ({"wait_timeout_ms": "0"}, "wait_timeout_ms=0")):
        out, err = shell(s, "k", "select kvsql_error();\ncreate table t(a);\n", **params)
        assert "unable to open" in err or word in out + err, (params, out, err)


# ---- hostile replies ---------------------------------------------------------

@pytest.mark.parametrize("reply", [
    b"-MOVED\r\n", b"-MOVED 99999 127.0.0.1:1\r\n", b"-MOVED 12 127.0.0.1:notaport\r\n",
    b"-MOVED 12 :\r\n", b"-MOVED 12 127.0.0.1:1\r\n", b"-ASK 12 127.0.0.1:1\r\n", b"-ASK x y\r\n",
    b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n", b"-CLUSTERDOWN The cluster is down\r\n",
    b"-MOVED 12 " + b"h" * 5000 + b":7000\r\n",
])
def test_bad_or_unreachable_redirections_fail_cleanly(reply):
    node = FakeNode(reply)
    try:
        out, err = shell(node, "k", "select count(*) from sqlite_master;\nselect kvsql_error();\n",
                         connect_timeout_ms=500, timeout_ms=5000)
    finally:
        node.close()
    assert "error" in err.lower() or "locked" in err.lower() or "unable" in err.lower(), (out, err)
    assert "AddressSanitizer" not in err and "runtime error" not in err, err


@pytest.mark.parametrize("slots", [
    b"*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$0\r\n\r\n:1\r\n",          # owner: our host, port 1 (nothing there)
    b"*1\r\n*3\r\n:0\r\n:16383\r\n*1\r\n$9\r\n127.0.0.1\r\n",       # a node without a port
    b"*1\r\n*2\r\n:0\r\n:16383\r\n", b"*1\r\n:5\r\n", b"*0\r\n", b"$3\r\nabc\r\n",
])
def test_bad_slot_maps_fail_cleanly(slots):
    node = FakeNode(b"-ERR nothing\r\n", slots=slots)
    try:
        out, err = shell(node, "k", "select count(*) from sqlite_master;\n", connect_timeout_ms=500,
                         timeout_ms=5000)
    finally:
        node.close()
    assert err and "AddressSanitizer" not in err and "runtime error" not in err, (out, err)


# ---- the worker (a separate client process) ----------------------------------

def work(mode, seed, w, count, keys, params):
    import random
    import sqlite3
    deadline = time.time() + float(os.environ.get("KVSQL_CLIENT_SECONDS", "120"))
    c = sqlite3.connect(":memory:")
    c.enable_load_extension(True)
    c.load_extension(os.environ["KVSQL_LIB"])
    q = "".join("&%s" % p for p in params)
    dbs = {}

    def db(k):
        if k not in dbs:
            dbs[k] = sqlite3.connect("file:%s?vfs=redis&redis=%s%s" % (k, seed, q), uri=True,
                                     isolation_level=None, timeout=10)
        return dbs[k]

    def short(d):
        return json.loads(d.execute("select kvsql_stats()").fetchone()[0])["wait_short"]

    stop = os.environ.get("KVSQL_STOP_FILE", "")
    for n in range(int(count)):
        if time.time() > deadline or (stop and os.path.exists(stop)):
            break
        k = keys[n % len(keys)]
        if mode == "read":
            try:
                d = db(k)
                d.execute("begin")
                rows, meta = d.execute("select (select count(*) from t), (select n from meta)").fetchone()
                d.execute("commit")
                if rows != meta:
                    print("bad %s rows %d meta %d" % (k, rows, meta), flush=True)
            except sqlite3.Error:
                try:
                    db(k).execute("rollback")
                except sqlite3.Error:
                    pass
            continue
        row = int(w) * 1000000 + n
        for _ in range(1000):
            if time.time() > deadline:
                return
            d = db(k)
            try:
                before = short(d)
                d.execute("begin immediate")
                d.execute("insert into t(id, w, pad) values (?, ?, randomblob(100))", (row, int(w)))
                d.execute("update meta set n = n + 1")
                d.execute("commit")
                print("%s %s %d" % ("ack" if short(d) == before else "short", k, row), flush=True)
                break
            except sqlite3.Error as e:
                try:
                    d.execute("rollback")
                except sqlite3.Error:
                    pass
                try:  # the commit's fate may be unknown: look before retrying
                    if d.execute("select count(*) from t where id = ?", (row,)).fetchone()[0]:
                        print("landed %s %d" % (k, row), flush=True)  # not known to be on a replica
                        break
                except sqlite3.Error:
                    pass
                print("error %s %d: %s" % (k, row, e), file=sys.stderr, flush=True)
                time.sleep(0.02 + random.random() * 0.05)
    print("done", flush=True)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "worker":
    mode, seed, w, count = sys.argv[2:6]
    rest = sys.argv[6:]
    work(mode, seed, w, count, [a for a in rest if "=" not in a], [a for a in rest if "=" in a])
