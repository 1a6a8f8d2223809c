"""soak_spread.py - a bounded soak of a spread database (docs/FORMAT.md, "The
spread layout") on a real Redis Cluster of 3 masters with a replica each
(tests/cluster.py), counted in trials (issue #25, "Correctness under faults").

A bank database (ACCOUNTS accounts over pages on every master, a table of
acknowledged commit ids), written with wait=1 and lease_ms=300 through the
library by client processes (this file's CLIENT script): a background writer
(transfers, each inserting its id, printing "ack <id>" once COMMIT returned)
and a background reader (sums the balances inside one read transaction,
printing "torn" when the sum or count is off). Trials, one after another,
each count set by the environment:
  SOAK_KILLS (200)      kill -9 of a trial writer: half at a random point of
                        its work, half stopped by the store's test knob
                        (KVSQL_TEST_SPREAD_STOP=lock|copies) at a step
                        boundary and killed there;
  SOAK_STOPS (50)       SIGSTOP of a trial writer past its lease (at a
                        random point, or at a step boundary by the knob, in
                        turn), then SIGCONT once another commit was
                        acknowledged: a zombie;
  SOAK_FAILOVERS (25)   kill -9 of a random master, failover of its replica,
                        the killed node restarted (it rejoins as a replica);
  SOAK_MIGRATIONS (40)  one slot moved key by key under load: a page-key
                        (run key) slot or the home slot, in turn.
After every trial it checks, in one read transaction from a fresh connection:
the balances sum to the total (else the trial is "torn"), every commit
acknowledged so far is in the table (else "lost"), integrity_check is ok.
Prints one line per kind: trials, acknowledged commits, lost, torn; exits
non-zero on any failure, a node's crash or a client that never acknowledged.
Every loop is bounded in count and time; waits are for events.
"""
import collections
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import redis  # noqa: E402

from cluster import Cluster, move_slot, slot_of, wait_for  # noqa: E402
from libhelp import LIB, env, stopped, uri  # noqa: E402

KILLS = int(os.environ.get("SOAK_KILLS", "200"))
STOPS = int(os.environ.get("SOAK_STOPS", "50"))
FAILOVERS = int(os.environ.get("SOAK_FAILOVERS", "25"))
MIGRATIONS = int(os.environ.get("SOAK_MIGRATIONS", "40"))
SEED = int(os.environ.get("SOAK_SEED", str(int(time.time()))))
KEY = "bank"
ACCOUNTS = 240  # rows of about 1 KiB: 3 a page, about 80 pages over 5 runs or more
TOTAL = ACCOUNTS * 100
LEASE_MS = 300
PARAMS = dict(layout="spread", lease_ms=LEASE_MS, wait=1)
CLIENT_SECONDS = 1800  # a client's own bound: far past any run

CLIENT = r'''
import os, random, sqlite3, sys, time
c = sqlite3.connect(":memory:"); c.enable_load_extension(True); c.load_extension(os.environ["KVSQL_LIB"])
url, mode, stop, first = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
db = sqlite3.connect(url, uri=True, isolation_level=None, timeout=30)
deadline, n, errors = time.time() + @SECONDS@, 0, 0
while not os.path.exists(stop) and time.time() < deadline and n < 1000000:
    try:
        if mode == "write":
            a, b = random.sample(range(@ACCOUNTS@), 2)
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
            print("read" if (s, k) == (@TOTAL@, @ACCOUNTS@) else "torn %s %s" % (s, k), flush=True)
        n += 1
    except sqlite3.Error as e:
        errors += 1
        try:
            db.execute("rollback")
        except sqlite3.Error:
            pass
        msg = str(e)
        try:
            msg = db.execute("select kvsql_error()").fetchone()[0] or msg
        except sqlite3.Error:
            pass
        print("error", msg.replace(chr(10), " ")[:80], flush=True)
        if mode == "write":
            n += 1  # its id may have landed unacknowledged: never reused
        time.sleep(0.01)
print("done", flush=True)
'''.replace("@SECONDS@", str(CLIENT_SECONDS)).replace("@ACCOUNTS@", str(ACCOUNTS)).replace("@TOTAL@", str(TOTAL))


