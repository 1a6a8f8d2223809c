"""test_library.py - libkvsql.so, the `redis` VFS, as its users meet it.

Every test starts its own redis-server (harness.py) on loopback, without
the module unless it tests the module and the library together, and runs
SQLite programs against it: the sqlite3 shell, Python's sqlite3, a small C
program, and many client processes at once (tests/libclient.py). Every
loop is bounded in count and time; no assertion depends on timing.
"""
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

import pytest
import redis

from harness import BUILD, MODULE, ROOT, wait_for
from libhelp import LIB, built, env, pydb, shell, uri

CLIENT = os.path.join(ROOT, "tests", "libclient.py")
PY = sys.executable

pytestmark = pytest.mark.skipif(not built(), reason="libkvsql.so is not built")


def client(*args, **kw):
    return subprocess.Popen([PY, CLIENT] + [str(a) for a in args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(), **kw)


def finish(procs, timeout=300):
    """Waits for client processes; returns their outputs; fails on a bad exit."""
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, "client failed (%s):\n%s\n%s" % (p.returncode, out, err)
        outs.append(out)
    return outs


def kvsql_error(db):
    return db.execute("select kvsql_error()").fetchone()[0]


needs_inprocess = pytest.mark.skipif(bool(os.environ.get("KVSQL_PRELOAD")),
                                     reason="a sanitized library loads only into a preloaded process")


# ---- the sqlite3 shell, Python, C --------------------------------------------

def test_the_shell_creates_lists_dumps_imports_backs_up_and_restores(servers, tmp_path):
    s = servers(module=False)
    r = s.client()
    out, err = shell(s, "mydb", "create table t(a int, b text);\n"
                                "insert into t values (1, 'one'), (2, 'two');\n"
                                ".tables\n.schema\n")
    assert err == ""
    assert out.split("\n")[0].strip() == "t"
    assert "CREATE TABLE t(a int, b text);" in out
    assert r.hget("mydb", "0").startswith(b"SQLite format 3\0")
    csv = tmp_path / "people.csv"
    csv.write_text("name,age\nada,36\nalan,41\n")
    backup = tmp_path / "backup.sqlite"
    out, err = shell(s, "mydb", ".import --csv %s people\n.dump\n.backup %s\n" % (csv, backup))
    assert err == ""
    assert "INSERT INTO t VALUES(2,'two');" in out and "INSERT INTO people VALUES('alan','41');" in out
    local = sqlite3.connect(str(backup))
    assert local.execute("select count(*) from people").fetchone()[0] == 2
    local.close()
    out, err = shell(s, "copy", ".restore %s\nselect name from people order by age;\n"
                                "pragma integrity_check;\n" % backup)
    assert err == "" and out.split() == ["ada", "alan", "ok"]
    assert r.hlen("copy") == r.hlen("mydb")


@needs_inprocess
def test_python_sqlite3_loads_the_extension_and_reads_what_it_wrote(servers):
    s = servers(module=False)
    db = pydb(s, "py")
    db.execute("create table kv(k primary key, v)")
    db.execute("begin")
    db.executemany("insert into kv values (?, ?)", [(i, "v%d" % i) for i in range(500)])
    db.execute("commit")
    other = pydb(s, "py")
    assert other.execute("select count(*), max(k) from kv").fetchone() == (500, 499)
    assert other.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert '"commits"' in db.execute("select kvsql_stats()").fetchone()[0]


C_PROGRAM = r"""
#include <kvsql.h>
#include <stdio.h>
int main(int argc, char **argv) {
    sqlite3 *db;
    int rc = kvsql_register_redis(0);
    if (rc != SQLITE_OK) { printf("register: %d %s\n", rc, kvsql_errmsg(NULL)); return 1; }
    rc = sqlite3_open_v2(argv[1], &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, argv[2], 0, 0, 0);
    if (rc != SQLITE_OK) { printf("error %d: %s\n", rc, kvsql_errmsg(db)); return 1; }
    kvsql_redis_stats st;
    if (kvsql_redis_stats_get(db, NULL, &st) != SQLITE_OK) return 1;
    printf("ok commits=%lld\n", st.commits);
    sqlite3_close(db);
    return 0;
}
"""


def compile_c_program(tmp_path):
    src = tmp_path / "prog.c"
    src.write_text(C_PROGRAM)
    exe = tmp_path / "prog"
    libdir = os.path.dirname(LIB)
    flags = ["-fsanitize=address,undefined"] if os.environ.get("KVSQL_PRELOAD") else []
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", *flags, "-I", os.path.join(ROOT, "include"), str(src),
                    "-o", str(exe), "-L", libdir, "-lkvsql", "-lsqlite3", "-Wl,-rpath," + libdir],
                   check=True, capture_output=True, timeout=120)
    return str(exe)


