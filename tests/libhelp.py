"""libhelp.py - running SQL through libkvsql.so (the `redis` VFS) from tests.

Used by test_library*.py and by tests of other parts that need a database
written through the library (test_replication.py). Two ways in: the sqlite3
shell as a separate process (works in sanitized builds too: the runtime is
preloaded), and Python's sqlite3 in the test process (not in sanitized
builds: the library loads only into a preloaded process).
"""
import os
import sqlite3
import subprocess
import sys

from harness import BUILD, ROOT, wait_for

LIB = os.path.join(ROOT, BUILD, "libkvsql")
SANITIZED = bool(os.environ.get("KVSQL_PRELOAD"))


def built():
    return os.path.exists(LIB + ".so")


def env(**extra):
    """The environment of a client process (a sanitized build preloads its runtime)."""
    e = dict(os.environ, KVSQL_LIB=LIB)
    if SANITIZED:
        e["LD_PRELOAD"] = os.environ["KVSQL_PRELOAD"]
        e["ASAN_OPTIONS"] = "detect_leaks=0"
    e.update(extra)
    return e


def uri(server, key, **params):
    q = "&".join("%s=%s" % kv for kv in params.items())
    return "file:%s?vfs=redis&redis=127.0.0.1:%d%s" % (key, server.port, "&" + q if q else "")


def shell(server, key, sql, **params):
    """The sqlite3 shell on key, sql on its stdin: (stdout, stderr)."""
    p = subprocess.run(["sqlite3", "-bail", "-cmd", ".load " + LIB, "-cmd", ".open " + uri(server, key, **params)],
                       input=sql, capture_output=True, text=True, timeout=120, env=env())
    return p.stdout, p.stderr


def shell_ok(server, key, sql, **params):
    """shell(), failing the test on any error; returns stdout."""
    out, err = shell(server, key, sql, **params)
    assert err == "", err
    return out


def pydb(server, key, **params):
    """A Python sqlite3 connection to key through the library, in this process."""
    c = sqlite3.connect(":memory:")
    c.enable_load_extension(True)
    c.load_extension(LIB)
    return sqlite3.connect(uri(server, key, **params), uri=True, isolation_level=None, timeout=30)


# A writer process of a spread database: adds 1 to v of every row of t.
SPREAD_WRITER = """
import os, sqlite3, sys
c = sqlite3.connect(":memory:"); c.enable_load_extension(True); c.load_extension(os.environ["KVSQL_LIB"])
db = sqlite3.connect(sys.argv[1], uri=True, isolation_level=None, timeout=30)
try:
    db.execute("update t set v = v + 1")
    print("committed")
except sqlite3.Error as e:
    print("failed: %s" % db.execute("select kvsql_error()").fetchone()[0])
"""


def stopped(pid):
    """Whether process pid is stopped (SIGSTOP: state T); False once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


def writer_stopped_at(server, key, at, **params):
    """A writer process adding 1 to every row, stopped by itself at step
    boundary `at` of its commit (lock: lease held, nothing written; copies:
    intent and copies written, not published)."""
    w = subprocess.Popen([sys.executable, "-c", SPREAD_WRITER, uri(server, key, layout="spread", **params)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env(KVSQL_TEST_SPREAD_STOP=at))
    wait_for(lambda: w.poll() is not None or stopped(w.pid), timeout=60, what="the writer to stop at " + at)
    assert w.poll() is None, w.communicate()
    return w
