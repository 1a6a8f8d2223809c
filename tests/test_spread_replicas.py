"""test_spread_replicas.py - read_from=replicas (docs/LIBRARY.md, "Many
nodes"): a spread database's page copies read from the replicas of a real
Redis Cluster of 3 masters with a replica each (tests/cluster.py).

What is shown: the masters serve a small share of the page reads of a
read-only workload (the servers' own counts of run-key HMGETs, and the
library's); a copy a replica lacks (its replication paused with CLIENT
PAUSE WRITE: lag made deterministic) costs a second read from the
master, never "snapshot too old" nor wrong data; readers on the replicas
see every committed version of a bank exactly while a writer commits
without waiting for the replicas, paused for part of the run. Every loop is bounded in count
and time; every wait is for an event."""
import json
import os
import subprocess
import sys

import pytest

from cluster import wait_for
from libhelp import built, env, pydb, shell, uri
from test_spread_cluster import ACCOUNTS, QUERIES, bank, check_bank, client, fill, lines_of, native

pytestmark = pytest.mark.skipif(not built(), reason="libkvsql.so is not built")
needs_inprocess = pytest.mark.skipif(bool(os.environ.get("KVSQL_PRELOAD")),
                                     reason="a sanitized library loads only into a preloaded process")


def stats(db):
    return json.loads(db.execute("select kvsql_stats()").fetchone()[0])


def hmgets(node):
    """HMGETs of run keys ({KEY/N}KEY:p) node served: the page-copy reads
    (the home key's HMGETs, which scripts make, are not counted), from its
    slow log, which reset_counts set to keep every command."""
    log = node.client().slowlog_get(SLOWLOG_LEN)
    assert len(log) < SLOWLOG_LEN  # none dropped
    return sum(1 for e in log if e["command"].split(b" ")[0].upper() == b"HMGET"
               and e["command"].split(b" ")[1].startswith(b"{"))


SLOWLOG_LEN = 100000


def reset_counts(c):
    for n in c.alive():
        r = n.client()
        r.config_set("slowlog-log-slower-than", 0)
        r.config_set("slowlog-max-len", SLOWLOG_LEN)
        r.slowlog_reset()


def synced(c):
    """Every replica has every write its master made (WAIT on each master),
    and every node's CLUSTER SLOTS lists a replica for every range: Redis
    leaves out a replica until gossip told it the replica's replication
    offset, and the library reads from the replicas the map names."""
    for m in c.masters():
        assert m.client().execute_command("WAIT", len(c.replicas_of(m)), 10000) == len(c.replicas_of(m))

    def listed():
        return all(len(r) >= 4 for n in c.alive() for r in n.client().execute_command("CLUSTER", "SLOTS"))
    wait_for(listed, timeout=30, what="CLUSTER SLOTS to list every replica")


def replica_cluster(clusters):
    c = clusters(masters=3, replicas=1)
    assert all(len(c.replicas_of(m)) == 1 for m in c.masters())
    return c


def hmget_share(c):
    """(HMGETs the masters served, HMGETs all nodes served)."""
    masters = {m.port for m in c.masters()}
    per = {n.port: hmgets(n) for n in c.alive()}
    return sum(v for p, v in per.items() if p in masters), sum(per.values())


def test_a_bad_read_from_is_named_in_the_error(servers):
    out, err = shell(servers(module=False), "rf", "select kvsql_error();\n", layout="spread", read_from="slaves")
    assert "unable to open database" in err
    assert out.strip() == "rf: read_from=slaves: expected master or replicas"


@needs_inprocess
def test_the_masters_serve_a_small_share_of_the_page_reads_of_a_read_only_workload(clusters):
    c = replica_cluster(clusters)
    seed = c.masters()[0]
    fill(seed, "rr")
    synced(c)
    ref = native()
    want = [ref.execute(q).fetchall() for q in QUERIES]
    reset_counts(c)
    pages = replica_pages = 0
    for _ in range(4):  # fresh connections: each reads every page it needs once (its own cache)
        db = pydb(seed, "rr", layout="spread", read_from="replicas")
        assert [db.execute(q).fetchall() for q in QUERIES] == want
        s = stats(db)
        pages += s["pages_read"]
        replica_pages += s["replica_pages"]
        db.close()
    on_masters, total = hmget_share(c)
    print("read_from=replicas: masters served %d of %d HMGETs (%.3f); the library: %d of %d pages from replicas; "
          "per node %s" % (on_masters, total, on_masters / max(total, 1), replica_pages, pages,
                           {(n.port, n in c.masters()): hmgets(n) for n in c.alive()}))
    assert total > 0 and pages > 0
    assert on_masters <= 0.10 * total
    assert replica_pages >= 0.9 * pages
    # the default still reads from the masters only
    reset_counts(c)
    db = pydb(seed, "rr", layout="spread")
    assert [db.execute(q).fetchall() for q in QUERIES] == want
    on_masters, total = hmget_share(c)
    assert total > 0 and on_masters == total and stats(db)["replica_pages"] == 0


def pause_replicas(c, ms=60000):
    """Every replica stops applying its master's stream (CLIENT PAUSE WRITE
    pauses the master's link, reads go on) for at most ms: lag on demand."""
    for m in c.masters():
        for r in c.replicas_of(m):
            r.client().execute_command("CLIENT", "PAUSE", ms, "WRITE")


def unpause_replicas(c):
    for m in c.masters():
        for r in c.replicas_of(m):
            r.client().execute_command("CLIENT", "UNPAUSE")


