"""test_extension.py - libkvsql.so in hosts nobody here wrote: a program
with its own SQLite copy that loads the extension, the sqlite3 shell's
`.load`, programs started with LD_PRELOAD=libkvsql.so and KVSQL_DEFAULT
(the sqlite3 shell, an unmodified Python script), and CPython 3.11's own
sqlite3 test suite run that way (docs/LIBRARY.md, "Loading").

Every test starts its own redis-server (harness.py) and checks where the
data landed by reading Redis. Bounded: each child process has a timeout.
"""
import os
import re
import shutil
import subprocess
import sys

import pytest

from harness import ROOT
from libhelp import LIB, SANITIZED, built, env, uri
from test_library import C_PROGRAM

pytestmark = pytest.mark.skipif(not built(), reason="libkvsql.so is not built")

SO = LIB + ".so"
STATIC_SQLITE = "/usr/lib/x86_64-linux-gnu/libsqlite3.a"

# A host with its own SQLite: linked statically, the copy's symbols hidden
# (--exclude-libs), so the extension cannot bind to them; the process has
# no libsqlite3.so unless the extension drags one in.
HOST = r"""
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
static int row(void *a, int n, char **v, char **c) {
    (void)a, (void)c;
    for (int i = 0; i < n; i++) printf("%s%s", i ? "|" : "", v[i] ? v[i] : "NULL");
    printf("\n");
    return 0;
}
static int system_sqlite_loaded(void) {
    char line[512];
    int found = 0;
    FILE *f = fopen("/proc/self/maps", "r");
    while (f && fgets(line, sizeof(line), f)) found |= strstr(line, "libsqlite3.so") != NULL;
    if (f) fclose(f);
    return found;
}
int main(int argc, char **argv) {
    sqlite3 *mem, *db;
    char *err = NULL;
    if (argc != 4) return 2;
    sqlite3_open(":memory:", &mem);
    sqlite3_enable_load_extension(mem, 1);
    if (sqlite3_load_extension(mem, argv[1], NULL, &err) != SQLITE_OK) {
        printf("load failed: %s\n", err);
        return 1;
    }
    int rc = sqlite3_open_v2(argv[2], &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, argv[3], row, NULL, &err);
    if (rc != SQLITE_OK) {
        printf("error %d: %s\n", rc, err ? err : sqlite3_errmsg(db));
        sqlite3_exec(db, "select kvsql_error()", row, NULL, NULL);
        return 1;
    }
    sqlite3_close(db);
    sqlite3_close(mem);
    printf("system libsqlite3 loaded: %d\n", system_sqlite_loaded());
    return 0;
}
"""


def static_host(tmp_path):
    if not os.path.exists(STATIC_SQLITE):
        pytest.skip("no static SQLite (%s, from libsqlite3-dev)" % STATIC_SQLITE)
    src = tmp_path / "host.c"
    src.write_text(HOST)
    exe = tmp_path / "host"
    flags = ["-fsanitize=address,undefined"] if SANITIZED else []
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", *flags, str(src), "-o", str(exe), STATIC_SQLITE,
                    "-Wl,--exclude-libs,ALL", "-lm", "-ldl", "-pthread"],
                   check=True, capture_output=True, timeout=120)
    return str(exe)


def test_a_host_with_its_own_sqlite_runs_a_transaction_on_the_redis_vfs(servers, tmp_path):
    s = servers(module=False)
    host = static_host(tmp_path)
    env_ = env()
    env_.pop("LD_PRELOAD", None) if not SANITIZED else None
    p = subprocess.run([host, LIB, uri(s, "hostdb"),
                        "begin; create table t(a); insert into t values (1), (2); commit;"
                        "select count(*), sum(a) from t; select json_extract(kvsql_stats(), '$.commits');"],
                       capture_output=True, text=True, timeout=60, env=env_)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.splitlines() == ["2|3", "1", "system libsqlite3 loaded: 0"], p.stdout + p.stderr
    assert s.client().hlen("hostdb") == 2  # the header and one page: in Redis, through the host's SQLite


def test_capture_in_a_host_that_hides_the_preupdate_hook_refuses_to_commit(servers, tmp_path):
    """The preupdate routines are not in SQLite's extension table: a host
    that does not export them gets no change capture, and a commit while
    capture is on is refused (nothing written) rather than published without
    its changes."""
    s = servers()
    r = s.client()
    r.execute_command("SQL.CHANGES", "capdb", "ON")
    host = static_host(tmp_path)
    p = subprocess.run([host, LIB, uri(s, "capdb"), "create table t(a); insert into t values (1);"],
                       capture_output=True, text=True, timeout=60, env=env())
    assert p.returncode == 1
    assert "preupdate hook, which the SQLite kvsql was loaded into does not export" in p.stdout, p.stdout + p.stderr
    assert not r.exists("capdb")


