"""test_library_identity.py - a version number is not an identity (issue 23, item 1).

Every commit, of the library or the module, sets T:id to "<new version>:<16
random hex>" in the same atomic step as T:v (docs/FORMAT.md, "Identity").
A library client trusts what it cached (its page cache, SQLite's own, the
changelog since its version, the HMGET + GET read path, the undo records of
an open snapshot) only while that identity, not only the version number,
is the one it saw. These tests make a key's history restart in each way
docs/FORMAT.md lists, reach the same version and length again, and check
that a client that had cached the old history reads the new one (or is
refused), never a mix; and that an open snapshot whose history is gone
gives "snapshot too old", never other data. Each starts its own
redis-server (harness.py).
"""
import os
import re
import sqlite3

import pytest

from harness import attach_replica, sql, wait_for
from libhelp import built, pydb

pytestmark = [pytest.mark.skipif(not built(), reason="libkvsql.so is not built"),
              pytest.mark.skipif(bool(os.environ.get("KVSQL_PRELOAD")),
                                 reason="a sanitized library loads only into a preloaded process")]

IDENT = re.compile(rb"^(\d+):[0-9a-f]{16}$")


def build(db, tag, extra=0):
    """A small database of two tables through db: 3 commits, then `extra`
    more that change only table u's page (so a changelog since the third
    names neither page 1 nor t's page)."""
    db.execute("create table t(id integer primary key, v text)")
    db.execute("insert into t values (1, '%s-1'), (2, '%s-2')" % (tag, tag))
    db.execute("create table u(id integer primary key, w text)")
    for k in range(extra):
        db.execute("insert into u values (%d, '%s')" % (k, tag))
    return db


def module_build(r, key, tag, extra=0):
    """The same database made by the module's SQL.EXEC."""
    sql(r, key, "create table t(id integer primary key, v text)")
    sql(r, key, "insert into t values (1, '%s-1'), (2, '%s-2')" % (tag, tag))
    sql(r, key, "create table u(id integer primary key, w text)")
    for k in range(extra):
        sql(r, key, "insert into u values (%d, '%s')" % (k, tag))


def truth(s, key):
    return pydb(s, key).execute("select * from t order by id").fetchall()


RESTARTS = {
    "flushall": lambda r, key: r.flushall(),
    "flushdb": lambda r, key: r.flushdb(),
    "del K and T:v, T:id left": lambda r, key: r.delete(key, "{%s}:v" % key),
    "del K, T:v and T:id": lambda r, key: r.delete(key, "{%s}:v" % key, "{%s}:id" % key),
    "unlink every key of the database": lambda r, key: r.delete(*r.keys("*%s*" % key)),
    "K and T:v expired": lambda r, key: (r.pexpire(key, 1), r.pexpire("{%s}:v" % key, 1),
                                         wait_for(lambda: not r.exists(key, "{%s}:v" % key), what="expiry")),
}


@pytest.mark.parametrize("writer", ["library", "module"])
@pytest.mark.parametrize("extra", [0, 2])
@pytest.mark.parametrize("restart", sorted(RESTARTS))
def test_a_client_never_trusts_what_it_cached_from_a_history_that_restarted(servers, restart, extra, writer):
    s = servers(module=writer == "module")
    r = s.client()
    a = build(pydb(s, "k"), "old")
    assert a.execute("select * from t order by id").fetchall() == [(1, "old-1"), (2, "old-2")]  # cached
    v, n = r.get("{k}:v"), r.hlen("k")
    RESTARTS[restart](r, "k")
    if writer == "module":
        pydb(s, "k").execute("select count(*) from sqlite_master").fetchall()  # a library begin: it keeps T:log, which the module then writes
        module_build(r, "k", "NEW", extra)
    else:
        build(pydb(s, "k"), "NEW", extra)
    if extra == 0:
        assert (r.get("{k}:v"), r.hlen("k")) == (v, n)  # the very version and length a's cache holds
    want = truth(s, "k")
    assert want[1] == (2, "NEW-2")
    assert a.execute("select * from t order by id").fetchall() == want
    a.execute("update t set v = v || '+a' where id = 2")
    assert truth(s, "k")[1] == (2, "NEW-2+a")
    assert pydb(s, "k").execute("pragma integrity_check").fetchone()[0] == "ok"


