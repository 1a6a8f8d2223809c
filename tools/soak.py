"""soak.py - a bounded soak of the module: mixed reads, writes, key
deletions, master restarts and a replica, all at once.

Run by `make soak` (SOAK_SECONDS, default 180). Starts a master (AOF on)
and a replica with the module on loopback ports, runs worker threads until
the time is up, restarting the master now and then, and at the end checks
every database on both servers: PRAGMA integrity_check, and the replica
holding the same bytes as the master. Prints memory at start and end,
operations, errors by kind, and exits non-zero on any failed check or
unexpected error.
"""
import collections
import functools
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import redis  # noqa: E402

from harness import Server, query, run_threads_for, sql  # noqa: E402

SECONDS = int(os.environ.get("SOAK_SECONDS", "180"))
DATABASES = 24
WORKERS = 4
RESTART_EVERY = max(20, SECONDS // 4)
EXPECTED = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
# Documented answers to concurrent work on one database, which a client
# retries (docs/COMMANDS.md, "Long calls: off the main thread"): a write while a long write runs
# on a worker thread, a worker's write that lost to another, a long call
# whose key a worker saw deleted. Any other error reply is unexpected.
RETRYABLE = ("SQLITE_BUSY ", "SQLITE_ABORT ")
SCHEMA = "create table if not exists t(id integer primary key, v, n); "


def read_if_created(client, key, statement):
    """SQL.QUERY that accepts a database not created yet (or just deleted)."""
    try:
        query(client, key, statement)
    except redis.ResponseError as e:
        if "no such table" not in str(e):
            raise


class Soak:
    def __init__(self):
        self.master = Server(args=["--appendonly", "yes"]).start()
        self.replica = Server().start()
        self.replica.client().replicaof("127.0.0.1", self.master.port)
        self.stop = threading.Event()
        self.ops = collections.Counter()
        self.errors = collections.Counter()
        self.lock = threading.Lock()

    def count(self, counter, what):
        with self.lock:
            counter[what] += 1

    def one_op(self, m, rep, rng):
        key = "soak:%d" % rng.randrange(DATABASES)
        op = rng.choices(["insert", "batch", "update", "read", "replica_read", "delete"],
                         [40, 5, 15, 25, 10, 5])[0]
        if op == "insert":
            sql(m, key, SCHEMA + "insert into t(v, n) values (randomblob(?), ?)",
                str(rng.randrange(10, 900)), str(rng.randrange(1000)))
        elif op == "batch":
            sql(m, key, SCHEMA + "begin; insert into t(v, n) select randomblob(200), value from"
                                 " (with recursive s(value) as (select 1 union all select value + 1"
                                 " from s where value < 300) select value from s); commit")
        elif op == "update":
            sql(m, key, SCHEMA + "update t set n = n + 1 where id % 7 = ?", str(rng.randrange(7)))
        elif op == "read":
            read_if_created(m, key, "select count(*), sum(n) from t")
        elif op == "replica_read":
            read_if_created(rep, key, "select id, n from t order by n desc limit 10")
        else:
            m.delete(key)
        self.count(self.ops, op)

    def worker(self, seed):
        rng = random.Random(seed)
        m, rep = self.master.client(), self.replica.client()
        while not self.stop.is_set():
            try:
                self.one_op(m, rep, rng)
            except EXPECTED as e:
                self.count(self.errors, "expected: " + type(e).__name__)
                time.sleep(0.1)
            except redis.ResponseError as e:
                if str(e).startswith(RETRYABLE):
                    self.count(self.errors, "retryable: " + str(e)[:60])
                else:
                    self.count(self.errors, "UNEXPECTED: " + str(e)[:80])

    def restarter(self):
        while not self.stop.wait(RESTART_EVERY):
            self.master.stop()
            self.master.start()
            self.count(self.ops, "master_restart")

    def memory(self):
        return self.master.client().info("memory")["used_memory"]

    def check(self):
        m, rep = self.master.client(), self.replica.client()
        deadline = time.time() + 60
        while m.execute_command("WAIT", 1, 1000) < 1 and time.time() < deadline:
            pass
        failures = []
        for i in range(DATABASES):
            key = "soak:%d" % i
            if not m.exists(key):
                continue
            for name, c in (("master", m), ("replica", rep)):
                ok = query(c, key, "pragma integrity_check")[1]
                if ok != [b"ok"]:
                    failures.append("%s %s: %s" % (name, key, ok))
            if m.execute_command("DEBUG", "DIGEST-VALUE", key) != rep.execute_command("DEBUG", "DIGEST-VALUE", key):
                failures.append("replica differs from master on " + key)
        return failures

    def run(self):
        time.sleep(1)
        start_mem = self.memory()
        workers = [functools.partial(self.worker, i) for i in range(WORKERS)]
        run_threads_for(SECONDS, workers + [self.restarter], self.stop, join_s=60)
        end_mem = self.memory()
        failures = self.check()
        self.report(start_mem, end_mem, failures)
        problems = self.replica.close() + self.master.close()
        unexpected = sum(n for k, n in self.errors.items() if k.startswith("UNEXPECTED"))
        return 0 if not failures and not unexpected and not problems else 1

    def report(self, start_mem, end_mem, failures):
        print("soak: %d s, %d workers, %d databases, master restarted every %d s" %
              (SECONDS, WORKERS, DATABASES, RESTART_EVERY))
        print("soak: operations: " + ", ".join("%s %d" % kv for kv in sorted(self.ops.items())))
        print("soak: errors: " + (", ".join("%s %d" % kv for kv in sorted(self.errors.items())) or "none"))
        print("soak: used_memory at start %.1f MB, at end %.1f MB" % (start_mem / 1e6, end_mem / 1e6))
        print("soak: integrity and replica check: " + ("ok" if not failures else "; ".join(failures)))


if __name__ == "__main__":
    sys.exit(Soak().run())
