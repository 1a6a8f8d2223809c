"""test_library_version.py - kvsql_version(): the version a transaction reads.

The SQL function returns the version of the snapshot that the
connection's open read transaction reads (T:v as that snapshot saw it,
docs/FORMAT.md), so that a program can note where it is; NULL outside a
read transaction. Each test starts its own redis-server (harness.py).
"""
import os
import sqlite3

import pytest

from libhelp import built, pydb

pytestmark = [pytest.mark.skipif(not built(), reason="libkvsql.so is not built"),
              pytest.mark.skipif(bool(os.environ.get("KVSQL_PRELOAD")),
                                 reason="a sanitized library loads only into a preloaded process")]


def stored_version(server, key):
    return int(server.client().get("{%s}:v" % key) or 0)


def test_a_transaction_reads_the_version_of_its_snapshot_and_keeps_it(servers):
    s = servers(module=False)
    a, b = pydb(s, "ver"), pydb(s, "ver")
    a.execute("create table t(n)")
    a.execute("insert into t values (1)")
    assert stored_version(s, "ver") == 2
    b.execute("begin")
    assert b.execute("select count(*), kvsql_version() from t").fetchone() == (1, 2)
    a.execute("insert into t values (2)")  # a commit after b's snapshot
    assert stored_version(s, "ver") == 3
    assert b.execute("select kvsql_version(), kvsql_version('main')").fetchone() == (2, 2)
    b.execute("commit")
    assert b.execute("select count(*), kvsql_version() from t").fetchone() == (2, 3)


def test_outside_a_read_transaction_it_is_null(servers):
    s = servers(module=False)
    a = pydb(s, "ver")
    a.execute("create table t(n)")
    assert a.execute("select kvsql_version()").fetchone() == (None,)  # no table read: no snapshot
    a.execute("begin")
    assert a.execute("select kvsql_version()").fetchone() == (None,)  # deferred: nothing read yet
    a.execute("select * from t").fetchall()
    assert a.execute("select kvsql_version()").fetchone() == (1,)
    a.execute("commit")


def test_a_database_not_on_a_kvsql_vfs_is_an_error(servers):
    s = servers(module=False)
    a = pydb(s, "ver")
    a.execute("attach ':memory:' as mem")
    with pytest.raises(sqlite3.OperationalError, match="not on a kvsql VFS"):
        a.execute("select kvsql_version('mem')")
    with pytest.raises(sqlite3.OperationalError, match="not on a kvsql VFS"):
        a.execute("select kvsql_version('nosuch')")
