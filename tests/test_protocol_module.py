"""test_protocol_module.py - the module's side of the library protocol
(docs/FORMAT.md, "The protocol of the redis VFS").

Library clients are simulated with plain Redis commands, exactly as
FORMAT.md describes them: a lease is `SET T:lease <token> PX ms`, a reader
is `ZADD T:readers <lapse ms> <snapshot>:<token>` in a script that does
not replicate it. Every server is a real
redis-server with the module (fixture `servers`, conftest.py).
"""
import glob
import os
import re

import pytest
import redis

from harness import attach_replica, monitored_commands, query, sql

DB = "db"
T = "{db}"  # the auxiliary key prefix of "db" (no hash tag of its own)


def version(r, t=T):
    v = r.get(t + ":v")
    return int(v) if v is not None else 0


def make_table(r, rows=50):
    sql(r, DB, "create table t(id integer primary key, v text)")
    sql(r, DB, "with recursive s(x) as (select 1 union all select x + 1 from s where x < ?)"
               " insert into t select x, 'row ' || x from s", rows)


def redis_now_ms(r):
    sec, usec = r.time()
    return sec * 1000 + usec // 1000


# As a library client registers: in a script, not replicated.
REGISTER_READER = """
redis.set_repl(redis.REPL_NONE)
return redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
"""


def add_reader(r, snapshot, token="tok", lapse_ms=10000):
    r.eval(REGISTER_READER, 1, T + ":readers", redis_now_ms(r) + lapse_ms, "%d:%s" % (snapshot, token))


def undo_field(page, ver):
    return ("%08x:%016x" % (page, ver)).encode()


# ---- the version ----------------------------------------------------------

def test_version_increments_once_per_write_call(r):
    sql(r, DB, "create table t(a)")
    assert version(r) == 1
    sql(r, DB, "insert into t values (1); insert into t values (2); insert into t values (3)")
    assert version(r) == 2
    sql(r, DB, "begin; insert into t values (4); commit; insert into t values (5)")
    assert version(r) == 3


def test_read_only_calls_leave_the_version(r):
    sql(r, DB, "create table t(a); insert into t values (1)")
    before = version(r)
    query(r, DB, "select * from t")
    sql(r, DB, "select count(*) from t")
    assert version(r) == before


def test_failed_calls_leave_the_version(r):
    sql(r, DB, "create table t(a unique); insert into t values (1)")
    before = version(r)
    with pytest.raises(redis.ResponseError):
        sql(r, DB, "insert into t values (2); insert into t values (1)")
    with pytest.raises(redis.ResponseError):
        sql(r, DB, "insert into nowhere values (1)")
    assert version(r) == before


def test_version_key_of_a_tagged_key_is_the_key_itself(r):
    sql(r, "{shop}orders", "create table t(a)")
    assert r.get("{shop}orders:v") == b"1"
    assert not r.exists("{{shop}orders}:v")


def test_identity_names_each_version_and_loses_a_ttl_as_set_does(servers):
    """T:id is written in place while its length stays (protocol.c
    set_ident): its value names each new version, across a change of the
    version's digits, and a time to live on it goes, as the SET replicas
    run makes it go there."""
    master = servers()
    m = master.client()
    rep = attach_replica(servers, master).client()
    sql(m, DB, "create table t(a)")
    seen = set()
    for i in range(12):  # versions 2..13: from one digit to two
        sql(m, DB, "insert into t values (?)", i)
        ident = m.get(T + ":id").decode()
        assert re.fullmatch(r"%d:[0-9a-f]{16}" % version(m), ident), ident
        seen.add(ident)
    assert len(seen) == 12
    m.expire(T + ":id", 1000)
    sql(m, DB, "insert into t values (99)")
    assert m.ttl(T + ":id") == -1
    assert m.execute_command("WAIT", 1, 5000) == 1
    assert rep.get(T + ":id") == m.get(T + ":id") and rep.ttl(T + ":id") == -1


def test_replica_has_the_same_version(servers):
    master = servers()
    m = master.client()
    rep = attach_replica(servers, master).client()
    make_table(m)
    sql(m, DB, "update t set v = 'x' where id < 10")
    assert m.execute_command("WAIT", 1, 5000) == 1
    assert rep.get(T + ":v") == m.get(T + ":v") == b"3"


# ---- what replicas and the AOF see ----------------------------------------

