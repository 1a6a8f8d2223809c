"""test_library_damage.py - damaged auxiliary keys never make a commit land half (issue 23, items 3; issue 22, item 9).

Every library script checks everything it will touch before its first
write (src/client/hash/scripts.c): an auxiliary key of another type, a version
key that is not a number, capture's configuration, the changes stream's
IDs. A commit refused so is told so and leaves the pages, T:v and T:id as
they were; once the key is repaired the next commit lands. The module's
writes (src/module/store/protocol.c) check the identity key the same way. A
reader registration forged to lapse in the far future is dropped where
the readers are read, by the library's commits and the module's writes
alike, so it cannot keep undo records forever. Each test starts its own
redis-server (harness.py).
"""
import os
import sqlite3

import pytest
import redis

from harness import sql
from libhelp import built, pydb

pytestmark = [pytest.mark.skipif(not built(), reason="libkvsql.so is not built"),
              pytest.mark.skipif(bool(os.environ.get("KVSQL_PRELOAD")),
                                 reason="a sanitized library loads only into a preloaded process")]

WRONG = {
    "string": lambda r, k: r.set(k, "junk"),
    "list": lambda r, k: r.rpush(k, "junk"),
    "hash": lambda r, k: r.hset(k, "a", "b"),
    "zset": lambda r, k: r.zadd(k, {"junk": 1}),
}
OWN = {"{k}:readers": "zset", "{k}:undo": "hash", "{k}:undo:idx": "zset", "{k}:undo:ver": "zset",
       "{k}:log": "list", "{k}:id": "string", "{k}:changes:cfg": "hash"}
CASES = [(k, t) for k in sorted(OWN) for t in sorted(WRONG) if t != OWN[k]]


def writer_and_reader(s, **params):
    """A database with a reader holding a snapshot (so commits save undo
    records) and T:log (a library begin made it); the writer w."""
    w = pydb(s, "k", **params)
    w.execute("create table t(x)")
    w.execute("insert into t values (1)")
    rd = pydb(s, "k")
    rd.execute("begin")
    rd.execute("select count(*) from t").fetchall()
    return w, rd


def state(s):
    r = s.client()
    return r.dump("{k}:v"), r.dump("{k}:id"), r.hgetall("k"), r.dump("{k}:changes")


def refused_commit(s, w, damage, statement):
    """Runs statement in a transaction, damages between it and COMMIT;
    returns the error COMMIT raised (None when it committed) and
    kvsql_error() (with capture on, that of SQLite's rollback after it)."""
    w.execute("begin immediate")
    w.execute(statement)
    damage(s.client())
    before = state(s)
    try:
        w.execute("commit")
    except sqlite3.Error as e:
        why = w.execute("select kvsql_error()").fetchone()[0]
        if w.in_transaction:
            w.execute("rollback")
        assert state(s) == before, "the refused commit wrote something"
        return "%s | %s" % (e, why)
    return None


@pytest.mark.parametrize("key,kind", CASES)
def test_a_commit_refuses_an_auxiliary_key_of_another_type_before_writing(servers, key, kind):
    s = servers(module=False)
    r = s.client()
    w, rd = writer_and_reader(s)
    if key == "{k}:changes:cfg":
        r.hset(key, "maxlen", "0")  # capture on: it must be a hash
    err = refused_commit(s, w, lambda c: (c.delete(key), WRONG[kind](c, key)), "insert into t values (2)")
    assert err, "the commit landed"
    if key != "{k}:changes:cfg":
        assert key in err and "nothing was written" in err, err
    r.delete(key)
    w.execute("insert into t values (3)")
    assert pydb(s, "k").execute("select count(*) from t").fetchone()[0] == 2


def test_a_version_key_that_is_not_a_number_refuses_the_commit(servers):
    s = servers(module=False)
    w, rd = writer_and_reader(s)
    err = refused_commit(s, w, lambda c: c.set("{k}:v", "abc"), "insert into t values (2)")
    assert err and "not a version number" in err, err


def test_a_staged_commit_refuses_a_damaged_log_before_publishing(servers):
    s = servers(module=False)
    w, rd = writer_and_reader(s, stage_kb=8)
    stmt = "with recursive q(i) as (select 1 union all select i + 1 from q where i < 40) " \
           "insert into t select randomblob(3000) from q"
    err = refused_commit(s, w, lambda c: (c.delete("{k}:log"), c.set("{k}:log", "junk")), stmt)
    assert err and "{k}:log" in err, err


@pytest.mark.parametrize("field,value", [("maxlen", "abc"), ("maxlen", "-5"), ("maxlen", "1e3"),
                                         ("maxlen", "12345678901234567890123"), ("maxlen", "007"),
                                         ("trim", "x")])
def test_capture_with_a_bad_configuration_refuses_the_commit(servers, field, value):
    s = servers(module=False)
    r = s.client()
    r.hset("{k}:changes:cfg", mapping={"maxlen": "0", "trim": "~"})  # capture on
    w, rd = writer_and_reader(s)
    err = refused_commit(s, w, lambda c: c.hset("{k}:changes:cfg", field, value), "insert into t values (2)")
    assert err, "the commit landed"
    r.hset("{k}:changes:cfg", field, "10" if field == "maxlen" else "=")
    w.execute("insert into t values (3)")
    assert r.xlen("{k}:changes") >= 1


def test_capture_into_a_stream_whose_ids_ran_out_refuses_the_commit(servers):
    s = servers(module=False)
    r = s.client()
    r.hset("{k}:changes:cfg", "maxlen", "0")
    w, rd = writer_and_reader(s)
    err = refused_commit(s, w, lambda c: c.xadd("{k}:changes", {"a": "b"}, id="18446744073709551615-18446744073709551615"),
                         "insert into t values (2)")
    assert err, "the commit landed"


def test_a_module_write_refuses_an_identity_key_of_another_type(servers):
    s = servers()
    r = s.client()
    sql(r, "k", "create table t(x)")
    r.delete("{k}:id")
    r.rpush("{k}:id", "junk")
    before = (r.get("{k}:v"), r.hgetall("k"))
    with pytest.raises(redis.ResponseError, match="nothing was written"):
        sql(r, "k", "insert into t values (1)")
    assert (r.get("{k}:v"), r.hgetall("k")) == before


@pytest.mark.parametrize("writer", ["library", "module"])
def test_a_forged_registration_that_never_lapses_keeps_no_undo_records(servers, writer):
    """ZADD T:readers 1e18 ...: a registration claiming to lapse in 30
    million years. Commits drop it as forged (no client registers further
    ahead than the longest lease, KVSQL_LEASE_MAX_MS), so with no real
    reader left they keep no undo records."""
    s = servers(module=writer == "module")
    r = s.client()
    if writer == "module":  # no library client around: its own registration would keep undo records
        sql(r, "k", "create table t(x)")
        r.lpush("{k}:log", "from:1")  # as a library begin leaves it
    else:
        w = pydb(s, "k")
        w.execute("create table t(x)")
    r.zadd("{k}:readers", {"0:forged": 1e18})
    for i in range(3):
        if writer == "module":
            sql(r, "k", "insert into t values (?)", i)
        else:
            w.execute("insert into t values (?)", (i,))
    assert r.zscore("{k}:readers", "0:forged") is None
    assert not r.exists("{k}:undo", "{k}:undo:idx", "{k}:undo:ver")