@pytest.mark.parametrize("libs", [["-lkvsql", "-lsqlite3"], ["-lsqlite3", "-lkvsql"]])
def test_a_c_program_linked_either_way_registers_the_vfs(servers, tmp_path, libs):
    """kvsql_register_redis() with no host table finds the program's SQLite
    whichever library the program names first (the first order puts
    libkvsql's sqlite3_open* before libsqlite3's)."""
    s = servers(module=False)
    src = tmp_path / "prog.c"
    src.write_text(C_PROGRAM)
    exe = str(tmp_path / "prog")
    flags = ["-fsanitize=address,undefined"] if SANITIZED else []
    libdir = os.path.dirname(LIB)
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", *flags, "-I", os.path.join(ROOT, "include"), str(src),
                    "-o", exe, "-L", libdir, *libs, "-Wl,-rpath," + libdir], check=True, capture_output=True,
                   timeout=120)
    p = subprocess.run([exe, uri(s, "cdb"), "create table t(a); insert into t values (1)"],
                       capture_output=True, text=True, timeout=60, env=env())
    assert p.stdout.startswith("ok commits="), p.stdout + p.stderr
    assert s.client().hlen("cdb") == 2


def test_the_library_binds_to_no_sqlite_symbol():
    """Every SQLite routine comes from the host's table: no sqlite3_* symbol
    left for the dynamic linker to bind, and no libsqlite3 needed."""
    und = subprocess.run(["nm", "-D", "--undefined-only", SO], capture_output=True, text=True, check=True).stdout
    assert [l for l in und.splitlines() if "sqlite3" in l] == []
    needed = subprocess.run(["readelf", "-d", SO], capture_output=True, text=True, check=True).stdout
    assert "libsqlite3" not in needed


def test_load_in_the_sqlite3_shell_still_works(servers):
    s = servers(module=False)
    p = subprocess.run(["sqlite3", "-bail", "-cmd", ".load " + LIB, "-cmd", ".open " + uri(s, "shelldb")],
                       input="create table t(a); insert into t values (5); select a from t;"
                             "select json_extract(kvsql_stats(), '$.commits');",
                       capture_output=True, text=True, timeout=60, env=env())
    assert (p.stdout, p.stderr) == ("5\n2\n", "")  # two autocommit statements, two commits
    assert s.client().hlen("shelldb") == 2


# ---- Node's better-sqlite3 (SQLite 3.5x bundled in its addon) ------------------------

NODE_CACHE = os.environ.get("KVSQL_NODE_CACHE", os.path.expanduser("~/.cache/kvsql-tests/node"))

NODE_SCRIPT = r"""
const Database = require('better-sqlite3');
const mem = new Database(':memory:');
mem.loadExtension(process.env.KVSQL_LIB);
const db = new Database('nodedb');  // a plain name: KVSQL_DEFAULT makes redis the default VFS
db.exec('create table if not exists t(a)');
db.transaction(() => { for (const a of [1, 2, 3]) db.prepare('insert into t values (?)').run(a); })();
const row = db.prepare('select count(*) n, sum(a) s, sqlite_version() v from t').get();
console.log(row.n, row.s, JSON.parse(db.prepare('select kvsql_stats() s').get().s).commits, row.v);
"""


def better_sqlite3():
    """A directory where require('better-sqlite3') works (installed once into
    NODE_CACHE), or skips the test with the reason."""
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("node and npm are not installed")
    if not os.path.exists(os.path.join(NODE_CACHE, "node_modules", "better-sqlite3", "build", "Release",
                                       "better_sqlite3.node")):
        os.makedirs(NODE_CACHE, exist_ok=True)
        p = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "better-sqlite3@12"], cwd=NODE_CACHE,
                           capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            pytest.skip("npm could not install better-sqlite3 (registry unreachable?): " + p.stderr[-300:])
    return NODE_CACHE