def test_replica_gets_hset_and_incr_in_one_multi_exec(servers):
    master = servers()
    m = master.client()
    rep = attach_replica(servers, master).client()
    make_table(m)
    m.execute_command("WAIT", 1, 5000)
    seen = monitored_commands(rep, lambda: sql(m, DB, "insert into t values (1000, 'new')"), "EXEC")
    writes = [c for c in seen if not c.startswith(("PING", "REPLCONF"))]
    assert [c.split()[0] for c in writes] == ["MULTI", "HSET", "INCR", "SET", "EXEC"], writes
    assert writes[1].startswith("HSET db ") and writes[2] == "INCR {db}:v"
    assert re.fullmatch(r"SET \{db\}:id %d:[0-9a-f]{16}" % version(m), writes[3]), writes[3]  # the identity


def test_replica_never_gets_readers_or_undo_keys(servers):
    master = servers()
    m = master.client()
    rep = attach_replica(servers, master).client()
    make_table(m)
    add_reader(m, version(m))
    m.execute_command("WAIT", 1, 5000)
    seen = monitored_commands(rep, lambda: sql(m, DB, "update t set v = 'changed'"), "EXEC")
    assert m.hlen(T + ":undo") > 0  # records were saved on the master
    assert any(c.startswith("HSET db ") for c in seen), seen
    assert not any(":readers" in c or ":undo" in c for c in seen), seen
    assert rep.exists(T + ":undo", T + ":undo:idx", T + ":undo:ver", T + ":readers") == 0


def test_aof_holds_pages_and_version_never_readers_or_undo(servers):
    s = servers(args=["--appendonly", "yes", "--appendfsync", "always"])
    r = s.client()
    make_table(r)
    add_reader(r, version(r))
    sql(r, DB, "update t set v = 'changed'")
    assert r.hlen(T + ":undo") > 0
    aof = b"".join(open(p, "rb").read() for p in glob.glob(os.path.join(s.dir, "appendonlydir", "*.aof")))
    assert b"HSET" in aof and b"{db}:v" in aof and b"INCR" in aof
    assert b":readers" not in aof and b":undo" not in aof


def test_a_version_key_that_is_not_a_number_fails_the_write_and_writes_nothing(r):
    make_table(r)
    before = r.hgetall(DB)
    r.set(T + ":v", "not a number")
    with pytest.raises(redis.ResponseError, match="cannot increment the version"):
        sql(r, DB, "insert into t values (1000, 'refused')")
    assert r.hgetall(DB) == before


# ---- the writer's lease ---------------------------------------------------

def test_write_is_refused_while_a_library_writer_holds_the_lease(r):
    make_table(r)
    before, v = r.hgetall(DB), version(r)
    r.config_set("kvsql.lease-wait-ms", 0)  # refused at once (the wait: test_library_lease.py)
    r.set(T + ":lease", "librarytoken", px=5000)
    with pytest.raises(redis.ResponseError, match="a library client holds the write lease"):
        sql(r, DB, "insert into t values (1000, 'refused')")
    assert r.hgetall(DB) == before
    assert version(r) == v


def test_reads_go_on_while_a_library_writer_holds_the_lease(r):
    make_table(r)
    r.set(T + ":lease", "librarytoken", px=5000)
    assert query(r, DB, "select count(*) from t")[1] == [50]


def test_refused_write_leaves_the_connection_consistent(r):
    make_table(r)
    r.config_set("kvsql.lease-wait-ms", 0)
    r.set(T + ":lease", "librarytoken", px=5000)
    with pytest.raises(redis.ResponseError, match="write lease"):
        sql(r, DB, "insert into t values (1000, 'refused')")
    r.delete(T + ":lease")
    assert query(r, DB, "select count(*) from t where id = 1000")[1] == [0]
    sql(r, DB, "insert into t values (1001, 'after')")
    assert query(r, DB, "select count(*) from t")[1] == [51]


# ---- undo records for library readers ------------------------------------

def test_no_undo_without_readers(r):
    make_table(r)
    sql(r, DB, "update t set v = 'changed'")
    assert r.exists(T + ":undo", T + ":undo:idx", T + ":undo:ver") == 0