def test_a_c_program_registers_the_vfs_and_reads_errors(servers, tmp_path):
    s = servers(module=False)
    exe = compile_c_program(tmp_path)
    p = subprocess.run([exe, uri(s, "cdb"), "create table t(a); insert into t values (1)"],
                       capture_output=True, text=True, timeout=60, env=env())
    assert p.stdout.startswith("ok commits="), p.stdout + p.stderr
    assert s.client().hlen("cdb") == 2
    p = subprocess.run([exe, "file:cdb?vfs=redis&redis=127.0.0.1:1", "select * from t"],
                       capture_output=True, text=True, timeout=60, env=env())
    assert "cannot connect to 127.0.0.1:1" in p.stdout


def test_kvsql_default_makes_every_database_name_a_key(servers, tmp_path):
    s = servers(module=False)
    prog = ("import os, sqlite3\n"
            "c = sqlite3.connect(':memory:'); c.enable_load_extension(True); c.load_extension(os.environ['KVSQL_LIB'])\n"
            "db = sqlite3.connect('app.db')\n"
            "db.execute('create table t(a)'); db.execute('insert into t values (42)'); db.commit()\n"
            "mem = sqlite3.connect(':memory:'); mem.execute('create table m(a)')\n"
            "print(sqlite3.connect('app.db').execute('select a from t').fetchone()[0])\n")
    p = subprocess.run([PY, "-c", prog], cwd=str(tmp_path), capture_output=True, text=True, timeout=60,
                       env=env(KVSQL_DEFAULT="redis://127.0.0.1:%d" % s.port))
    assert p.stdout.strip() == "42", p.stderr
    assert not os.path.exists(tmp_path / "app.db")
    assert s.client().hget("app.db", "0").startswith(b"SQLite format 3\0")


# ---- concurrency ------------------------------------------------------------------

def test_no_update_is_lost_among_many_writers(servers):
    s = servers(module=False)
    u = uri(s, "counter")
    out, err = shell(s, "counter", "create table c(n int); insert into c values (0);\n")
    assert err == ""
    n, m = 4, 25
    finish([client("incr", u, m) for _ in range(n)])
    out, _ = shell(s, "counter", "select n from c;\n")
    assert int(out) == n * m


def bank(s, key, accounts=400, each=100):
    out, err = shell(s, key, "create table acct(id integer primary key, bal int, pad blob);\n"
                             "insert into acct select value - 1, %d, randomblob(400) from generate_series(1, %d);\n"
                             "create table meta(total int); insert into meta values (%d);\n"
                             % (each, accounts, each * accounts))
    assert err == ""


def test_readers_see_consistent_snapshots_while_money_moves(servers):
    s = servers(module=False)
    bank(s, "bank")
    assert s.client().hlen("bank") > 40  # a sum reads many pages
    u = uri(s, "bank")
    writers = [client("transfer", u, 40, seed) for seed in range(2)]
    readers = [client("sums", u, 40) for _ in range(2)]
    outs = finish(writers + readers)
    for out in outs[2:]:
        assert "bad" not in out, out
        assert "sums " in out
    assert sum(int(o.split("sums ")[1].split()[0]) for o in outs[2:]) > 0
    out, _ = shell(s, "bank", "select sum(bal) = total from acct, meta;\npragma integrity_check;\n")
    assert out.split() == ["1", "ok"]


