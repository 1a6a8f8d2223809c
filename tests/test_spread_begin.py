"""test_spread_begin.py - the warm begin of a spread database through
libkvsql.so: a read transaction that finds nothing changed writes nothing
on the server, and a reader's registration still protects its snapshot
from collection.

store_spread.c ("warm begins") sends the warm begin script while the
reader's registration at the cached identity is fresh (renewed less than
lease_ms/4 ago on this connection) and T:log was renewed less than a
minute ago; the script then only reads (docs/FORMAT.md, "The spread
layout"). Against real redis-server processes (harness.py), with INFO
commandstats counting the writing commands the begin scripts run (TIME,
ZADD, PEXPIRE, LPUSH): warm point selects run none of them and still take
one round trip; a stale registration is renewed by the next begin; after
another client's commit the warm script moves the registration to the new
version; collection keeps the copies of a reader
that began warm, and a reader whose registration vanished behind a warm
begin gets the snapshot's rows or "snapshot too old", never other data.
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

ROWS = 2000  # about 40 pages of 4 KiB: several runs


def readers(key):
    return "{%s}:readers" % key


def stats(db):
    return json.loads(db.execute("select kvsql_stats()").fetchone()[0])


def calls(r, cmd):
    return r.info("commandstats").get("cmdstat_" + cmd, {}).get("calls", 0)


def server_writes(r):
    """Commands the begin script runs to register the reader and keep T:log."""
    return sum(calls(r, c) for c in ("zadd", "time", "pexpire", "lpush"))


def fill(s, key, **params):
    db = pydb(s, key, layout="spread", **params)
    db.execute("create table t(id integer primary key, v integer, pad text)")
    db.execute("begin")
    for i in range(ROWS):
        db.execute("insert into t values (?, 1, ?)", (i, "p" * 60))
    db.execute("commit")
    return db


def select(db, i):
    return db.execute("select v from t where id = ?", (i,)).fetchone()[0]


def total(db):
    return db.execute("select sum(v) from t").fetchone()[0]


def small_cache(s, key, **params):
    """A reader whose scans read from Redis: 4 pages kept by the library,
    10 by SQLite."""
    db = pydb(s, key, layout="spread", cache_kb=16, **params)
    db.execute("pragma cache_size = 10")
    return db


def test_warm_point_selects_write_nothing_and_take_one_round_trip(servers):
    s = servers(module=False)
    fill(s, "w").close()
    r = s.client()
    db = pydb(s, "w", layout="spread")
    assert total(db) == ROWS  # a begin script: registered now, every page cached
    before, trips = server_writes(r), stats(db)["round_trips"]
    for i in range(20):
        assert select(db, i) == 1
    assert server_writes(r) == before  # no TIME, ZADD or PEXPIRE: the warm begin found nothing changed
    assert stats(db)["round_trips"] - trips == 20
    assert r.zcard(readers("w")) == 1  # still registered, once


def test_a_stale_registration_is_renewed_by_the_next_begin(servers):
    s = servers(module=False)
    fill(s, "st").close()
    r = s.client()
    db = pydb(s, "st", layout="spread", lease_ms=1000)
    assert total(db) == ROWS
    score = r.zrange(readers("st"), 0, -1, withscores=True)[0][1]
    time.sleep(0.3)  # at least this long: more than lease_ms/4 since the registration
    before = calls(r, "zadd")
    assert select(db, 1) == 1
    assert calls(r, "zadd") == before + 1  # the begin script renewed it
    assert r.zrange(readers("st"), 0, -1, withscores=True)[0][1] > score


def test_after_another_commit_the_warm_begin_moves_the_registration_and_is_warm_again(servers):
    s = servers(module=False)
    writer = fill(s, "mv")
    r = s.client()
    db = pydb(s, "mv", layout="spread")
    assert total(db) == ROWS
    assert select(db, 2) == 1  # warm
    token = r.zrange(readers("mv"), 0, -1)[0].decode().split(":", 1)[1]
    for k in range(5):
        writer.execute("update t set v = ? where id = 7", (10 + k,))
        v = r.get("{mv}:v").decode()
        assert select(db, 7) == 10 + k  # the warm script went on as begin: the commit is seen
        ours = [m.decode() for m in r.zrange(readers("mv"), 0, -1) if m.decode().endswith(":" + token)]
        assert ours == [v + ":" + token]  # moved to the new snapshot (the old one dropped)
        before = server_writes(r)
        assert select(db, 7) == 10 + k
        assert server_writes(r) == before  # and the next begin is warm again


def test_collection_keeps_the_copies_of_a_reader_that_began_warm(servers):
    s = servers(module=False)
    writer = fill(s, "g")
    r = s.client()
    reader = small_cache(s, "g")
    assert total(reader) == ROWS  # a begin script registered the reader
    before = server_writes(r)
    reader.execute("begin")
    assert select(reader, 0) == 1
    assert server_writes(r) == before  # that begin was warm: its registration is the earlier one
    for _ in range(5):
        writer.execute("update t set v = v + 1")
        writer.execute("select kvsql_gc()").fetchone()
    assert r.zcard("{g}:gc") > 0  # what the reader may need is kept
    assert total(reader) == ROWS  # every page read from Redis as of the old snapshot
    assert reader.execute("pragma integrity_check").fetchone()[0] == "ok"
    reader.execute("commit")
    assert total(reader) == 6 * ROWS


def test_a_vanished_registration_behind_a_warm_begin_never_mixes_snapshots(servers):
    """The registration is removed by hand (as a lapse would) and the warm
    begin does not notice; the writer then commits twice and collects: the
    reader's reads must fail or give its snapshot, never mix."""
    s = servers(module=False)
    writer = fill(s, "vz")
    r = s.client()
    reader = small_cache(s, "vz")
    assert total(reader) == ROWS
    r.delete(readers("vz"))
    before = server_writes(r)
    reader.execute("begin")
    assert select(reader, 0) == 1
    assert server_writes(r) == before  # the begin was warm: nothing registered again
    writer.execute("update t set v = v + 1")
    writer.execute("update t set v = v + 1")
    writer.execute("select kvsql_gc()").fetchone()
    assert r.zcard("{vz}:gc") == 0  # no reader registered: every superseded copy went
    try:
        got = reader.execute("select v, count(*) from t group by v").fetchall()
    except sqlite3.OperationalError as e:
        assert "disk I/O error" in str(e), e  # SQLITE_IOERR_READ, "snapshot too old" (vfs.c)
        assert "snapshot too old" in reader.execute("select kvsql_error()").fetchone()[0]
    else:
        assert got == [(1, ROWS)], got  # the snapshot's pages, all of them
    if reader.in_transaction:
        reader.execute("rollback")
    assert total(reader) == 3 * ROWS
