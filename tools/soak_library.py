"""soak_library.py - a bounded soak of the `redis` VFS library under faults.

Run by `make soak` (SOAK_SECONDS, default 180) and, for 30 s, by
tests/test_soak_library.py in `make test`. Starts one redis-server (AOF,
appendfsync always, the module loaded) holding a bank database: accounts
whose balances always sum to the same total, a ledger with one row per
transfer, and a table of big rows. Then, until the time is up:
  - writer processes (libkvsql through Python's sqlite3, lease_ms=300,
    stage_kb=64) each loop on transfers that also insert a ledger row and
    print "ack <id>" once COMMIT returned (after a failed COMMIT they read
    whether the row landed before trying again); one in ten transactions
    also rewrites a 200 KB row, so it is a staged commit;
  - reader processes check, in each snapshot, that the balances sum to the
    total twice over (reading between other commits, so through undo
    records), and print "bad" otherwise;
  - a module writer (SQL.EXEC) makes the same transfers;
and faults come every 0.3 to 1 s: a writer killed (kill -9) at a random
point of its work and started again; a writer or a reader stopped
(SIGSTOP) past its lease and continued; redis-server killed (kill -9) and
restarted from its AOF; the staging key of a staged commit deleted; the
undo index deleted under the readers. At the end it checks: no reader saw
a bad sum, the balances sum to the total, every acknowledged transfer is
in the ledger, PRAGMA integrity_check is ok, redis-server never crashed by
itself. Prints counts; exits non-zero on any failed check.
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

from harness import Server, query, sql  # noqa: E402
from libhelp import LIB, env, uri  # noqa: E402

SECONDS = float(os.environ.get("SOAK_SECONDS", "180"))
SEED = int(os.environ.get("SOAK_SEED", str(int(time.time()))))
WRITERS, READERS = 3, 2
ACCOUNTS, TOTAL = 40, 40 * 1000
LEASE_MS = 300
BIG = 1500000  # a big row: rewriting one is a staged commit of more than one upload step
KEY = "bank"

CLIENT = r'''
import os, random, sqlite3, sys, time
c = sqlite3.connect(":memory:"); c.enable_load_extension(True); c.load_extension(os.environ["KVSQL_LIB"])
mode, url, name, deadline, seed = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
rnd = random.Random(seed)
db = sqlite3.connect(url, uri=True, isolation_level=None, timeout=5)

def why():
    try:
        return db.execute("select kvsql_error()").fetchone()[0]
    except sqlite3.Error as e:
        return str(e)

def kind(text):
    for word in ("snapshot too old", "lease was lost", "locked", "connection", "staged commit lost",
                 "nothing was written", "landed after"):
        if word in text:
            return word
    return text[:50]

def rollback():
    try:
        db.execute("ROLLBACK")
    except sqlite3.Error:
        pass

def landed(tid):
    while time.time() < deadline + 20:
        try:
            return db.execute("select count(*) from ledger where id = ?", (tid,)).fetchone()[0] == 1
        except sqlite3.Error:
            time.sleep(0.05)
    return None

def write():
    seq = 0
    while time.time() < deadline:
        seq += 1
        tid = "%s.%d" % (name, seq)
        a, b, amt = rnd.randrange(ACCOUNTS), rnd.randrange(ACCOUNTS), rnd.randrange(1, 50)
        big = rnd.random() < 0.04
        while time.time() < deadline + 10:
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute("UPDATE acct SET bal = bal - ? WHERE id = ?", (amt, a))
                db.execute("UPDATE acct SET bal = bal + ? WHERE id = ?", (amt, b))
                db.execute("INSERT INTO ledger(id, amt) VALUES (?, ?)", (tid, amt))
                if big:
                    db.execute("UPDATE big SET pad = randomblob(@BIG@) WHERE k = ?", (rnd.randrange(4),))
                db.execute("COMMIT")
                print("ack %s" % tid, flush=True)
                break
            except sqlite3.Error as e:
                print("error %s" % kind(why()), flush=True)
                rollback()
                done = landed(tid)
                if done:
                    print("ack %s" % tid, flush=True)
                    break
                if done is None:
                    return
                time.sleep(rnd.random() * 0.02)

def read():
    while time.time() < deadline:
        try:
            db.execute("BEGIN")
            db.execute("select bal from acct where id = ?", (rnd.randrange(ACCOUNTS),)).fetchone()
            time.sleep(rnd.random() * 0.05)  # writers commit inside this snapshot: the rest comes from undo
            s1 = db.execute("select sum(bal) from acct").fetchone()[0]
            s2 = db.execute("select sum(bal) from acct where id % 2 = 0").fetchone()[0] + \
                db.execute("select sum(bal) from acct where id % 2 = 1").fetchone()[0]
            n = db.execute("select count(*), sum(length(pad)) from big").fetchone()
            db.execute("COMMIT")
        except sqlite3.Error as e:
            print("error %s" % kind(why()), flush=True)
            rollback()
            time.sleep(0.01)
            continue
        print("ok" if s1 == s2 == TOTAL and n == (4, 4 * @BIG@) else "bad %r %r %r" % (s1, s2, n), flush=True)

ACCOUNTS, TOTAL = @ACCOUNTS@, @TOTAL@
{"write": write, "read": read}[mode]()
print("done", flush=True)
'''.replace("@ACCOUNTS@", str(ACCOUNTS)).replace("@TOTAL@", str(TOTAL)).replace("@BIG@", str(BIG))


class Proc:
    """A client process; a thread collects its output lines."""

    def __init__(self, soak, mode, name):
        self.mode, self.name = mode, name
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CLIENT, mode, uri(soak.server, KEY, lease_ms=LEASE_MS, stage_kb=64), name,
             str(soak.deadline), str(soak.rng.randrange(1 << 30))],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
        self.thread = threading.Thread(target=self.collect, args=(soak,), daemon=True)
        self.thread.start()

    def collect(self, soak):
        for line in self.proc.stdout:
            word, _, rest = line.strip().partition(" ")
            with soak.lock:
                if word == "ack":
                    soak.acked.add(rest)
                elif word == "bad":
                    soak.bad.append(rest)
                elif word == "error":
                    soak.errors[rest] += 1
                else:
                    soak.ops[self.mode + " " + word] += 1


class Soak:
    def __init__(self):
        self.rng = random.Random(SEED)
        self.server = Server(args=["--appendonly", "yes", "--appendfsync", "always"]).start()
        self.deadline = time.time() + SECONDS
        self.lock = threading.Lock()
        self.acked, self.bad = set(), []
        self.errors, self.ops, self.faults = collections.Counter(), collections.Counter(), collections.Counter()
        self.procs = []
        self.make_bank()

    def make_bank(self):
        r = self.server.client()
        sql(r, KEY, "create table acct(id integer primary key, bal integer, pad blob)")  # ~4 per page
        sql(r, KEY, "create table ledger(id text primary key, amt integer)")
        sql(r, KEY, "create table big(k integer primary key, pad blob)")
        sql(r, KEY, "with recursive q(i) as (select 0 union all select i + 1 from q where i < %d) "
                    "insert into acct select i, %d, zeroblob(900) from q" % (ACCOUNTS - 1, TOTAL // ACCOUNTS))
        sql(r, KEY, "with recursive q(i) as (select 0 union all select i + 1 from q where i < 3) "
                    "insert into big select i, randomblob(%d) from q" % BIG)

    def spawn(self, mode, name):
        p = Proc(self, mode, name)
        self.procs.append(p)
        return p

    def live(self, mode):
        return [p for p in self.procs if p.mode == mode and p.proc.poll() is None]

    def module_writer(self):
        rng, seq = random.Random(SEED + 1), 0
        while time.time() < self.deadline:
            seq += 1
            tid = "m.%d" % seq
            a, b, amt = rng.randrange(ACCOUNTS), rng.randrange(ACCOUNTS), rng.randrange(1, 50)
            while time.time() < self.deadline + 10:
                try:
                    r = self.server.client()
                    sql(r, KEY, "begin; update acct set bal = bal - %d where id = %d; "
                                "update acct set bal = bal + %d where id = %d; "
                                "insert into ledger values ('%s', %d); commit" % (amt, a, amt, b, tid, amt))
                    with self.lock:
                        self.acked.add(tid)
                    break
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.ResponseError) as e:
                    with self.lock:
                        self.errors["module " + ("locked" if "locked" in str(e) else str(e)[:40])] += 1
                    if self.module_landed(tid):
                        with self.lock:
                            self.acked.add(tid)
                        break
                    time.sleep(rng.random() * 0.02)

    def module_landed(self, tid):
        while time.time() < self.deadline + 20:
            try:
                rows = query(self.server.client(), KEY, "select count(*) from ledger where id = ?", tid)
                return rows[0][0] in (1, b"1", "1")
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.ResponseError):
                time.sleep(0.05)
        return False

    def stop_for(self, p, ms):
        try:
            p.proc.send_signal(signal.SIGSTOP)
            time.sleep(ms / 1000.0)
        finally:
            p.proc.send_signal(signal.SIGCONT)

    def fault(self):
        r = self.server.client()
        kind = self.rng.choices(["kill writer", "stop writer", "stop reader", "restart redis", "del stage",
                                 "del undo index", "none"], [20, 20, 15, 8, 12, 10, 15])[0]
        writers, readers = self.live("write"), self.live("read")
        if kind == "kill writer" and writers:
            p = self.rng.choice(writers)
            p.proc.send_signal(signal.SIGKILL)
            p.proc.wait()
            self.spawn("write", "%s+" % p.name)
        elif kind == "stop writer" and writers:
            self.stop_for(self.rng.choice(writers), LEASE_MS * self.rng.uniform(1.5, 4))
        elif kind == "stop reader" and readers:
            self.stop_for(self.rng.choice(readers), LEASE_MS * self.rng.uniform(1.5, 4))
        elif kind == "restart redis":
            self.server.kill()
            self.server.start()
        elif kind == "del stage":
            for _ in range(200):  # wait a little for a staged commit under way
                if r.delete("{%s}:stage" % KEY):
                    break
                time.sleep(0.005)
            else:
                kind += " (none under way)"
        elif kind == "del undo index":
            r.delete("{%s}:undo:idx" % KEY)
        self.faults[kind] += 1

    def run(self):
        for i in range(WRITERS):
            self.spawn("write", "w%d" % i)
        for i in range(READERS):
            self.spawn("read", "r%d" % i)
        mod = threading.Thread(target=self.module_writer, daemon=True)
        mod.start()
        while time.time() < self.deadline:
            time.sleep(self.rng.uniform(0.3, 1.0))
            try:
                self.fault()
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as e:
                self.errors["fault " + str(e)[:40]] += 1
        for p in self.procs:
            try:
                p.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                self.bad.append("%s did not finish" % p.name)
            p.thread.join(timeout=10)
        mod.join(timeout=60)
        return self.check()

    def check(self):
        failures = list("reader saw " + b for b in self.bad[:10])
        c = sqlite3.connect(":memory:")
        c.enable_load_extension(True)
        c.load_extension(LIB)
        db = sqlite3.connect(uri(self.server, KEY), uri=True, isolation_level=None, timeout=30)
        integrity = db.execute("pragma integrity_check").fetchone()[0]
        total = db.execute("select sum(bal) from acct").fetchone()[0]
        ledger = {row[0] for row in db.execute("select id from ledger")}
        missing = self.acked - ledger
        if integrity != "ok":
            failures.append("integrity_check: %s" % integrity)
        if total != TOTAL:
            failures.append("balances sum to %s, not %d" % (total, TOTAL))
        if missing:
            failures.append("%d acknowledged transfers missing, e.g. %s" % (len(missing), sorted(missing)[:5]))
        problems = self.server.problems()
        if problems:
            failures.append("redis-server: " + problems[-500:])
        print("soak_library: seed %d, %.0f s, %d acknowledged transfers (%d in the ledger)"
              % (SEED, SECONDS, len(self.acked), len(ledger)))
        print("  faults:", dict(self.faults))
        print("  client ops:", dict(self.ops))
        print("  errors (expected under faults):", dict(self.errors.most_common(12)))
        for f in failures:
            print("FAIL:", f)
        return not failures

    def close(self):
        for p in self.procs:
            if p.proc.poll() is None:
                p.proc.kill()
        self.server.close()


def main():
    soak = Soak()
    try:
        ok = soak.run()
    finally:
        soak.close()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