@pytest.mark.skipif(SANITIZED, reason="node is not built with the sanitizer runtime")
def test_better_sqlite3_with_its_bundled_sqlite_runs_a_transaction_on_the_redis_vfs(servers):
    where = better_sqlite3()
    s = servers(module=False)
    p = subprocess.run(["node", "-e", NODE_SCRIPT], capture_output=True, text=True, timeout=120, cwd=where,
                       env=env(KVSQL_DEFAULT="redis://127.0.0.1:%d" % s.port))
    assert p.returncode == 0, p.stdout + p.stderr
    n, total, commits, version = p.stdout.split()
    assert (n, total, commits) == ("3", "6", "2")
    assert version != subprocess.run(["sqlite3", "--version"], capture_output=True, text=True).stdout.split()[0]
    assert s.client().hlen("nodedb") == 2
    assert not os.path.exists(os.path.join(where, "nodedb"))


# ---- LD_PRELOAD -------------------------------------------------------------------

def preload_env(default, **extra):
    e = env(**extra)
    e["LD_PRELOAD"] = ":".join(x for x in (os.environ.get("KVSQL_PRELOAD"), SO) if x)
    if default is None:
        e.pop("KVSQL_DEFAULT", None)
    else:
        e["KVSQL_DEFAULT"] = default
    return e


def test_preload_keeps_the_sqlite3_shells_plain_names_in_redis(servers, tmp_path):
    s = servers(module=False)
    p = subprocess.run(["sqlite3", "-bail", "app.db"],
                       input="create table t(a); insert into t values (7); select a from t;",
                       capture_output=True, text=True, timeout=60, cwd=tmp_path,
                       env=preload_env("redis://127.0.0.1:%d" % s.port))
    assert (p.stdout, p.stderr) == ("7\n", "")
    assert not (tmp_path / "app.db").exists()
    assert s.client().hlen("app.db") == 2
    # a URI naming the VFS and server still decides; :memory: stays in memory
    p = subprocess.run(["sqlite3", "-bail", ":memory:"], input="select count(*) from sqlite_schema;",
                       capture_output=True, text=True, timeout=60, cwd=tmp_path,
                       env=preload_env("redis://127.0.0.1:%d" % s.port))
    assert (p.stdout, p.stderr) == ("0\n", "")
    assert sorted(k.decode() for k in s.client().keys("*") if not k.startswith(b"{")) == ["app.db"]


PY_SCRIPT = """
import sqlite3
c = sqlite3.connect("plain.db")
c.execute("create table if not exists t(a)")
c.execute("insert into t values (42)")
c.commit()
print(c.execute("select sum(a) from t").fetchone()[0])
"""


def test_preload_keeps_an_unmodified_python_scripts_database_in_redis(servers, tmp_path):
    s = servers(module=False)
    for want in ("42", "84"):
        p = subprocess.run(["/usr/bin/python3", "-c", PY_SCRIPT], capture_output=True, text=True, timeout=60,
                           cwd=tmp_path, env=preload_env("redis://127.0.0.1:%d" % s.port))
        assert (p.stdout.strip(), p.stderr) == (want, "")
    assert not (tmp_path / "plain.db").exists()
    assert s.client().hlen("plain.db") == 2


