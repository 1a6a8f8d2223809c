"""test_cli.py - the `kvsql` command (tools/kvsql.c): import, export,
check and shell against real redis-server processes, with the module and
without it (the command goes through the library's redis VFS)."""
import os
import sqlite3
import subprocess

import pytest

from harness import BUILD, ROOT
from libhelp import env

KVSQL = os.path.join(ROOT, BUILD, "kvsql")


def kvsql(*args, stdin=None):
    """Runs the command as a user would; in a sanitized build `kvsql shell`
    starts the system sqlite3, which must get the sanitizer runtime first."""
    return subprocess.run([KVSQL, *args], capture_output=True, text=True, timeout=60, input=stdin, env=env())


def url(server, key):
    return "redis://127.0.0.1:%d/%s" % (server.port, key)


def make_db(path, wal=False, rows=300):
    db = sqlite3.connect(path)
    if wal:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA wal_autocheckpoint=0")  # rows stay in the -wal file
    db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v REAL, b BLOB)")
    db.executemany("INSERT INTO t(name, v, b) VALUES (?, ?, ?)",
                   [("n%d" % i, i / 3, bytes([i % 256]) * 50) for i in range(rows)])
    db.commit()
    return db  # kept open: a WAL file keeps its -wal


def dump(path):
    return subprocess.run(["sqlite3", path, ".dump"], capture_output=True, text=True, timeout=30).stdout


def pages(path):
    data = open(path, "rb").read()
    size = int.from_bytes(data[16:18], "big")
    size = 65536 if size == 1 else size
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.fixture(params=[True, False], ids=["module", "plain"])
def srv(request, servers):
    return servers(module=request.param)


def test_import_export_round_trip(srv, tmp_path):
    src = str(tmp_path / "src.db")
    make_db(src).close()
    assert kvsql("import", src, url(srv, "shop")).returncode == 0
    out = str(tmp_path / "out.db")
    res = kvsql("export", url(srv, "shop"), out)
    assert res.returncode == 0, res.stderr
    assert dump(out) == dump(src)
    a, b = pages(src), pages(out)
    assert len(a) == len(b) and a[1:] == b[1:]  # page 1's header counters may differ


def test_import_converts_wal_mode(srv, tmp_path):
    src = str(tmp_path / "wal.db")
    keep = make_db(src, wal=True)
    assert os.path.getsize(src + "-wal") > 0
    res = kvsql("import", src, url(srv, "w"))
    assert res.returncode == 0, res.stderr
    out = str(tmp_path / "out.db")
    assert kvsql("export", url(srv, "w"), out).returncode == 0
    assert open(out, "rb").read()[18:20] == b"\x01\x01"  # rollback journal
    assert dump(out) == dump(src)
    keep.close()
    assert kvsql("check", url(srv, "w")).returncode == 0


def test_import_refuses_an_existing_key_unless_replace(srv, tmp_path):
    src = str(tmp_path / "src.db")
    make_db(src, rows=3).close()
    assert kvsql("import", src, url(srv, "k")).returncode == 0
    res = kvsql("import", src, url(srv, "k"))
    assert res.returncode == 1 and "already holds a database: add --replace" in res.stderr
    assert kvsql("import", "--replace", src, url(srv, "k")).returncode == 0


def test_export_refuses_an_existing_file_unless_replace(srv, tmp_path):
    src = str(tmp_path / "src.db")
    make_db(src, rows=3).close()
    kvsql("import", src, url(srv, "k"))
    res = kvsql("export", url(srv, "k"), src)
    assert res.returncode == 1 and "exists: add --replace" in res.stderr
    assert kvsql("export", "--replace", url(srv, "k"), src).returncode == 0


def test_check_reports_ok_missing_and_wrong_type(srv, tmp_path):
    src = str(tmp_path / "src.db")
    make_db(src, rows=3).close()
    kvsql("import", src, url(srv, "k"))
    res = kvsql("check", url(srv, "k"))
    assert res.returncode == 0 and "k: ok (" in res.stdout
    res = kvsql("check", url(srv, "missing"))
    assert res.returncode == 1 and "holds no database" in res.stderr
    srv.client().set("str", "x")
    res = kvsql("check", url(srv, "str"))
    assert res.returncode == 1 and "holds a string" in res.stderr


def test_keys_with_slashes_and_db_numbers(srv, tmp_path):
    src = str(tmp_path / "src.db")
    make_db(src, rows=3).close()
    u = "redis://127.0.0.1:%d/2/app%%2Fx.db" % srv.port
    assert kvsql("import", src, u).returncode == 0
    assert srv.client(db=2).exists("app/x.db")


def test_shell_runs_sql_on_the_key(srv, tmp_path):
    src = str(tmp_path / "src.db")
    make_db(src, rows=3).close()
    kvsql("import", src, url(srv, "k"))
    res = kvsql("shell", url(srv, "k"), "SELECT count(*) FROM t")
    assert res.returncode == 0 and res.stdout.strip() == "3", res.stderr
    res = kvsql("shell", url(srv, "k"), stdin="INSERT INTO t(name) VALUES ('z');\nSELECT name FROM t WHERE id = 4;\n")
    assert res.stdout.strip() == "z", res.stderr


def test_module_sees_what_the_command_imported(servers, tmp_path):
    s = servers()
    src = str(tmp_path / "src.db")
    make_db(src, rows=5).close()
    kvsql("import", src, url(s, "k"))
    assert s.client().execute_command("SQL.QUERY", "k", "SELECT count(*) FROM t")[1] == [5]


def test_bad_urls_and_usage(tmp_path):
    assert kvsql().returncode == 2
    for bad, why in [("http://x/k", "expected redis://"), ("redis://127.0.0.1:6379/", "names no key"),
                     ("redis://127.0.0.1:99999/k", "port"), ("redis://h/k%zz", "bad %XX")]:
        res = kvsql("check", bad)
        assert res.returncode == 1 and why in res.stderr, (bad, res.stderr)
    res = kvsql("import", str(tmp_path / "nope.db"), "redis://127.0.0.1:1/k")
    assert res.returncode == 1 and "No such file" in res.stderr
    res = kvsql("check", "redis://127.0.0.1:1/k")
    assert res.returncode == 1 and "cannot connect" in res.stderr