def test_a_restored_backup_is_a_new_history_once_committed_to(servers):
    """A backup of K, T:v and T:id restored: the same state as then, but
    the commits after it get new ids, so a client that cached the commits
    the restore undid does not take the new ones of the same number for
    them."""
    s = servers(module=False)
    r = s.client()
    build(pydb(s, "k"), "base")
    backup = {k: r.dump(k) for k in ("k", "{k}:v", "{k}:id")}
    b = pydb(s, "k")
    b.execute("update t set v = 'gone-1' where id = 1")  # the commit the restore undoes
    a = pydb(s, "k")
    assert a.execute("select * from t order by id").fetchall() == [(1, "gone-1"), (2, "base-2")]  # cached
    v, n = r.get("{k}:v"), r.hlen("k")
    for k, d in backup.items():
        r.restore(k, 0, d, replace=True)
    b.execute("update t set v = 'redo-1' where id = 1")
    assert (r.get("{k}:v"), r.hlen("k")) == (v, n)
    assert a.execute("select * from t order by id").fetchall() == [(1, "redo-1"), (2, "base-2")]


def test_a_database_renamed_over_the_key_is_another_history(servers):
    """Another database's keys brought to K (RENAME, as MOVE, COPY or
    SWAPDB would): same version, same length, another identity."""
    s = servers(module=False)
    r = s.client()
    a = build(pydb(s, "k"), "old")
    assert a.execute("select * from t order by id").fetchall()[0] == (1, "old-1")
    build(pydb(s, "k2"), "NEW")
    assert (r.get("{k}:v"), r.hlen("k")) == (r.get("{k2}:v"), r.hlen("k2"))
    for suffix in ("", ":v", ":id"):
        r.rename(("k2" if not suffix else "{k2}" + suffix), ("k" if not suffix else "{k}" + suffix))
    assert a.execute("select * from t order by id").fetchall() == [(1, "NEW-1"), (2, "NEW-2")]


def test_a_client_of_a_master_demoted_by_hand_never_reads_the_commits_it_lost(servers):
    """repro_failover_aba.py: A stays connected to the old master M while a
    replica R is promoted; both reach the same version and length, then M
    resyncs from R. A either reads R's rows or is refused, never its own
    lost ones."""
    m = servers(module=False)
    rep = attach_replica(servers, m, module=False)
    rm, rr = m.client(), rep.client()
    a = pydb(m, "k", lease_ms=600000)
    a.execute("create table t(id integer primary key, v text)")
    a.execute("insert into t(v) values ('base')")
    wait_for(lambda: rr.get("{k}:v") == rm.get("{k}:v"), what="the replica to catch up")
    rr.replicaof("no", "one")
    a.execute("insert into t(v) values ('LOST')")
    pydb(rep, "k").execute("insert into t(v) values ('NEW')")
    assert (rm.get("{k}:v"), rm.hlen("k")) == (rr.get("{k}:v"), rr.hlen("k"))
    rm.replicaof("127.0.0.1", rep.port)
    wait_for(lambda: rm.info("replication").get("master_link_status") == "up" and rm.get("{k}:id") == rr.get("{k}:id"),
             what="the old master to resync")
    try:
        seen = a.execute("select v from t order by id").fetchall()
    except sqlite3.Error:
        return  # refused (the old master is a read-only replica now): no wrong data
    assert seen == [("base",), ("NEW",)]


