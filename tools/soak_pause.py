"""soak_pause.py - a bounded soak of offloaded writes while Redis pauses writes (issue #22).

Run by `make soak` (SOAK_SECONDS, default 180) and, for 40 s, by
tests/test_soak_pause.py. A master (AOF, appendfsync always) and a replica
run the module. Writer threads, each on its own database, send small writes
(main thread), long writes (offloaded, written in one step) and big writes
(offloaded and staged, tools of src/module/offload/stage.c), while a disruptor keeps
pausing writes: CLIENT PAUSE ... WRITE, FAILOVER to a SIGSTOPped replica
(times out), a FAILOVER that completes (the replica becomes the master and
the writers follow it), and SHUTDOWN while the replica is stopped (the
master restarts from its AOF). Every write's outcome is recorded: its
reply (acknowledged), an error reply (it must have written nothing), or no
reply (unknown).

At the end: no server aborted (their logs and sanitizer reports), the
replica equals the master (DEBUG DIGEST-VALUE of every key, DEBUG DIGEST),
and after a last restart of the master every acknowledged write is there,
no write refused with an error is, and each big table is whole (one
version throughout). Exits non-zero on any failure.
"""
import collections
import os
import random
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import redis  # noqa: E402

from harness import Server, query, run_threads_for, sql  # noqa: E402

SECONDS = int(os.environ.get("SOAK_SECONDS", "180"))
WRITERS = 3
BIG_ROWS = 16000  # rows of about 300 bytes: about 5 MiB of pages, so an update of all is staged
NO_REPLY = (redis.ConnectionError, redis.TimeoutError)
# Error replies a write may get here; each must have written nothing.
REFUSALS = ("SQLITE_BUSY", "SQLITE_INTERRUPT", "SQLITE_ABORT", "read only replica", "READONLY",
            "MASTERDOWN", "Link with MASTER is down",
            "UNBLOCKED force unblock")  # Redis unblocks blocked clients when a FAILOVER makes it a replica
SCHEMA = ("create table if not exists t(id integer primary key, v); "
          "create table if not exists big(id integer primary key, n, v)")
LONG_INSERT = ("insert into t(id, v) select ?, count(*) from (with recursive c(x) as (select 1 union all "
               "select x+1 from c where x < 400000) select x from c)")
BIG_UPDATE = "update big set n = ?, v = printf('%0300d', ? + id)"


def aborts(dirs):
    """Every abort in the servers' whole logs (a restarted server appends
    to the same log, so an abort may be far from its end)."""
    out = []
    for d in dirs:
        try:
            with open(os.path.join(d, "redis.log"), errors="replace") as f:
                lines = f.readlines()
        except OSError:
            continue
        for i, line in enumerate(lines):
            if "ASSERTION FAILED" in line or "crashed by signal" in line:
                out.append("".join(lines[i:i + 4]))
    return "".join(out)


class Writer:
    """One thread, one database: the outcome of every write it sent."""

    def __init__(self, soak, index):
        self.soak = soak
        self.key = "pz:%d" % index
        self.rng = random.Random(index)
        self.acked, self.refused, self.unknown = set(), set(), set()
        self.big_acked, self.big_unknown = 0, set()
        self.next_id = 1

    def prepare(self, m):
        sql(m, self.key, SCHEMA)
        sql(m, self.key, "insert into big select x, 0, printf('%%0300d', x) from (with recursive c(x) as "
                         "(select 1 union all select x+1 from c where x < %d) select x from c)" % BIG_ROWS)

    def one_write(self, m):
        op = self.rng.choices(["small", "long", "big"], [60, 30, 10])[0]
        n = self.next_id
        self.next_id += 1
        try:
            if op == "big":
                sql(m, self.key, BIG_UPDATE, n, n)
            elif op == "long":
                sql(m, self.key, LONG_INSERT, n)
            else:
                sql(m, self.key, "insert into t(id, v) values (?, 'small')", n)
        except NO_REPLY:
            (self.big_unknown if op == "big" else self.unknown).add(n)
            self.soak.count("no reply")
            time.sleep(0.2)
            return
        except redis.ResponseError as e:
            text = str(e)
            if not any(text.startswith(r) or r in text for r in REFUSALS):
                self.soak.count("UNEXPECTED: " + text[:100])
            else:
                self.soak.count("refused: " + text.split(" ")[0])
            if op != "big":
                self.refused.add(n)
            time.sleep(0.05)
            return
        if op == "big":
            self.big_acked = n
        else:
            self.acked.add(n)
        self.soak.count("acked " + op)

    def run(self):
        while not self.soak.stop.is_set():
            self.one_write(self.soak.master_client())

    def check(self, c, where):
        """What this writer's database must hold on c; failures as text."""
        ids = {row[0] for row in query(c, self.key, "select id from t")[1:]}
        out = []
        lost = self.acked - ids
        if lost:
            out.append("%s %s: %d acknowledged writes missing, e.g. %s" % (where, self.key, len(lost), sorted(lost)[:5]))
        ghosts = ids & self.refused
        if ghosts:
            out.append("%s %s: %d refused writes present, e.g. %s" % (where, self.key, len(ghosts), sorted(ghosts)[:5]))
        lo, hi, rows = query(c, self.key, "select min(n), max(n), count(*) from big")[1]
        allowed = {self.big_acked} | {u for u in self.big_unknown if u > self.big_acked}
        if lo != hi or rows != BIG_ROWS or lo not in allowed:
            out.append("%s %s: big table n in [%s, %s], %s rows; acknowledged %s" %
                       (where, self.key, lo, hi, rows, self.big_acked))
        ok = query(c, self.key, "pragma integrity_check")[1]
        if ok != [b"ok"]:
            out.append("%s %s: %s" % (where, self.key, ok))
        return out


