"""test_library_readonly.py - readers the server will not let write
(issue 23 item 7): a user whose ACL allows only reads of the database's
keys, and a server at maxmemory with noeviction, both refuse the begin
script (it registers the reader: a write). Such a reader begins without
scripts (src/client/hash/store_plain.c): its snapshot is checked, not
registered, so a commit by another client ends its read transaction with
"snapshot too old", never other data. A refused write is SQLITE_PERM, an
ACL refusal inside a script included.

Each test starts its own redis-server (harness.py); Python's sqlite3 in
the test process.
"""
import os
import sqlite3

import pytest

from libhelp import LIB, built, pydb, uri

pytestmark = [pytest.mark.skipif(not built(), reason="libkvsql.so is not built"),
              pytest.mark.skipif(bool(os.environ.get("KVSQL_PRELOAD")),
                                 reason="a sanitized library loads only into a preloaded process")]

ROWS = 2000  # rows of 500 bytes: about 270 pages


def connect(s, key, **params):
    c = sqlite3.connect(":memory:")
    c.enable_load_extension(True)
    c.load_extension(LIB)
    return sqlite3.connect(uri(s, key, **params), uri=True, isolation_level=None, timeout=2)


def why(db):
    return db.execute("select kvsql_error()").fetchone()[0]


def fill(s, key):
    w = pydb(s, key)
    w.execute("create table t(id integer primary key, v text)")
    w.execute("with recursive q(i) as (select 1 union all select i + 1 from q where i < %d) "
              "insert into t select i, printf('%%0500d', i) from q" % ROWS)
    return w


def reader_user(s, name, *extra):
    s.client().execute_command("ACL", "SETUSER", name, "on", ">pw", "~db", "~{db}:*", "+@read", *extra)


SUM = "select count(*), sum(substr(v, 490) + 0) from t"
TOTAL = (ROWS, ROWS * (ROWS + 1) // 2)


def test_a_user_who_may_only_read_reads_and_is_refused_writes(servers):
    s = servers(module=False)
    w = fill(s, "db")
    reader_user(s, "ro")
    r = s.client()
    before = r.hgetall("db"), r.get("{db}:v")
    ro = connect(s, "db", user="ro", password="pw")
    assert ro.execute(SUM).fetchone() == TOTAL  # before: "access permission denied" (NOPERM: EVAL)
    w.execute("update t set v = printf('%0500d', id + 1) where id = 1")
    assert ro.execute(SUM).fetchone() == (ROWS, TOTAL[1] + 1)  # a new snapshot sees the commit
    with pytest.raises(sqlite3.DatabaseError, match="access permission denied"):
        ro.execute("insert into t values (%d, 'no')" % (ROWS + 1))
    assert "NOPERM" in why(ro)
    assert r.zcard("{db}:readers") == 1  # the writer's registration only: the reader registered none
    assert r.get("{db}:v") == str(int(before[1]) + 1).encode()


def test_an_acl_refusal_inside_a_script_is_a_permission_error(servers):
    """A user who may run scripts but not the writes inside them: Redis
    says "can't run this command"; reads work, writes are SQLITE_PERM
    (before: SQLITE_IOERR, and no read at all)."""
    s = servers(module=False)
    fill(s, "db")
    reader_user(s, "scripts", "+eval", "+evalsha", "+script|load")
    ro = connect(s, "db", user="scripts", password="pw")
    assert ro.execute(SUM).fetchone() == TOTAL
    with pytest.raises(sqlite3.DatabaseError, match="access permission denied"):
        ro.execute("delete from t")
    assert "can't run this command" in why(ro)


def test_a_server_at_maxmemory_still_serves_reads(servers):
    s = servers(module=False)
    fill(s, "db")
    r = s.client()
    db = connect(s, "db")
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", 1)
    try:
        assert db.execute(SUM).fetchone() == TOTAL  # before: "database or disk is full" (OOM: the registration)
        assert db.execute(SUM).fetchone() == TOTAL  # again, warm
    finally:
        r.config_set("maxmemory", 0)
    db.execute("delete from t where id = 1")  # memory back: the scripts again
    assert db.execute("select count(*) from t").fetchone() == (ROWS - 1,)


def test_an_unregistered_snapshot_fails_when_others_commit_never_mixes(servers):
    s = servers(module=False)
    w = fill(s, "db")
    reader_user(s, "ro")
    ro = connect(s, "db", user="ro", password="pw", cache_kb=64)
    ro.execute("begin")
    assert ro.execute("select v from t where id = 1").fetchone() == ("%0500d" % 1,)  # a few pages
    w.execute("update t set v = printf('%0500d', id + 1)")  # every page changes
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        ro.execute(SUM).fetchone()  # pages past the cache: the snapshot moved
    assert "snapshot too old" in why(ro) and "not registered" in why(ro)
    assert not ro.in_transaction  # SQLite rolled it back
    assert ro.execute(SUM).fetchone() == (ROWS, TOTAL[1] + ROWS)  # a new transaction reads the new version
