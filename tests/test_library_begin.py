"""test_library_begin.py - the warm begin of libkvsql.so (the `redis` VFS):
a read transaction that finds nothing changed writes nothing on the server.

store_redis.c ("warm begins") sends the warm begin script while the
reader's registration at the cached version is fresh (renewed less than
lease_ms/4 ago on this connection); the script then only reads T:v, HLEN
and T:changes:cfg. Against real redis-server processes (harness.py), with
INFO commandstats counting the commands the scripts ran: warm point
selects run no TIME and no ZADD and still take 1 round trip; a stale
registration is renewed by the next begin; after another client's commit
the warm script moves the registration to the new version in the same
round trip and the reader sees the commit; a reader whose registration
vanished behind a warm begin, or lapsed while it idled, never reads pages
of two snapshots or zeros (an error is allowed, wrong data never).
"""
import json
import os
import sqlite3
import time

import pytest

from libhelp import built, pydb

pytestmark = [pytest.mark.skipif(not built(), reason="libkvsql.so is not built"),
              pytest.mark.skipif(bool(os.environ.get("KVSQL_PRELOAD")),
                                 reason="a sanitized library loads only into a preloaded process")]

READERS = "{db}:readers"


def stats(db):
    return json.loads(db.execute("select kvsql_stats()").fetchone()[0])


def calls(r, cmd):
    return r.info("commandstats").get("cmdstat_" + cmd, {}).get("calls", 0)


def server_writes(r):
    """Commands a begin script runs to register the reader."""
    return calls(r, "zadd") + calls(r, "time")


def select(db, i):
    return db.execute("select v from t where id = ?", (i,)).fetchall()


def make_table(db, rows=200, width=32):
    db.execute("create table t(id integer primary key, v text)")
    db.execute("with recursive c(x) as (select 1 union all select x + 1 from c where x < %d) "
               "insert into t select x, printf('%%0%dd', 0) from c" % (rows, width))


def test_warm_point_selects_write_nothing_and_take_one_round_trip(servers):
    s = servers(module=False)
    r = s.client()
    db = pydb(s, "db")
    make_table(db)
    select(db, 1)  # a begin script: registered now
    before, trips = server_writes(r), stats(db)["round_trips"]
    for i in range(1, 21):
        assert select(db, i) == [("0" * 32,)]
    assert server_writes(r) == before  # no TIME, no ZADD: the warm begin found nothing changed
    assert stats(db)["round_trips"] - trips == 20
    token = r.zrange(READERS, 0, -1)
    assert len(token) == 1  # still registered, once


def test_a_stale_registration_is_renewed_by_the_next_begin(servers):
    s = servers(module=False)
    r = s.client()
    db = pydb(s, "db", lease_ms=1000)
    make_table(db)
    select(db, 1)
    score = r.zrange(READERS, 0, -1, withscores=True)[0][1]
    time.sleep(0.3)  # more than lease_ms/4 since the registration
    before = calls(r, "zadd")
    select(db, 2)
    assert calls(r, "zadd") == before + 1  # the begin script renewed it
    assert r.zrange(READERS, 0, -1, withscores=True)[0][1] > score


def test_after_another_commit_the_warm_begin_moves_the_registration_in_one_round_trip(servers):
    s = servers(module=False)
    r = s.client()
    db, other = pydb(s, "db"), pydb(s, "db")
    make_table(db)
    select(db, 1)
    select(db, 2)  # warm
    token = r.zrange(READERS, 0, -1)[0].decode().split(":")[1]
    for k in range(5):
        other.execute("update t set v = ? where id = 7", ("new%d" % k,))
        v = r.get("{db}:v").decode()
        trips = stats(db)["round_trips"]
        assert select(db, 7) == [("new%d" % k,)]
        assert stats(db)["round_trips"] - trips == 1
        ours = [m.decode() for m in r.zrange(READERS, 0, -1) if m.decode().endswith(":" + token)]
        assert ours == [v + ":" + token]  # moved to the new snapshot (the old one dropped)
        before = server_writes(r)
        assert select(db, 7) == [("new%d" % k,)]
        assert server_writes(r) == before  # and the next begin is warm again


def test_a_vanished_registration_behind_a_warm_begin_never_mixes_snapshots(servers):
    """The registration is removed by hand (as a lapse would), the warm
    begin does not notice; others then commit twice, and the undo records
    go with the last reader: the reader's reads must fail, not mix."""
    s = servers(module=False)
    r = s.client()
    other = pydb(s, "db")
    make_table(other, rows=2000, width=100)  # about 60 pages
    db = pydb(s, "db", cache_kb=16)  # 4 pages kept by the VFS,
    db.execute("pragma cache_size = 10")  # 10 by SQLite: the scan reads from Redis
    assert db.execute("select count(*) from t").fetchall() == [(2000,)]
    select(db, 1)
    r.delete(READERS)
    before = server_writes(r)
    db.execute("begin")
    assert select(db, 1) == [("0" * 100,)]
    assert server_writes(r) == before  # the begin was warm: nothing registered again
    other.execute("update t set v = printf('%0100d', 1)")
    other.execute("update t set v = printf('%0100d', 2)")
    assert not r.exists("{db}:undo")  # no reader registered: the commits kept no undo
    try:
        got = db.execute("select v, count(*) from t group by v").fetchall()
    except sqlite3.OperationalError as e:
        assert "disk I/O error" in str(e), e  # SQLITE_IOERR_READ, "snapshot too old" (vfs.c)
    else:
        assert got == [("0" * 100, 2000)], got  # the snapshot's pages, all of them
    if db.in_transaction:
        db.execute("rollback")
    assert select(db, 1) == [("%0100d" % 2,)]


def test_a_reader_idle_past_its_lease_gets_an_error_not_wrong_data(servers):
    """docs/LIBRARY.md's "a reader idle past lease_ms while others
    committed": the read script answers 'old' and the store says
    SQLITE_IOERR_SHORT_READ, which SQLite would take for a page of zeros;
    the VFS (src/vfs.c) passes it as SQLITE_IOERR_READ."""
    s = servers(module=False)
    r = s.client()
    other = pydb(s, "db")
    make_table(other, rows=2000, width=100)
    db = pydb(s, "db", cache_kb=16, lease_ms=300)
    db.execute("pragma cache_size = 10")
    db.execute("begin")
    assert select(db, 1) == [("0" * 100,)]
    time.sleep(0.5)  # the registration lapses
    other.execute("update t set v = printf('%0100d', 1)")
    other.execute("update t set v = printf('%0100d', 2)")  # this one drops the lapsed member and the undo
    assert not r.exists("{db}:undo")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        db.execute("select v, count(*) from t group by v").fetchall()
    assert "snapshot too old" in db.execute("select kvsql_error()").fetchone()[0]
    if db.in_transaction:
        db.execute("rollback")
    assert select(db, 1) == [("%0100d" % 2,)]
