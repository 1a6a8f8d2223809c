"""test_library_names.py - what the `redis` VFS makes of names and URI
parameters (src/client/extension.c, src/client/config.c, src/vfs.c), and
what kvsql_error() says afterwards, against real redis-server processes:
a name must name a key, a parameter must be one kvsql or SQLite knows,
long keys work up to the documented bound, mode=ro needs a database, and
an error is not repeated after later statements succeeded."""
import os
import sqlite3
import subprocess

import pytest

from libhelp import LIB, built, env, pydb, shell, uri

pytestmark = [pytest.mark.skipif(not built(), reason="libkvsql.so is not built"),
              pytest.mark.skipif(bool(os.environ.get("KVSQL_PRELOAD")),
                                 reason="a sanitized library loads only into a preloaded process")]

MAX_KEY = 65528  # src/vfs.c: MAX_PATHNAME - 8


def loaded():
    c = sqlite3.connect(":memory:")
    c.enable_load_extension(True)
    c.load_extension(LIB)
    return c


def kvsql_error(db):
    return db.execute("select kvsql_error()").fetchone()[0]


def connect(u):
    return sqlite3.connect(u, uri=True, isolation_level=None, timeout=30)


def test_a_name_without_a_key_is_refused_not_a_temporary_database(servers):
    s = servers(module=False)
    loaded()
    with pytest.raises(sqlite3.OperationalError, match="needs a key"):
        db = connect("file:?vfs=redis&redis=127.0.0.1:%d" % s.port)
        db.execute("create table t(x)")
        db.execute("insert into t values ('important')")  # acknowledged, then gone, before the fix
    assert s.client().keys("*") == []
    m = connect("file::memory:?vfs=redis")  # SQLite's memory database stays what it is
    m.execute("create table t(x)")


@pytest.mark.parametrize("n", [4097, 5000, MAX_KEY])
def test_long_keys_work_up_to_the_bound(servers, n):
    s = servers(module=False)
    loaded()
    key = "K" * n
    db = connect(uri(s, key))
    db.execute("create table t(x)")
    db.execute("insert into t values (42)")
    db.close()
    assert s.client().hlen(key) == 2
    assert connect(uri(s, key)).execute("select x from t").fetchall() == [(42,)]


def test_a_key_past_the_bound_fails_with_a_clear_error(servers):
    s = servers(module=False)
    other = loaded()
    with pytest.raises(sqlite3.OperationalError):
        connect(uri(s, "K" * (MAX_KEY + 1))).execute("create table t(x)")
    assert "may have at most %d" % MAX_KEY in kvsql_error(other)


@pytest.mark.parametrize("param", ["wiat=1", "lease=5", "tls_verfy=0"])
def test_an_unknown_uri_parameter_is_refused_naming_it(servers, param):
    s = servers(module=False)
    other = loaded()
    with pytest.raises(sqlite3.OperationalError):
        connect(uri(s, "k") + "&" + param).execute("create table t(x)")
    assert "unknown URI parameter %s" % param.split("=")[0] in kvsql_error(other)
    assert not s.client().exists("k")


def test_parameters_of_sqlite_and_kvsql_are_accepted(servers):
    s = servers(module=False)
    loaded()
    db = connect(uri(s, "k", cache="private", psow=1, mode="rwc", lease_ms=5000, cache_kb=64, wait=0))
    db.execute("create table t(x)")
    assert s.client().exists("k")


def test_read_only_open_of_a_key_without_a_database_fails_like_sqlite(servers, tmp_path):
    s = servers(module=False)
    other = loaded()
    with pytest.raises(sqlite3.OperationalError) as e:
        connect(uri(s, "nothing", mode="ro")).execute("select * from sqlite_master")
    assert e.value.sqlite_errorcode == sqlite3.SQLITE_CANTOPEN
    with pytest.raises(sqlite3.OperationalError) as native:  # what SQLite's own VFS does
        connect("file:%s?mode=ro" % (tmp_path / "nothing.db")).execute("select * from sqlite_master")
    assert native.value.sqlite_errorcode == e.value.sqlite_errorcode
    assert "holds no database" in kvsql_error(other)
    assert not s.client().exists("nothing")
    db = connect(uri(s, "k"))
    db.execute("create table t(x)")
    assert connect(uri(s, "k", mode="ro")).execute("select count(*) from t").fetchall() == [(0,)]


def test_kvsql_error_is_cleared_by_later_success(servers):
    s = servers(module=False)
    loaded()
    r = s.client()
    db = connect(uri(s, "k"))
    db.execute("create table t(x)")
    r.set("{k}:lease", "someone", px=60000)  # another writer
    with pytest.raises(sqlite3.OperationalError):
        sqlite3.connect(uri(s, "k"), uri=True, isolation_level=None, timeout=0).execute("insert into t values (1)")
    assert kvsql_error(db) != ""
    r.delete("{k}:lease")
    db.execute("insert into t values (2)")
    assert kvsql_error(db) == ""
    with pytest.raises(sqlite3.OperationalError):  # an open that fails
        connect(uri(s, "k", lease_ms=-5)).execute("select 1")
    db.execute("insert into t values (3)")
    assert kvsql_error(db) == ""


def test_one_strict_url_decoder(servers):
    s = servers(module=False)
    for bad in ("pa%4zss", "pa%-1ss", "pa%00ss", "pa%4"):
        u = "redis://user:%s@127.0.0.1:%d" % (bad, s.port)
        p = subprocess.run(["sqlite3", ":memory:", ".load " + LIB], capture_output=True, text=True, timeout=30,
                           env=env(KVSQL_DEFAULT=u))
        assert "bad user or password" in p.stderr, (bad, p.stderr)
    p = subprocess.run([os.path.join(os.path.dirname(LIB), "kvsql"), "check", "redis://127.0.0.1:%d/k%%4z" % s.port],
                       capture_output=True, text=True, timeout=30, env=env())
    assert p.returncode == 1 and "bad %XX" in p.stderr


def test_attach_and_vacuum_into_a_plain_name_go_to_the_main_databases_server(servers):
    x, y = servers(module=False), servers(module=False)  # y: the process's default, x: the main database's
    p = subprocess.run(["sqlite3", "-bail", "-cmd", ".load " + LIB,
                        "-cmd", ".open file:main?vfs=redis&redis=127.0.0.1:%d" % x.port],
                       input="CREATE TABLE t(a); INSERT INTO t VALUES (1);\n"
                             "ATTACH 'other.db' AS o; CREATE TABLE o.u(b); INSERT INTO o.u VALUES (2);\n"
                             "VACUUM INTO 'backup.db';\n",
                       capture_output=True, text=True, timeout=60,
                       env=env(KVSQL_DEFAULT="redis://127.0.0.1:%d" % y.port))
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert sorted(k for k in x.client().keys("*") if not k.startswith(b"{")) == [b"backup.db", b"main", b"other.db"]
    assert y.client().keys("*") == []
    out = subprocess.run(["sqlite3", "-cmd", ".load " + LIB, "-cmd",
                          ".open file:backup.db?vfs=redis&redis=127.0.0.1:%d" % x.port],
                         input="SELECT a FROM t;\n", capture_output=True, text=True, timeout=60, env=env())
    assert out.stdout.strip() == "1", out.stderr