def make_batches_table(s, key):
    out, err = shell(s, key, "create table t(batch int, i int, pad blob);\n"
                             "create index t_batch on t(batch);\n")
    assert err == ""


def batch_counts(s, key):
    out, err = shell(s, key, "pragma integrity_check;\nselect batch, count(*) from t group by batch;\n")
    lines = out.split()
    assert lines[0] == "ok", out + err
    return {int(b): int(c) for b, c in (line.split("|") for line in lines[1:])}


def test_a_writer_killed_at_any_moment_leaves_all_or_nothing(servers):
    s = servers(module=False)
    make_batches_table(s, "crash")
    u = uri(s, "crash", lease_ms=500)
    rows = 200  # a commit of many pages: kill -9 lands before, during or after it
    for k in range(6):
        p = client("insert", u, k * 1000, 1000, rows)
        acked = 0
        while acked < k % 3 + 1:  # let it commit a few batches first
            line = p.stdout.readline()
            assert line, p.stderr.read()
            acked += line.startswith("ack")
        time.sleep(0.01 * k)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    counts = batch_counts(s, "crash")
    assert counts and all(c == rows for c in counts.values()), counts
    # others continue once the dead writer's lease lapses
    finish([client("insert", u, 99999, 1, rows)])
    assert batch_counts(s, "crash")[99999] == rows


def test_a_writer_stopped_past_its_lease_cannot_commit(servers):
    s = servers(module=False)
    make_batches_table(s, "fence")
    r = s.client()
    u = uri(s, "fence", lease_ms=300)
    held = client("hold", u, stdin=subprocess.PIPE)
    assert held.stdout.readline().strip() == "ready"
    held.send_signal(signal.SIGSTOP)
    wait_for(lambda: not r.exists("{fence}:lease"), what="the stopped writer's lease to lapse")
    finish([client("insert", u, 1, 1, 10)])  # another writer commits meanwhile
    held.send_signal(signal.SIGCONT)
    out, err = held.communicate("go\n", timeout=60)
    assert "failed" in out and "write lease was lost" in out, out + err
    counts = batch_counts(s, "fence")
    assert counts == {1: 10}


def test_a_redis_restart_under_load_loses_no_acknowledged_commit(servers):
    s = servers(module=False, args=["--appendonly", "yes", "--appendfsync", "always"])
    make_batches_table(s, "restart")
    u = uri(s, "restart", lease_ms=1000, connect_timeout_ms=500, timeout_ms=5000)
    procs = [client("insert", u, w * 10000, 40, 20) for w in range(3)]
    early = []
    while len(early) < 5:  # some commits before the restart
        line = procs[0].stdout.readline()
        assert line, procs[0].stderr.read()
        if line.startswith("ack"):
            early.append(line)
    s.restart()
    outs = finish(procs) + ["".join(early)]
    acked = {int(line.split()[1]) for out in outs for line in out.splitlines() if line.startswith("ack")}
    counts = batch_counts(s, "restart")
    missing = [b for b in acked if counts.get(b) != 20]
    assert not missing, missing
    assert all(c == 20 for c in counts.values())
    assert len(acked) == 3 * 40  # every client finished every batch


# ---- bad input: clear errors, no crash ---------------------------------------------

@needs_inprocess
@pytest.mark.parametrize("params,words", [
    ({"redis": "127.0.0.1:notaport"}, "expected host:port"),
    ({"redis": "127.0.0.1:0"}, "expected host:port"),
    ({"lease_ms": "-5"}, "lease_ms=-5"),
    ({"db": "x"}, "db=x"),
    ({"timeout_ms": "99999999999"}, "timeout_ms"),
])
def test_a_bad_uri_parameter_is_named_in_the_error(servers, params, words):
    s = servers(module=False)
    c = sqlite3.connect(":memory:")
    c.enable_load_extension(True)
    c.load_extension(LIB)
    params = dict({"redis": "127.0.0.1:%d" % s.port}, **params)
    q = "&".join("%s=%s" % kv for kv in params.items())
    with pytest.raises(sqlite3.OperationalError):
        sqlite3.connect("file:k?vfs=redis&" + q, uri=True)
    assert words in kvsql_error(c)