def test_preload_leaves_temporary_and_memory_databases_in_memory(servers, tmp_path):
    """"" is SQLite's temporary database and ":memory:" its memory one: a
    program asks for them by those names whatever the default VFS is."""
    s = servers(module=False)
    script = ("import sqlite3\n"
              "for name in ('', ':memory:'):\n"
              "    c = sqlite3.connect(name)\n"
              "    c.execute('create table t(a)'); c.execute('insert into t values (1)'); c.commit()\n"
              "    print(c.execute('select count(*) from t').fetchone()[0])\n")
    p = subprocess.run(["/usr/bin/python3", "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                       env=preload_env("redis://127.0.0.1:%d" % s.port))
    assert (p.stdout, p.stderr) == ("1\n1\n", "")
    assert s.client().dbsize() == 0
    assert os.listdir(tmp_path) == []


def test_preload_with_a_bad_default_refuses_to_open_rather_than_write_a_file(tmp_path):
    p = subprocess.run(["/usr/bin/python3", "-c", PY_SCRIPT], capture_output=True, text=True, timeout=60,
                       cwd=tmp_path, env=preload_env("redis://127.0.0.1:99999"))
    assert p.returncode != 0
    assert "KVSQL_DEFAULT" in p.stderr and "redis=127.0.0.1:99999" in p.stderr, p.stderr
    assert not (tmp_path / "plain.db").exists()


def test_preload_without_a_default_changes_nothing(tmp_path):
    p = subprocess.run(["/usr/bin/python3", "-c", PY_SCRIPT], capture_output=True, text=True, timeout=60,
                       cwd=tmp_path, env=preload_env(None))
    assert (p.stdout.strip(), p.stderr) == ("42", "")
    assert (tmp_path / "plain.db").exists()


# ---- CPython's sqlite3 test suite ----------------------------------------------------

# The failures no VFS that is not a file system could avoid, as listed in
# docs/LIBRARY.md ("CPython's sqlite3 test suite"): each test checks a file
# on disk, or removes the database with os.unlink (which a VFS never
# sees; the next test then finds its tables), or expects a reader to block
# a writer's commit (the redis VFS gives readers snapshots, as WAL does).
EXPECTED_FAILURES = {
    # a path under a missing directory, or a directory, must fail to open
    "test_dbapi.ConnectionTests.test_failed_open",
    "test_dbapi.ConnectionTests.test_connection_bad_reinit",
    "test_dbapi.ModuleTests.test_error_code_on_exception",
    # os.path.exists(path) after the open
    "test_dbapi.OpenTests.test_open_with_path_like_object",
    "test_dbapi.OpenTests.test_open_with_undecodable_path",
    "test_dbapi.OpenTests.test_open_uri",
    "test_dbapi.OpenTests.test_open_unquoted_uri",
    "test_dbapi.OpenTests.test_open_undecodable_uri",
    "test_dbapi.OpenTests.test_open_uri_readonly",
    # readers never block writers
    "test_dbapi.MultiprocessTests.test_ctx_mgr_rollback_if_commit_failed",
    # tearDown removes the database with os.unlink: the next test finds the last one's tables
    "test_transactions.TransactionTests.test_dml_does_not_auto_commit_before",
    "test_transactions.TransactionTests.test_insert_starts_transaction",
    "test_transactions.TransactionTests.test_locking",
    "test_transactions.TransactionTests.test_multiple_cursors_and_iternext",
    "test_transactions.TransactionTests.test_raise_timeout",
    "test_transactions.TransactionTests.test_replace_starts_transaction",
    "test_transactions.TransactionTests.test_toggle_auto_commit",
    "test_transactions.TransactionTests.test_update_starts_transaction",
}


def python_with_sqlite3_tests():
    """A CPython 3.11 with its sqlite3 tests whose _sqlite3 links the system
    libsqlite3 (a python3.11 built from source on PATH; Debian 12's
    libpython3.11-testsuite leaves test_sqlite3 out), or the reason there is
    none."""
    for py in dict.fromkeys(["/usr/bin/python3.11", shutil.which("python3.11") or ""]):
        if not py or not os.path.exists(py):
            continue
        p = subprocess.run([py, "-c", "import sys, _sqlite3, test.test_sqlite3\n"
                                      "print(sys.executable, _sqlite3.__file__)"],
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            continue
        exe, module = p.stdout.splitlines()[-1].split(" ", 1)  # the import prints a line of its own first
        ldd = subprocess.run(["ldd", module], capture_output=True, text=True, timeout=60).stdout
        if "libsqlite3.so" in ldd:
            return exe, None
    return None, "no python3.11 with test.test_sqlite3 whose _sqlite3 links libsqlite3.so"


@pytest.mark.skipif(SANITIZED, reason="the suite's own child processes would need the sanitizer runtime too")
def test_cpythons_sqlite3_suite_passes_on_the_redis_vfs_but_for_file_checks(servers, tmp_path):
    py, why = python_with_sqlite3_tests()
    if not py:
        pytest.skip(why)
    s = servers(module=False)
    p = subprocess.run([py, "-m", "test", "-v", "test_sqlite3"], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path, env=preload_env("redis://127.0.0.1:%d" % s.port))
    out = p.stdout + p.stderr
    ran = re.search(r"Ran (\d+) tests", out)
    assert ran and int(ran.group(1)) > 400, out[-3000:]
    failed = {m.group(2).replace("test.test_sqlite3.", "")
              for m in re.finditer(r"^(FAIL|ERROR): \S+ \(([^)]+)\)", out, re.M)}
    assert failed - EXPECTED_FAILURES == set(), out[-5000:]
    # the suite's databases went to Redis, not to files
    keys = [k.decode("utf-8", "replace") for k in s.client().keys("*") if not k.startswith(b"{")]
    assert any(k.startswith("@test_") for k in keys), keys