class Client:
    """A client process; a thread collects its lines into the soak's counts."""

    def __init__(self, soak, mode, first, knob=None):
        self.soak, self.mode, self.first = soak, mode, first
        self.stop = os.path.join(soak.dir, "stop-%d" % first)
        self.acked = set()
        extra = {"KVSQL_TEST_SPREAD_STOP": knob} if knob else {}
        seed = soak.rng.choice(soak.cluster.masters())
        self.proc = subprocess.Popen([sys.executable, "-c", CLIENT, uri(seed, KEY, **PARAMS), mode, self.stop,
                                      str(first)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env(**extra))
        self.thread = threading.Thread(target=self.collect, daemon=True)
        self.thread.start()

    def collect(self):
        s = self.soak
        for line in self.proc.stdout:
            word, _, rest = line.strip().partition(" ")
            if word == "ack" and not rest.isdigit():
                word = "odd"  # not a whole ack line: counted below, never taken as an acknowledgement
            with s.lock:
                if word == "ack":
                    self.acked.add(int(rest))
                    s.acked.add(int(rest))
                    s.counts[s.kind]["acked"] += 1
                elif word == "torn":
                    s.counts[s.kind]["torn"] += 1
                    s.failures.append("%s: a reader saw a torn sum %s" % (s.kind, rest))
                elif word == "read":
                    s.reads += 1
                elif word == "error":
                    s.errors[rest[:60]] += 1
                elif word != "done":
                    s.errors["output %r" % line[:60]] += 1

    def acks(self):
        with self.soak.lock:
            return len(self.acked)

    def end(self, timeout=120):
        """Asks it to stop and waits for it; True when it exited by itself."""
        open(self.stop, "w").close()
        try:
            self.proc.wait(timeout=timeout)
            ok = True
        except subprocess.TimeoutExpired:
            self.kill()
            ok = False
        self.thread.join(timeout=30)
        return ok

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped process dies of SIGKILL too, but be plain
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.thread.join(timeout=30)


class Soak:
    def __init__(self, workdir):
        self.rng = random.Random(SEED)
        self.dir = workdir
        self.lock = threading.Lock()
        self.kind = "setup"
        self.counts = collections.defaultdict(collections.Counter)
        self.errors = collections.Counter()
        self.acked, self.failures, self.reads, self.next_id = set(), [], 0, 0
        self.cluster = Cluster(masters=3, replicas=1)
        self.make_bank()
        self.writer = self.reader = None
        self.ensure_background()

    # ---- the database ----------------------------------------------------------

    def connect(self):
        c = sqlite3.connect(":memory:")
        c.enable_load_extension(True)
        c.load_extension(LIB)
        seed = self.rng.choice(self.cluster.masters())
        return sqlite3.connect(uri(seed, KEY, **PARAMS), uri=True, isolation_level=None, timeout=30)

    def make_bank(self):
        db = self.connect()
        db.execute("create table acct(id integer primary key, bal integer, pad text)")
        db.execute("create table acks(id integer primary key)")
        db.execute("begin")
        for i in range(ACCOUNTS):
            db.execute("insert into acct values (?, 100, ?)", (i, "%04d" % i * 250))
        db.execute("commit")
        db.close()
        per = [len(m.client().keys("{%s/*}%s:p" % (KEY, KEY))) for m in self.cluster.masters()]
        if not all(per):
            raise SystemExit("the bank's run keys are not on every master: %s" % per)

    def ids(self):
        self.next_id += 1000000
        return self.next_id

    def ensure_background(self):
        """A background writer and reader, started again if one exited."""
        if self.writer is None or self.writer.proc.poll() is not None:
            self.writer = Client(self, "write", self.ids())
        if self.reader is None or self.reader.proc.poll() is not None:
            self.reader = Client(self, "read", self.ids())

    def wait_acks(self, client, n, what, timeout=60):
        wait_for(lambda: client.proc.poll() is not None or client.acks() >= n, timeout=timeout, what=what)

    def check(self):
        """The checks after a trial; counts lost and torn for its kind."""
        for attempt in range(50):  # the cluster may still be settling after a fault: bounded retries
            try:
                db = self.connect()
                with self.lock:
                    acked = set(self.acked)
                db.execute("begin")
                s, k = db.execute("select sum(bal), count(*) from acct").fetchone()
                have = {r[0] for r in db.execute("select id from acks")}
                db.execute("commit")
                integrity = db.execute("pragma integrity_check").fetchone()[0]
                db.close()
                break
            except (sqlite3.Error, redis.RedisError) as e:
                self.errors["check " + str(e)[:50]] += 1
                time.sleep(0.1)
        else:
            self.failures.append("%s: the checks could not read the database" % self.kind)
            return
        with self.lock:
            c = self.counts[self.kind]
            lost = acked - have - self.lost
            self.lost |= lost
            c["lost"] += len(lost)
            if (s, k) != (TOTAL, ACCOUNTS):
                c["torn"] += 1
                self.failures.append("%s: balances %s over %s accounts after a trial" % (self.kind, s, k))
            if lost:
                self.failures.append("%s: %d acknowledged commits lost, e.g. %s" % (self.kind, len(lost),
                                                                                     sorted(lost)[:5]))
            if integrity != "ok":
                self.failures.append("%s: integrity_check: %s" % (self.kind, integrity[:200]))

    # ---- trials --------------------------------------------------------------------

    def kill_trial(self, i):
        knob = [None, "lock", None, "copies"][i % 4]
        w = Client(self, "write", self.ids(), knob)
        if knob:
            wait_for(lambda: w.proc.poll() is not None or stopped(w.proc.pid), timeout=60,
                     what="the writer to stop at " + knob)
        else:
            self.wait_acks(w, 1, "the trial writer's first commit")
            time.sleep(self.rng.uniform(0, 0.3))  # a random point of its work (a fault's timing, not a wait)
        self.counts[self.kind]["at " + (knob or "random")] += 1
        w.kill()
        n = self.writer.acks()
        self.wait_acks(self.writer, n + 1, "a commit after the kill")  # the lease came free

    def stop_trial(self, i):
        knob = [None, "lock", "copies"][i % 3]
        w = Client(self, "write", self.ids(), knob)
        if knob:
            wait_for(lambda: w.proc.poll() is not None or stopped(w.proc.pid), timeout=60,
                     what="the writer to stop at " + knob)
        else:
            self.wait_acks(w, 1, "the trial writer's first commit")
            time.sleep(self.rng.uniform(0, 0.1))
            w.proc.send_signal(signal.SIGSTOP)
        n = self.writer.acks()
        self.wait_acks(self.writer, n + 2, "commits of another writer past the stopped one's lease")
        w.proc.send_signal(signal.SIGCONT)
        m = w.acks()
        self.wait_acks(w, m + 1, "the continued writer to commit again")
        self.counts[self.kind]["at " + (knob or "random")] += 1
        if not w.end():
            self.failures.append("stop: a continued writer did not stop when asked")

    def failover_trial(self, i):
        c = self.cluster
        victim = self.rng.choice(c.masters())
        self.counts[self.kind]["home master" if c.owner(KEY) is victim else "other master"] += 1
        n = self.writer.acks()
        victim.kill()
        c.wait_stable(timeout=60)
        victim.start()  # its nodes.conf: it rejoins, as a replica of the one promoted
        wait_for(lambda: self.rejoined(victim), timeout=60, what="the killed master back as a replica")
        c.wait_stable(timeout=60)
        self.ensure_background()
        self.wait_acks(self.writer, n + 5, "commits after the failover")

    def rejoined(self, node):
        try:
            info = node.client().info("replication")
        except redis.RedisError:
            return False
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    def migration_trial(self, i):
        c = self.cluster
        if i % 2:
            key = KEY
        else:
            runs = sorted({k.decode() for m in c.masters() for k in m.client().keys("{%s/*}%s:p" % (KEY, KEY))})
            key = self.rng.choice(runs)
        src = c.owner(key)
        dst = self.rng.choice([m for m in c.masters() if m is not src])
        n = self.writer.acks()
        move_slot(c, slot_of(key), src, dst)
        if c.owner(key) is not dst:
            self.failures.append("migration: slot of %s not on its new owner" % key)
        self.counts[self.kind]["home slot" if key == KEY else "page slot"] += 1
        self.wait_acks(self.writer, n + 5, "commits after the migration")

    def run(self):
        self.lost = set()
        self.wait_acks(self.writer, 5, "the background writer's first commits")
        plan = [("kill", KILLS, self.kill_trial), ("stop", STOPS, self.stop_trial),
                ("migration", MIGRATIONS, self.migration_trial), ("failover", FAILOVERS, self.failover_trial)]
        for kind, count, trial in plan:
            self.kind = kind
            start = time.time()
            for i in range(count):
                self.ensure_background()
                trial(i)
                with self.lock:
                    self.counts[kind]["trials"] += 1
                self.check()
                if self.failures:
                    break
            self.counts[kind]["seconds"] = int(time.time() - start)
            if self.failures:
                break
        self.kind = "end"
        for cl in (self.writer, self.reader):
            if not cl.end():
                self.failures.append("a background client did not stop when asked")
        self.check()
        return self.report()

    def report(self):
        problems = "\n".join(p for p in (n.problems() for n in self.cluster.nodes) if p)
        if problems:
            self.failures.append("a node crashed or a sanitizer reported:\n" + problems[-2000:])
        print("soak_spread: seed %d, 3 masters with a replica each, %d accounts, wait=1, lease_ms=%d"
              % (SEED, ACCOUNTS, LEASE_MS))
        for kind in ("kill", "stop", "failover", "migration"):
            c = self.counts[kind]
            how = ", ".join("%s %d" % (k, v) for k, v in sorted(c.items()) if k.startswith(("at ", "home", "page", "other")))
            print("  %-9s trials %d, acknowledged commits %d, lost %d, torn %d (%s; %d s)"
                  % (kind, c["trials"], c["acked"], c["lost"], c["torn"], how or "-", c["seconds"]))
        print("  total: %d acknowledged commits, %d consistent reads; client errors (expected under faults): %s"
              % (len(self.acked), self.reads, dict(self.errors.most_common(8))))
        for f in self.failures[:20]:
            print("FAIL:", f)
        print("soak_spread: %s" % ("ok" if not self.failures else "FAILED"))
        return not self.failures

    def close(self):
        for cl in (self.writer, self.reader):
            if cl and cl.proc.poll() is None:
                cl.kill()
        self.cluster.close()


def main():
    import tempfile
    with tempfile.TemporaryDirectory(prefix="kvsql-soak-spread-") as d:
        soak = Soak(d)
        try:
            ok = soak.run()
        finally:
            soak.close()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