@needs_inprocess
def test_a_wrong_password_is_an_auth_error(servers):
    s = servers(module=False)
    s.client().config_set("requirepass", "secret")
    db = pydb(s, "k", password="wrong")
    with pytest.raises(sqlite3.DatabaseError) as e:
        db.execute("create table t(a)")
    assert "authorization denied" in str(e.value)
    assert "WRONGPASS" in kvsql_error(db) or "invalid" in kvsql_error(db)
    db = pydb(s, "k")
    with pytest.raises(sqlite3.DatabaseError):
        db.execute("create table t(a)")
    assert "NOAUTH" in kvsql_error(db)
    db = pydb(s, "k", password="secret")
    db.execute("create table t(a)")
    s.client(password="secret").config_set("requirepass", "")  # so the harness can stop it


@needs_inprocess
def test_a_missing_acl_permission_is_a_permission_error(servers):
    s = servers(module=False)
    r = s.client()
    r.execute_command("ACL", "SETUSER", "reader", "on", ">pw", "~other*", "+@all")
    db = pydb(s, "k", user="reader", password="pw")
    with pytest.raises(sqlite3.DatabaseError) as e:
        db.execute("create table t(a)")
    assert "access permission denied" in str(e.value)
    assert "NOPERM" in kvsql_error(db)


