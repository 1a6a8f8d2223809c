"""libclient.py - a client program of libkvsql.so for the library tests.

Run by tests/test_library.py as separate processes (each one a client of
the redis VFS, as an application would be):

    python3 tests/libclient.py MODE URI [ARG ...]

Modes (every loop is bounded by its count and by DEADLINE seconds):
    incr URI M            M transactions of UPDATE c SET n = n + 1
    transfer URI M SEED   M transfers between random accounts
    sums URI M            M read transactions, each summing all balances
                          twice; prints "bad SUM" for any sum != total
    insert URI FIRST N ROWS  N transactions, batch FIRST..FIRST+N-1, each
                          inserting ROWS rows; prints "ack B" after each
                          commit returned; retries through errors
    hold URI              BEGIN IMMEDIATE, an insert, prints "ready",
                          waits for a line on stdin, COMMIT, prints
                          "committed" or "failed: WHY"
    loop URI SECONDS      after a line on stdin, BEGIN IMMEDIATE, UPDATE c
                          SET n = n + 1, COMMIT as fast as it can for
                          SECONDS (at most 10**6 times); prints
                          "commits N errors E"
Prints "done" at the end. The library path is $KVSQL_LIB.
"""
import os
import random
import sqlite3
import sys
import time

DEADLINE = time.time() + float(os.environ.get("KVSQL_CLIENT_SECONDS", "120"))


def load():
    c = sqlite3.connect(":memory:")
    c.enable_load_extension(True)
    c.load_extension(os.environ["KVSQL_LIB"])
    return c


def connect(uri):
    return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)


def why(db):
    try:
        return db.execute("select kvsql_error()").fetchone()[0]
    except sqlite3.Error as e:
        return "kvsql_error() failed: %s" % e


def rollback(db):
    if db is None:
        return
    try:
        db.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def retry(db, statements, attempts=5000):
    """Runs statements as one transaction until it commits."""
    for _ in range(attempts):
        if time.time() > DEADLINE:
            break
        try:
            for s in statements:
                db.execute(s)
            return
        except sqlite3.OperationalError:
            rollback(db)
            time.sleep(random.random() * 0.005)
    raise SystemExit("gave up: %s" % why(db))


def incr(uri, m):
    db = connect(uri)
    for _ in range(int(m)):
        retry(db, ["BEGIN IMMEDIATE", "UPDATE c SET n = n + 1", "COMMIT"])


def transfer(uri, m, seed):
    rnd = random.Random(int(seed))
    db = connect(uri)
    n = db.execute("select count(*) from acct").fetchone()[0]
    for _ in range(int(m)):
        a, b = rnd.randrange(n), rnd.randrange(n)
        amt = rnd.randrange(1, 50)
        retry(db, ["BEGIN IMMEDIATE",
                   "UPDATE acct SET bal = bal - %d WHERE id = %d" % (amt, a),
                   "UPDATE acct SET bal = bal + %d WHERE id = %d" % (amt, b),
                   "COMMIT"])


def sums(uri, m):
    db = connect(uri)
    total = db.execute("select total from meta").fetchone()[0]
    done = 0
    for _ in range(int(m)):
        if time.time() > DEADLINE:
            break
        try:
            db.execute("BEGIN")
            s1 = db.execute("select sum(bal) from acct").fetchone()[0]
            time.sleep(0.01)  # let writers commit inside this snapshot
            s2 = db.execute("select sum(bal) from acct where id % 2 = 0").fetchone()[0] + \
                db.execute("select sum(bal) from acct where id % 2 = 1").fetchone()[0]
            db.execute("COMMIT")
        except sqlite3.OperationalError as e:
            rollback(db)
            print("error %s: %s" % (e, why(db)), flush=True)
            continue
        for s in (s1, s2):
            if s != total:
                print("bad %s" % s, flush=True)
        done += 1
    print("sums %d" % done, flush=True)


def insert(uri, first, n, rows):
    db = None
    for b in range(int(first), int(first) + int(n)):
        for _ in range(10000):
            if time.time() > DEADLINE:
                raise SystemExit("deadline")
            try:
                if db is None:
                    db = connect(uri)
                db.execute("BEGIN IMMEDIATE")
                db.execute("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
                           "INSERT INTO t(batch, i, pad) SELECT ?, i, randomblob(300) FROM s", (int(rows), b))
                db.execute("COMMIT")
                print("ack %d" % b, flush=True)
                break
            except sqlite3.Error as e:
                print("error %s: %s" % (e, why(db) if db else ""), file=sys.stderr, flush=True)
                rollback(db)
                # the commit's fate may be unknown: find out before retrying (while
                # the server cannot say, retrying could write the batch twice)
                landed = None
                while landed is None and db is not None and time.time() < DEADLINE:
                    try:
                        landed = db.execute("select count(*) from t where batch = ?", (b,)).fetchone()[0]
                    except sqlite3.Error:
                        time.sleep(0.02)
                if landed:
                    print("ack %d" % b, flush=True)
                    break
                time.sleep(0.02)


def hold(uri):
    db = connect(uri)
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO t(batch, i, pad) VALUES (-1, 1, 'held')")
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        db.execute("COMMIT")
        print("committed", flush=True)
    except sqlite3.Error as e:
        print("failed: %s: %s" % (e, why(db)), flush=True)
        rollback(db)


def loop(uri, seconds):
    db = connect(uri)
    sys.stdin.readline()
    end = min(DEADLINE, time.time() + float(seconds))
    commits = errors = 0
    for _ in range(10 ** 6):
        if time.time() > end:
            break
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("UPDATE c SET n = n + 1")
            db.execute("COMMIT")
            commits += 1
        except sqlite3.Error:
            errors += 1
            rollback(db)
    print("commits %d errors %d" % (commits, errors), flush=True)


def main():
    load()
    mode, args = sys.argv[1], sys.argv[2:]
    {"incr": incr, "transfer": transfer, "sums": sums, "insert": insert, "hold": hold, "loop": loop}[mode](*args)
    print("done", flush=True)


if __name__ == "__main__":
    main()