@needs_inprocess
def test_a_copy_a_lagging_replica_lacks_is_read_from_the_master_never_an_error(clusters):
    c = replica_cluster(clusters)
    seed = c.masters()[0]
    w = fill(seed, "lag")
    synced(c)
    db = pydb(seed, "lag", layout="spread", read_from="replicas")
    ref = native()
    assert [db.execute(q).fetchall() for q in QUERIES] == [ref.execute(q).fetchall() for q in QUERIES]
    assert stats(db)["replica_misses"] == 0
    reset_counts(c)
    pause_replicas(c)
    try:
        for sql in ("update t set pad = upper(pad) || 'x' where id % 3 = 0", "delete from t where id % 11 = 0"):
            w.execute(sql)
            ref.execute(sql)
        got = [db.execute(q).fetchall() for q in QUERIES]  # the replicas have none of the new copies
        s = stats(db)
        on_masters, total = hmget_share(c)
    finally:
        unpause_replicas(c)
    assert got == [ref.execute(q).fetchall() for q in QUERIES]
    print("replicas paused: %d replica misses read again from the masters; run-key HMGETs: masters %d of %d; %s"
          % (s["replica_misses"], on_masters, total, {k: s[k] for k in ("pages_read", "replica_pages")}))
    assert s["replica_misses"] > 0 and on_masters >= s["replica_misses"]
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"


READER = """
import json, os, sqlite3, sys, time
c = sqlite3.connect(":memory:"); c.enable_load_extension(True); c.load_extension(os.environ["KVSQL_LIB"])
url, stop, progress = sys.argv[1], sys.argv[2], sys.argv[3]
db = sqlite3.connect(url, uri=True, isolation_level=None, timeout=30)
deadline, reads, torn, errors = time.time() + 150, 0, 0, 0
while not os.path.exists(stop) and time.time() < deadline and reads < 2000000:
    try:
        db.execute("begin")
        s, k = db.execute("select sum(bal), count(*) from acct").fetchone()
        db.execute("commit")
        torn += (s, k) != (ACCOUNTS * 100, ACCOUNTS)
        reads += 1
        with open(progress + ".tmp", "w") as f:
            f.write(str(reads))
        os.replace(progress + ".tmp", progress)
    except sqlite3.Error as e:
        errors += 1
        print("error", db.execute("select kvsql_error()").fetchone()[0].replace(chr(10), " "), file=sys.stderr)
        try:
            db.execute("rollback")
        except sqlite3.Error:
            pass
        if errors > 100:
            break
st = json.loads(db.execute("select kvsql_stats()").fetchone()[0])
print(json.dumps({"reads": reads, "torn": torn, "errors": errors, "replica_pages": st["replica_pages"],
                  "replica_misses": st["replica_misses"], "pages_read": st["pages_read"]}))
"""


def reader(seed, key, stop, progress, **params):
    return subprocess.Popen([sys.executable, "-c", READER.replace("ACCOUNTS", str(ACCOUNTS)),
                             uri(seed, key, layout="spread", **params), str(stop), str(progress)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())


def replica_hmget_calls(c):
    """HMGETs the replicas served (INFO commandstats: a replica runs no client's script)."""
    total = 0
    for m in c.masters():
        for r in c.replicas_of(m):
            got = r.client().info("commandstats").get("cmdstat_hmget")
            total += got["calls"] if got else 0
    return total


@needs_inprocess
def test_readers_on_replicas_see_every_committed_version_exactly_while_a_writer_commits(clusters, tmp_path):
    c = replica_cluster(clusters)
    seed = c.masters()[0]
    db = bank(seed, "rb")
    synced(c)
    stop = tmp_path / "stop"
    w = client(seed, "rb", "write", stop)  # no wait=: the replicas lag behind as they do
    progress = [tmp_path / ("reads%d" % i) for i in range(2)]
    readers = [reader(seed, "rb", stop, p, read_from="replicas") for p in progress]
    acks_now = lambda: db.execute("select count(*) from acks").fetchone()[0]  # noqa: E731

    def reads_now():
        return [int(p.read_text()) if p.exists() else 0 for p in progress]

    def going(acks, reads):
        """The writer made acks more commits and each reader reads more reads (or a client ended)."""
        a0, r0 = acks_now(), reads_now()
        wait_for(lambda: any(p.poll() is not None for p in [w] + readers) or
                 (acks_now() >= a0 + acks and all(x >= y + reads for x, y in zip(reads_now(), r0))),
                 timeout=60, what="%d commits and %d reads by each reader" % (acks, reads))

    going(30, 10)
    pause_replicas(c)  # the replicas lag: the readers meet copies they do not have yet
    try:
        going(30, 10)
    finally:
        unpause_replicas(c)
    going(20, 10)
    wout, werr = lines_of(w, stop)
    acked = {int(x.split()[1]) for x in wout if x.startswith("ack ")}
    got = []
    for r in readers:
        out, err = r.communicate(timeout=200)
        assert r.returncode == 0, err[-4000:]
        got.append((json.loads(out.splitlines()[-1]), err.splitlines()[:3]))
    print("bank on replicas: %d commits; readers: %s" % (len(acked), got))
    for g, err in got:
        assert g["torn"] == 0 and g["errors"] == 0 and g["reads"] > 0, (g, err)
        assert g["replica_pages"] > 0 and g["replica_misses"] > 0, g
    check_bank(pydb(seed, "rb", layout="spread"), acked)