def reader_with_open_snapshot(s):
    """A reader in a transaction that read table t only: table u's pages
    are still to be read from its snapshot."""
    w = pydb(s, "k")
    build(w, "old")
    w.execute("with recursive q(i) as (select 1 union all select i + 1 from q where i < 40) "
              "insert into u select i, printf('%0400d', i) from q")
    rd = pydb(s, "k")
    rd.execute("begin")
    assert rd.execute("select count(*) from t").fetchone()[0] == 2
    return w, rd


def test_an_open_snapshot_whose_database_was_replaced_is_too_old(servers):
    s = servers(module=False)
    r = s.client()
    w, rd = reader_with_open_snapshot(s)
    v = int(r.get("{k}:v"))
    r.delete("k", "{k}:v", "{k}:id")  # the readers and undo keys stay
    b = build(pydb(s, "k"), "NEW")
    b.execute("with recursive q(i) as (select 1 union all select i + 1 from q where i < 40) "
              "insert into u select i, 'other' from q")
    while int(r.get("{k}:v")) <= v + 1:
        b.execute("update t set v = v || '.' where id = 1")
    with pytest.raises(sqlite3.OperationalError):
        rows = rd.execute("select count(*), min(w) from u").fetchone()
        pytest.fail("the open snapshot read %r from another database" % (rows,))
    assert "snapshot too old" in rd.execute("select kvsql_error()").fetchone()[0]


def test_missing_undo_records_give_snapshot_too_old_never_other_data(servers):
    """Deleting T:undo:idx (or any undo key) under a reader with an open
    snapshot: its reads of pages changed since must fail, not read K."""
    s = servers(module=False)
    r = s.client()
    w, rd = reader_with_open_snapshot(s)
    w.execute("update u set w = 'changed'")  # the reader's registration makes it save undo records
    assert r.exists("{k}:undo:idx")
    r.delete("{k}:undo:idx")
    with pytest.raises(sqlite3.OperationalError):
        rows = rd.execute("select count(*), min(w) from u").fetchone()
        pytest.fail("the open snapshot read %r" % (rows,))
    assert "snapshot too old" in rd.execute("select kvsql_error()").fetchone()[0]


def test_with_its_undo_records_an_open_snapshot_reads_as_it_was(servers):
    """The control of the two tests above: the same reader, the same
    commit, nothing deleted."""
    s = servers(module=False)
    w, rd = reader_with_open_snapshot(s)
    w.execute("update u set w = 'changed'")
    assert rd.execute("select count(*), min(w) from u").fetchone() == (40, "%0400d" % 1)


def test_every_commit_names_its_version_and_replicas_get_the_same_id(servers):
    m = servers()
    rep = attach_replica(servers, m)
    r = m.client()
    db = pydb(m, "k")
    db.execute("create table t(x)")
    first = r.get("{k}:id")
    sql(r, "k", "insert into t values (1)")  # the module
    second = r.get("{k}:id")
    db.execute("insert into t values (2)")  # the library
    third = r.get("{k}:id")
    ids = [first, second, third]
    assert [int(IDENT.match(i).group(1)) for i in ids] == [1, 2, 3] and len(set(ids)) == 3
    wait_for(lambda: rep.client().get("{k}:id") == third, what="the replica to get the id")
    assert rep.client().get("{k}:v") == b"3"


def test_a_database_written_by_older_code_without_an_id_is_read_and_written(servers):
    """No T:id (or one naming another version: an older writer's INCR):
    the client trusts no cache across begins, reads and writes as usual,
    and its next commit names the version."""
    s = servers(module=False)
    r = s.client()
    db = build(pydb(s, "k"), "x")
    r.delete("{k}:id")
    assert db.execute("select * from t order by id").fetchall() == [(1, "x-1"), (2, "x-2")]
    r.set("{k}:id", b"1:0123456789abcdef")  # names an older version: ignored
    other = pydb(s, "k")
    assert other.execute("select count(*) from t").fetchone()[0] == 2
    db.execute("update t set v = 'y' where id = 1")
    assert IDENT.match(r.get("{k}:id")).group(1) == r.get("{k}:v")
    assert other.execute("select v from t where id = 1").fetchone()[0] == "y"