@needs_inprocess
def test_a_key_of_another_type_or_a_foreign_hash_is_not_a_database(servers, tmp_path):
    s = servers(module=False)
    r = s.client()
    r.set("str", "x")
    r.hset("foreign", mapping={"0": "hello", "1": "world"})
    for key, words in [("str", "key str holds a string, not a kvsql database"),
                       ("foreign", "key foreign is not a kvsql database")]:
        db = pydb(s, key)
        with pytest.raises(sqlite3.DatabaseError) as e:
            db.execute("select * from sqlite_master").fetchall()
        assert "file is not a database" in str(e.value)
        assert words in kvsql_error(db)
    # an SQLite file in WAL mode, stored page by page
    path = tmp_path / "wal.sqlite"
    f = sqlite3.connect(str(path))
    f.execute("pragma journal_mode=wal")
    f.execute("create table t(a)")
    f.close()
    data = path.read_bytes()
    assert data[18] == 2
    r.hset("wal", mapping={str(i): data[i * 4096:(i + 1) * 4096] for i in range(len(data) // 4096)})
    db = pydb(s, "wal")
    with pytest.raises(sqlite3.DatabaseError):
        db.execute("select * from sqlite_master").fetchall()
    assert "WAL mode" in kvsql_error(db)
    assert r.type("str") == b"string" and r.hget("foreign", "0") == b"hello"  # nothing touched


# ---- the module and the library: one format -----------------------------------------

needs_module = pytest.mark.skipif(not os.path.exists(MODULE), reason="the module is not built")


@needs_module
def test_the_module_reads_what_the_library_wrote_and_back(servers):
    s = servers()
    r = s.client()
    out, err = shell(s, "both", "create table t(a, b); insert into t values (1, 'from the library');\n")
    assert err == ""
    assert r.execute_command("SQL.QUERY", "both", "select b from t")[1] == [b"from the library"]
    r.execute_command("SQL.EXEC", "both", "insert into t values (2, 'from the module')")
    out, err = shell(s, "both", "select b from t order by a;\npragma integrity_check;\n")
    assert out.splitlines() == ["from the library", "from the module", "ok"], err


def module_writes(r, key, statements, attempts=20000):
    """Runs each statement with SQL.EXEC, retrying while a library writer
    holds the lease; bounded."""
    for sql in statements:
        for _ in range(attempts):
            try:
                r.execute_command("SQL.EXEC", key, sql)
                break
            except redis.ResponseError as e:
                assert "locked" in str(e), e
                time.sleep(0.001)
        else:
            raise AssertionError("SQL.EXEC never got past the lease")


@needs_module
def test_no_update_is_lost_with_the_module_among_the_writers(servers):
    s = servers()
    r = s.client()
    shell(s, "counter", "create table c(n int); insert into c values (0);\n")
    n, m = 3, 20
    procs = [client("incr", uri(s, "counter"), m) for _ in range(n)]
    module_writes(r, "counter", ["update c set n = n + 1"] * m)
    finish(procs)
    out, _ = shell(s, "counter", "select n from c;\n")
    assert int(out) == (n + 1) * m


@needs_module
def test_snapshots_stay_consistent_with_the_module_moving_money(servers):
    s = servers()
    r = s.client()
    bank(s, "bank")
    u = uri(s, "bank")
    procs = [client("transfer", u, 20, 7)] + [client("sums", u, 30) for _ in range(2)]
    import random as _random
    rnd = _random.Random(3)
    moves = []
    for _ in range(40):
        a, b, amt = rnd.randrange(400), rnd.randrange(400), rnd.randrange(1, 50)
        moves.append("update acct set bal = bal + case id when %d then -%d else 0 end "
                     "+ case id when %d then %d else 0 end where id in (%d, %d)" % (a, amt, b, amt, a, b))
    module_writes(r, "bank", moves)
    outs = finish(procs)
    for out in outs[1:]:
        assert "bad" not in out, out
    out, _ = shell(s, "bank", "select sum(bal) = total from acct, meta;\npragma integrity_check;\n")
    assert out.split() == ["1", "ok"]


@needs_module
@needs_inprocess
def test_a_page_size_change_is_refused_and_changes_nothing(servers, tmp_path):
    """PRAGMA page_size then VACUUM, an import of a file of 8 KiB pages, and
    the same VACUUM through the module are refused (the page size of a
    stored database is fixed) and change nothing: before, SQLite's
    rollback wrote page 1 back with a new change counter and the library
    committed it as a new version (issue 23 item 7)."""
    s = servers()
    r = s.client()
    db = pydb(s, "ps")
    db.execute("create table t(id integer primary key, v)")
    db.execute("with recursive q(i) as (select 1 union all select i + 1 from q where i < 200) "
               "insert into t select i, randomblob(500) from q")
    db.execute("delete from t where id % 3 = 0")  # free pages: VACUUM has work
    before, v = r.hgetall("ps"), r.get("{ps}:v")
    words = "the page size of a stored database cannot change (from 4096 to 8192 bytes"
    db = pydb(s, "ps")
    db.execute("pragma page_size = 8192")
    with pytest.raises(sqlite3.OperationalError):
        db.execute("vacuum")
    assert words in kvsql_error(db)
    assert r.hgetall("ps") == before and r.get("{ps}:v") == v
    assert db.execute("select count(*) from t").fetchone()[0] == 134
    big = str(tmp_path / "8k.db")
    c = sqlite3.connect(big)
    c.execute("pragma page_size = 8192")
    c.execute("create table u(y)")
    c.commit()
    c.close()
    p = subprocess.run([os.path.join(ROOT, BUILD, "kvsql"), "import", "--replace", big,
                        "redis://127.0.0.1:%d/ps" % s.port], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and words in p.stderr, p.stderr
    assert r.hgetall("ps") == before and r.get("{ps}:v") == v
    with pytest.raises(redis.ResponseError, match=r"SQLITE_IOERR .*" + re.escape(words)):
        r.execute_command("SQL.EXEC", "ps", "pragma page_size = 8192; vacuum")
    assert r.hgetall("ps") == before and r.get("{ps}:v") == v