def test_live_reader_gets_before_images_of_the_overwritten_pages(r):
    make_table(r, rows=300)
    snap = version(r)
    old = r.hgetall(DB)
    add_reader(r, snap)
    sql(r, DB, "update t set v = 'changed ' || id where id % 50 = 0")
    new = r.hgetall(DB)
    changed = sorted(int(f) for f in old if new.get(f) != old[f])
    assert changed  # the update changed pages
    undo = r.hgetall(T + ":undo")
    base = b"base:%016x" % (snap + 1)  # the identity the records were taken from (docs/FORMAT.md)
    assert re.fullmatch(rb"%d(:[0-9a-f]{16})?" % snap, undo.pop(base))
    assert sorted(undo) == [undo_field(p, snap + 1) for p in changed]
    for p in changed:
        assert undo[undo_field(p, snap + 1)] == old[str(p).encode()]
    idx = [f for f in r.zrange(T + ":undo:idx", 0, -1, withscores=True) if f[0] != base]
    assert idx == [(undo_field(p, snap + 1), 0.0) for p in changed]
    assert all(score == snap + 1 for _, score in r.zrange(T + ":undo:ver", 0, -1, withscores=True))


def test_pages_cut_off_are_saved_for_a_live_reader(r):
    make_table(r, rows=2000)
    snap, old = version(r), r.hgetall(DB)
    add_reader(r, snap)
    sql(r, DB, "delete from t; vacuum")
    cut = [p for p in range(len(old)) if not r.hexists(DB, p)]
    assert cut
    undo = r.hgetall(T + ":undo")
    for p in cut:
        assert undo[undo_field(p, snap + 1)] == old[str(p).encode()]


def test_an_undo_key_of_another_type_fails_the_write_and_writes_nothing(r):
    make_table(r)
    before, v = r.hgetall(DB), version(r)
    add_reader(r, v)
    r.set(T + ":undo", "not a hash")
    with pytest.raises(redis.ResponseError, match="undo' holds another type than a hash.*nothing was written"):
        sql(r, DB, "update t set v = 'refused'")
    assert r.hgetall(DB) == before and version(r) == v


def test_undo_of_versions_no_reader_needs_is_trimmed(r):
    make_table(r)
    first = version(r)
    add_reader(r, first, token="a")
    sql(r, DB, "update t set v = 'one'")       # records of version first+1
    r.zrem(T + ":readers", "%d:a" % first)      # reader a ends
    add_reader(r, version(r), token="b")        # reader b at first+1
    sql(r, DB, "update t set v = 'two'")       # records of first+2; first+1 is trimmed
    versions = {int(f.split(b":")[1], 16) for f in r.hkeys(T + ":undo")}
    assert versions == {first + 2}
    assert r.zcard(T + ":undo:idx") == r.zcard(T + ":undo:ver") == r.hlen(T + ":undo")


def test_lapsed_readers_are_dropped_with_their_undo(r):
    make_table(r)
    add_reader(r, version(r), token="a")
    sql(r, DB, "update t set v = 'one'")
    assert r.hlen(T + ":undo") > 0
    r.zadd(T + ":readers", {"%d:a" % (version(r) - 1): redis_now_ms(r) - 1}, xx=True)  # it lapsed
    sql(r, DB, "update t set v = 'two'")
    assert r.exists(T + ":readers", T + ":undo", T + ":undo:idx", T + ":undo:ver") == 0


# ---- library commits and the module's cached connection --------------------

LIBRARY_COMMIT = """
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return redis.call('INCR', KEYS[2])
"""


def test_a_library_commit_drops_the_cached_connection(r):
    sql(r, DB, "create table t(v); insert into t values ('before')")
    before = r.hgetall(DB)
    sql(r, DB, "update t set v = 'after'")
    assert query(r, DB, "select v from t")[1] == [b"after"]  # cached now
    args = [x for f, page in before.items() for x in (f, page)]
    r.eval(LIBRARY_COMMIT, 2, DB, T + ":v", *args)
    assert query(r, DB, "select v from t")[1] == [b"before"]


# ---- cost when no library client is around ---------------------------------

def test_replication_bytes_per_single_row_insert_stay_near_one_page(servers):
    master = servers()
    m = master.client()
    attach_replica(servers, master)
    sql(m, DB, "create table t(id integer primary key, v text)")
    n = 200
    start = m.info("replication")["master_repl_offset"]
    for i in range(n):
        sql(m, DB, "insert into t values (?, 'a short row')", i)
    per_insert = (m.info("replication")["master_repl_offset"] - start) / n
    print("repl bytes per insert: %.0f (%.3f pages)" % (per_insert, per_insert / 4096))
    assert per_insert <= 1.2 * 4096