class Soak:
    def __init__(self):
        args = ["--appendonly", "yes", "--appendfsync", "always", "--shutdown-timeout", "2"]
        self.stop = threading.Event()
        self.events = collections.Counter()
        self.lock = threading.Lock()
        self.stacks = []  # of fork children that hung (unstick_sync)
        self.master = Server(args=args).start()
        self.replica = Server(args=args).start()
        self.replica.client().replicaof("127.0.0.1", self.master.port)
        self.wait_link()
        self.writers = [Writer(self, i) for i in range(WRITERS)]
        self.clients = {}
        self.pause_waits, self.pause_waits_last = 0, {}

    def count(self, what):
        with self.lock:
            self.events[what] += 1

    def master_client(self):
        """A client of the current master, one per thread (they follow a failover)."""
        with self.lock:
            port = self.master.port
        me = threading.get_ident()
        c = self.clients.get(me)
        if c is None or c.connection_pool.connection_kwargs["port"] != port:
            c = redis.Redis(host="127.0.0.1", port=port, socket_timeout=60)
            self.clients[me] = c
        return c

    def wait_link(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.replica.client().info("replication").get("master_link_status") == "up":
                    return True
            except NO_REPLY:
                pass
            self.unstick_sync()
            time.sleep(0.1)
        return False

    def unstick_sync(self):
        """A sanitized master's fork child for the replica's sync can hang
        (harness.Server.unstick_fork_child says why): killed after 20 s, and
        counted, so the run goes on and says it happened."""
        stack = self.master.unstick_fork_child(after_s=20)
        if stack:
            self.count("sanitizer: a fork child hung and was killed")
            self.stacks.append(stack)

    def caught_up(self):
        m, r = self.master.client(), self.replica.client()
        return m.info("replication")["master_repl_offset"] == r.info("replication").get("slave_repl_offset")

    # ---- the disruptions ----------------------------------------------------------

    def client_pause(self, rng):
        ms = rng.randrange(200, 1500)
        self.master.client().execute_command("CLIENT", "PAUSE", ms, "WRITE")
        time.sleep(ms / 1000)

    def failover_to_stopped_replica(self, rng):
        m = self.master.client()
        os.kill(self.replica.proc.pid, signal.SIGSTOP)
        try:
            # The replica must lag: a stopped replica that has everything would
            # get the PSYNC FAILOVER, and promote itself when it runs again
            # even though the master gave up (two masters: Redis's FAILOVER).
            m.incr("soak:lag")
            m.execute_command("FAILOVER", "TIMEOUT", rng.randrange(300, 1500))
            deadline = time.time() + 30
            while m.info("replication").get("master_failover_state") != "no-failover" and time.time() < deadline:
                time.sleep(0.05)
        finally:
            os.kill(self.replica.proc.pid, signal.SIGCONT)
        self.wait_link()

    def failover(self, rng):
        old, new = self.master, self.replica
        old.client().execute_command("FAILOVER", "TIMEOUT", 20000)
        deadline = time.time() + 40
        while time.time() < deadline:
            was = old.client().info("replication")  # one read: its role and failover state agree
            roles = (was["role"], new.client().info("replication")["role"])
            if roles == ("slave", "master"):
                break
            if was["role"] == "master" and was.get("master_failover_state") == "no-failover":
                return "failover timed out"
            time.sleep(0.05)
        else:
            self.count("UNEXPECTED: FAILOVER neither completed nor ended in 40 s")
            return None
        with self.lock:
            self.master, self.replica = new, old
        self.wait_link()
        return None

    def shutdown_with_lagging_replica(self, rng):
        os.kill(self.replica.proc.pid, signal.SIGSTOP)
        try:
            try:
                self.master.client().shutdown()  # pauses writes, waits for the replica, saves, exits
            except redis.ResponseError as e:
                self.count("UNEXPECTED shutdown: " + str(e)[:80])
            if self.master.proc.wait(timeout=60) != 0:
                self.count("UNEXPECTED: the master's shutdown exit code %s" % self.master.proc.returncode)
        finally:
            os.kill(self.replica.proc.pid, signal.SIGCONT)
        self.master.start()
        self.wait_link()

    def note_pause_waits(self, server):
        """Adds server's new kvsql_offload_pause_waits (1 ms waits of writes
        during a pause) to the run's total; its count restarts with it."""
        try:
            v = server.client().info("kvsql")["kvsql_offload_pause_waits"]
        except NO_REPLY:
            return
        last = self.pause_waits_last.get(server.port, 0)
        self.pause_waits += max(0, v - last) if v >= last else v
        self.pause_waits_last[server.port] = v

    def disrupt(self):
        rng = random.Random(99)
        kinds = [self.client_pause, self.failover_to_stopped_replica, self.failover,
                 self.shutdown_with_lagging_replica]
        first = list(kinds)  # each kind once, then at random
        while not self.stop.wait(rng.uniform(0.5, 2.0)):
            kind = first.pop(0) if first else rng.choice(kinds)
            for server in (self.master, self.replica):
                self.note_pause_waits(server)
            if kind == self.shutdown_with_lagging_replica:
                self.pause_waits_last[self.master.port] = 0  # its count starts again after the restart
            try:
                note = kind(rng)
                self.count(note or kind.__name__)
                roles = (self.master.client().info("replication")["role"],
                         self.replica.client().info("replication")["role"])
                if roles != ("master", "slave"):
                    self.count("UNEXPECTED: roles after %s: %s" % (kind.__name__, roles))
            except NO_REPLY as e:
                self.count("disruption lost its client: %s" % type(e).__name__)
            except redis.ResponseError as e:
                self.count("disruption refused: %s" % str(e)[:60])

    # ---- the run and its checks ---------------------------------------------------

    def check(self):
        failures = []
        for server in (self.master, self.replica):
            self.note_pause_waits(server)
        if not self.wait_link():
            return ["the replica's link to the master is not up: %s" % self.replica.client().info("replication")]
        deadline = time.time() + 60
        while time.time() < deadline and not self.caught_up():
            time.sleep(0.1)
        m, r = self.master.client(), self.replica.client()
        for w in self.writers:
            if m.execute_command("DEBUG", "DIGEST-VALUE", w.key) != r.execute_command("DEBUG", "DIGEST-VALUE", w.key):
                failures.append("replica differs from master on " + w.key)
        if m.execute_command("DEBUG", "DIGEST") != r.execute_command("DEBUG", "DIGEST"):
            failures.append("replica's dataset differs from master's")
        self.master.stop()  # SHUTDOWN (the AOF is what a restart loads)
        self.master.start()
        if not self.wait_link():
            failures.append("the replica did not reconnect after the last restart")
        for w in self.writers:
            failures += w.check(self.master.client(), "master after restart")
            failures += w.check(self.replica.client(), "replica")
        return failures

    def run(self):
        m = self.master.client()
        for w in self.writers:
            w.prepare(m)
        run_threads_for(SECONDS, [w.run for w in self.writers] + [self.disrupt], self.stop)
        dirs = [self.master.dir, self.replica.dir]
        try:
            failures = self.check()
        except (redis.RedisError, OSError) as e:  # a server is gone: close() says why
            failures = ["the checks could not run: %s" % e]
        crashes = aborts(dirs)  # before close() removes the directories of servers without problems
        if failures:  # the servers' own account of what went wrong
            failures += ["%s log:\n%s" % (name, s.log()[-2500:])
                         for name, s in (("master", self.master), ("replica", self.replica))]
        problems = self.replica.close() + self.master.close() + crashes
        self.report(failures, problems)
        unexpected = sum(n for k, n in self.events.items() if "UNEXPECTED" in k)
        return 0 if not failures and not problems and not unexpected else 1

    def report(self, failures, problems):
        print("soak_pause: %d s, %d writers; writes waited out a pause for %d ms in all" %
              (SECONDS, WRITERS, self.pause_waits))
        print("soak_pause: events: " + ", ".join("%s %d" % kv for kv in sorted(self.events.items())))
        for w in self.writers:
            print("soak_pause: %s: %d acknowledged, %d refused, %d without reply; big table at %d" %
                  (w.key, len(w.acked), len(w.refused), len(w.unknown) + len(w.big_unknown), w.big_acked))
        print("soak_pause: servers: " + ("no abort, no sanitizer report" if not problems else problems[-3000:]))
        print("soak_pause: checks: " + ("ok" if not failures else "; ".join(failures)))
        for stack in self.stacks:
            print("soak_pause: hung " + stack)


if __name__ == "__main__":
    sys.exit(Soak().run())
