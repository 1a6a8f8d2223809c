"""test_changes.py - row changes into the stream T:changes (SQL.CHANGES).

Against real redis-server processes (conftest.py): the entries a commit
appends, none for rolled-back or failed calls, the stream on replicas and
after kill -9 with appendfsync always, replay of a random workload into a
native SQLite file (tools/changes_replay.py) giving the same rows, and a
consumer noticing entries trimmed by MAXLEN.
"""
import json
import os
import random
import sqlite3
import sys

import pytest
import redis

from harness import attach_replica, kill_9_while_writing, monitored_commands, query, sql

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import changes_replay  # noqa: E402

STREAM = "{db}:changes"


def entries(r, stream=STREAM):
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in r.xrange(stream)]


def rows_of(r, op=None):
    return [e for e in entries(r) if op is None or e["op"] == op]


def test_on_off_status_and_markers(r):
    assert r.execute_command("SQL.CHANGES", "db", "STATUS")[:2] == [b"capture", b"off"]
    assert r.execute_command("SQL.CHANGES", "db", "ON", "MAXLEN", "1000") == b"OK"
    st = r.execute_command("SQL.CHANGES", "db")
    assert st[1] == b"on" and st[3] == b"~ 1000" and st[5] == STREAM.encode()
    assert r.execute_command("SQL.CHANGES", "db", "OFF") == b"OK"
    assert [e["op"] for e in entries(r)] == ["on", "off"]
    sql(r, "db", "create table t(a)")
    assert len(entries(r)) == 2  # capture off: nothing appended
    with pytest.raises(redis.ResponseError, match="MAXLEN"):
        r.execute_command("SQL.CHANGES", "db", "ON", "MAXLEN", "-1")
    with pytest.raises(redis.ResponseError):
        r.execute_command("SQL.CHANGES", "db", "SIDEWAYS")


def test_insert_update_delete_entries_are_typed_and_carry_the_version(r):
    r.execute_command("SQL.CHANGES", "db", "ON")
    sql(r, "db", "create table t(id integer primary key, v text, b blob, x real)")
    sql(r, "db", "insert into t values (1, 'a', x'00ff', 1.5), (2, 'b', null, 100)")
    sql(r, "db", "update t set v = 'z' where id = 2; delete from t where id = 1")
    got = entries(r)
    assert [e["op"] for e in got] == ["on", "schema", "insert", "insert", "update", "delete"]
    assert got[1]["sql"] == "create table t(id integer primary key, v text, b blob, x real)"
    ins = got[2]
    assert ins["table"] == "t" and json.loads(ins["key"]) == [["integer", "1"]]
    assert json.loads(ins["new"]) == {"id": ["integer", "1"], "v": ["text", "a"], "b": ["blob", "00ff"],
                                      "x": ["real", "1.5"]}
    assert json.loads(got[3]["new"])["x"] == ["real", "100.0"]
    upd = got[4]
    assert json.loads(upd["old"])["v"] == ["text", "b"] and json.loads(upd["new"])["v"] == ["text", "z"]
    assert "new" not in got[5] and json.loads(got[5]["old"])["b"] == ["blob", "00ff"]
    versions = [int(e["version"]) for e in got]
    assert versions == [0, 1, 2, 2, 3, 3]  # one version per call: the transaction id
    assert int(r.get("{db}:v")) == 3


def test_without_rowid_tables_are_keyed_by_primary_key(r):
    r.execute_command("SQL.CHANGES", "db", "ON")
    sql(r, "db", "create table w(k text, n int, v, primary key (n, k)) without rowid;"
                 "insert into w values ('a', 1, 2); update w set n = 5")
    ins, upd = rows_of(r, "insert")[0], rows_of(r, "update")[0]
    assert json.loads(ins["key"]) == [["integer", "1"], ["text", "a"]]
    assert json.loads(upd["key"]) == [["integer", "1"], ["text", "a"]]  # the key the row had
    assert json.loads(upd["new"])["n"] == ["integer", "5"]


def test_tables_named_with_quotes_and_generated_columns(r):
    """Columns are read with PRAGMA main.table_xinfo('name') and table_list
    (change_entry.c): names that need quoting, generated columns left out."""
    r.execute_command("SQL.CHANGES", "db", "ON")
    sql(r, "db", "create table \"it's a\"\"t\"(id integer primary key, x real, g as (id * 2), s as (id + 1) stored);"
                 "create table \"o'k w\"(k text primary key, v) without rowid;"
                 "insert into \"it's a\"\"t\"(id, x) values (3, 2); insert into \"o'k w\" values ('a', 1)")
    t, w = rows_of(r, "insert")
    assert t["table"] == "it's a\"t" and json.loads(t["key"]) == [["integer", "3"]]
    assert json.loads(t["new"]) == {"id": ["integer", "3"], "x": ["real", "2.0"]}
    assert w["table"] == "o'k w" and json.loads(w["key"]) == [["text", "a"]]
    assert json.loads(w["new"]) == {"k": ["text", "a"], "v": ["integer", "1"]}


def test_rollbacks_and_failed_calls_leave_no_entry(r):
    r.execute_command("SQL.CHANGES", "db", "ON")
    sql(r, "db", "create table t(id integer primary key, v)")
    before = len(entries(r))
    sql(r, "db", "begin; insert into t values (1, 'x'); rollback")
    with pytest.raises(redis.ResponseError, match="CONSTRAINT"):
        sql(r, "db", "insert into t values (2, 'a'); insert into t values (2, 'dup')")
    with pytest.raises(redis.ResponseError, match="left open"):
        sql(r, "db", "begin; insert into t values (3, 'open')")
    assert len(entries(r)) == before
    sql(r, "db", "savepoint a; insert into t values (4, 'kept'); savepoint b;"
                 "insert into t values (5, 'gone'); update t set v = 'gone' where id = 4;"
                 "rollback to b; release a")
    sql(r, "db", "begin; insert into t values (6, 'in'); savepoint s; delete from t where id = 4;"
                 "rollback transaction to savepoint s; commit")
    got = entries(r)[before:]
    assert [(e["op"], json.loads(e["key"])[0][1]) for e in got] == [("insert", "4"), ("insert", "6")]
    assert query(r, "db", "select id from t order by id")[1:] == [[4], [6]]


def test_vacuum_and_create_table_as_are_refused_while_on(r):
    sql(r, "db", "create table t(a)")
    r.execute_command("SQL.CHANGES", "db", "ON")
    with pytest.raises(redis.ResponseError, match="VACUUM"):
        sql(r, "db", "vacuum")
    with pytest.raises(redis.ResponseError, match="AS SELECT"):
        sql(r, "db", "create table c as select * from t")
    assert [e["op"] for e in entries(r)] == ["on"]
    sql(r, "db", "create temp table tt(x); insert into tt values (1); pragma user_version = 7")
    assert [e["op"] for e in entries(r)] == ["on", "commit"]  # temp tables are not stored


def test_stream_of_another_type_fails_the_call_and_writes_nothing(r):
    sql(r, "db", "create table t(a)")
    r.execute_command("SQL.CHANGES", "db", "ON")
    r.delete(STREAM)
    r.set(STREAM, "x")
    v = r.get("{db}:v")
    with pytest.raises(redis.ResponseError, match="another type"):
        sql(r, "db", "insert into t values (1)")
    assert r.get("{db}:v") == v and query(r, "db", "select count(*) from t")[1] == [0]


def state(r):
    """What a failed write must leave as it was."""
    return r.get("{db}:v"), r.hgetall("db"), r.xlen(STREAM), r.dump("{db}:changes:cfg")


@pytest.mark.parametrize("maxlen,trim", [("abc", "~"), ("-5", "="), ("1e3", "~"), ("9" * 23, "="), ("007", "~"),
                                         (" 5", "~"), ("3", "LIMIT"), ("3", "~~")])
def test_a_configuration_that_is_not_one_fails_the_write_with_nothing_written(r, maxlen, trim):
    """XADD would refuse these after the pages were written: the write must
    fail first, STATUS must say so, and ON with a valid MAXLEN repairs it."""
    sql(r, "db", "create table t(a)")
    r.execute_command("SQL.CHANGES", "db", "ON", "MAXLEN", "100")
    r.hset("{db}:changes:cfg", mapping={"maxlen": maxlen, "trim": trim})
    before = state(r)
    with pytest.raises(redis.ResponseError, match="capture is on .* is not valid.*nothing was written"):
        sql(r, "db", "insert into t values (1)")
    assert state(r) == before and query(r, "db", "select count(*) from t")[1] == [0]
    with pytest.raises(redis.ResponseError, match="is not valid"):
        r.execute_command("SQL.CHANGES", "db", "STATUS")
    assert r.execute_command("SQL.CHANGES", "db", "ON", "MAXLEN", "=", "10") == b"OK"
    sql(r, "db", "insert into t values (1)")
    assert [e["op"] for e in entries(r)] == ["on", "insert"]


def test_a_configuration_of_another_type_fails_the_write_and_off_removes_it(r):
    sql(r, "db", "create table t(a)")
    r.set("{db}:changes:cfg", "on")
    before = state(r)
    with pytest.raises(redis.ResponseError, match="another type than a hash.*nothing was written"):
        sql(r, "db", "insert into t values (1)")
    assert state(r) == before and query(r, "db", "select count(*) from t")[1] == [0]
    r.delete("{db}:changes:cfg")
    r.hset("{db}:changes:cfg", "maxlen", "x")
    assert r.execute_command("SQL.CHANGES", "db", "OFF") == b"OK"  # its marker trims nothing
    assert [e["op"] for e in entries(r)] == ["off"] and not r.exists("{db}:changes:cfg")
    sql(r, "db", "insert into t values (1)")


MAX = 18446744073709551615


@pytest.mark.parametrize("last_seq,rows", [(MAX, 1), (MAX - 2, 3)])
def test_a_stream_out_of_ids_fails_the_write_with_nothing_written(r, last_seq, rows):
    """XADD's IDs end at MAX-MAX: a write with more entries than IDs left
    fails before anything is written, however many it would need."""
    sql(r, "db", "create table t(a)")
    r.execute_command("SQL.CHANGES", "db", "ON")
    r.xadd(STREAM, {"a": "b"}, id="%d-%d" % (MAX, last_seq))
    before = state(r)
    with pytest.raises(redis.ResponseError, match="no room for %d more entries.*nothing was written" % rows):
        sql(r, "db", "insert into t select value from json_each(?)", json.dumps(list(range(rows))))
    assert state(r) == before and query(r, "db", "select count(*) from t")[1] == [0]
    if rows > 1:  # two IDs are left: a write of two entries still fits
        sql(r, "db", "insert into t values (1), (2)")
        assert r.xlen(STREAM) == before[2] + 2
    with pytest.raises(redis.ResponseError, match="no room"):  # OFF's marker has no room either
        r.execute_command("SQL.CHANGES", "db", "OFF")
    assert r.exists("{db}:changes:cfg")


def maxed_stream(r, key):
    r.delete(key)
    r.xadd(key, {"a": "b"}, id="%d-%d" % (MAX, MAX))


# Ways another client sets the stream's last ID at the end after capture wrote to it.
SET_LAST_ID = {
    "xsetid": lambda r: r.execute_command("XSETID", STREAM, "%d-%d" % (MAX, MAX)),
    "xadd_with_id": lambda r: r.xadd(STREAM, {"a": "b"}, id="%d-%d" % (MAX, MAX)),
    "multi_exec": lambda r: r.pipeline(transaction=True).execute_command("XSETID", STREAM, "%d-%d" % (MAX, MAX))
                             .execute(),
    "script": lambda r: r.eval("return redis.call('XSETID', KEYS[1], ARGV[1])", 1, STREAM, "%d-%d" % (MAX, MAX)),
    "del_and_xadd": lambda r: maxed_stream(r, STREAM),
    "rename": lambda r: (maxed_stream(r, "{db}:other"), r.rename("{db}:other", STREAM)),
    "copy": lambda r: (maxed_stream(r, "{db}:other"), r.copy("{db}:other", STREAM, replace=True)),
    "restore": lambda r: (maxed_stream(r, "{db}:other"),
                          r.restore(STREAM, 0, r.dump("{db}:other"), replace=True)),
}


def test_the_streams_room_is_asked_again_after_another_write_sets_its_last_id(r):
    """Capture asks a stream's room (XINFO STREAM) once, then trusts it
    while only its own XADDs touch the stream (changes.c): every other way
    to set the last ID makes the next write ask again, and fail whole."""
    sql(r, "db", "create table t(a)")
    r.execute_command("SQL.CHANGES", "db", "ON")
    for name, set_last_id in SET_LAST_ID.items():
        sql(r, "db", "insert into t values (1)")
        sql(r, "db", "insert into t values (2)")  # the room known, not asked
        set_last_id(r)
        before = state(r)
        with pytest.raises(redis.ResponseError, match="no room"):
            sql(r, "db", "insert into t values (3)")
        assert state(r) == before, name
        r.delete(STREAM)  # a new stream has room
    sql(r, "db", "insert into t values (4)")
    r.select(1)  # the same name in another database is another stream
    sql(r, "db", "create table t(a)")
    r.execute_command("SQL.CHANGES", "db", "ON")
    sql(r, "db", "insert into t values (1)")
    r.select(0)
    r.execute_command("XSETID", STREAM, "%d-%d" % (MAX, MAX))
    with pytest.raises(redis.ResponseError, match="no room"):
        sql(r, "db", "insert into t values (5)")
    r.execute_command("FLUSHDB")
    r.select(1)
    sql(r, "db", "insert into t values (2)")
    r.execute_command("XSETID", STREAM, "%d-%d" % (MAX, MAX))
    with pytest.raises(redis.ResponseError, match="no room"):
        sql(r, "db", "insert into t values (3)")


# ---- replay ------------------------------------------------------------------

def table_rows(db):
    out = {}
    for (name,) in db.execute("select name from sqlite_schema where type = 'table' order by name"):
        wr = db.execute("select wr from pragma_table_list(?)", (name,)).fetchone()[0]
        cols = "*" if wr else "rowid, *"  # rowids too, where there are
        out[name] = sorted(db.execute('select %s from "%s"' % (cols, name)).fetchall(), key=repr)
    return out


def module_rows(r, key="db"):
    """The database's rows, read from an exported copy of its pages."""
    page = r.hget(key, 0)
    n = r.hlen(key)
    path = "/tmp/kvsql-changes-%d.db" % os.getpid()
    with open(path, "wb") as f:
        for i in range(n):
            f.write(r.hget(key, i) or bytes(len(page)))
    try:
        db = sqlite3.connect(path)
        return table_rows(db)
    finally:
        db.close()
        os.remove(path)


def replay_rows(r, tmp_path, key="db"):
    path = str(tmp_path / "copy.db")
    if os.path.exists(path):
        os.remove(path)
    changes_replay.replay(r, key, path)
    db = sqlite3.connect(path)
    try:
        return table_rows(db)
    finally:
        db.close()


def random_call(rnd, tables):
    """One SQL.EXEC text of a random workload: DML, DDL, rollbacks."""
    t = rnd.choice(tables)
    val = lambda: rnd.choice(["%d" % rnd.randint(-5, 50), "'s%d'" % rnd.randint(0, 9), "null",
                              "x'%02x'" % rnd.randint(0, 255), "%d.25" % rnd.randint(0, 9)])
    k = rnd.randint(1, 40)
    dml = rnd.choice([
        "insert or replace into %s(k, a, b) values (%d, %s, %s)" % (t, k, val(), val()),
        "update %s set a = %s where k %% 3 = %d" % (t, val(), rnd.randint(0, 2)),
        "delete from %s where k = %d" % (t, k),
        "insert into %s(k, a) select k + 100, a from %s where k < 5 and k + 100 not in (select k from %s)"
        % (t, t, t),
    ])
    return rnd.choice([
        dml,
        dml + "; " + dml,
        "begin; %s; rollback" % dml,
        "savepoint p; %s; rollback to p; %s; release p" % (dml, dml),
        "create index if not exists i_%s on %s(a)" % (t, t),
    ])


def test_replay_of_a_random_workload_gives_the_same_rows(r, tmp_path):
    r.execute_command("SQL.CHANGES", "db", "ON")
    rnd = random.Random(16)
    sql(r, "db", "create table t1(k integer primary key, a, b)")
    sql(r, "db", "create table t2(k int primary key, a, b) without rowid")
    sql(r, "db", "create table t3(k, a, b)")  # rowids without an INTEGER PRIMARY KEY
    tables = ["t1", "t2", "t3"]
    for i in range(400):
        if i == 150:
            sql(r, "db", "alter table t3 add column c default 'new'")
        if i == 250:
            sql(r, "db", "create table t4(k integer primary key, a, b); drop table t1")
            tables = ["t2", "t3", "t4"]
        try:
            sql(r, "db", random_call(rnd, tables))
        except redis.ResponseError:
            pass  # a failed call (a constraint): it must leave no entry
    assert replay_rows(r, tmp_path) == module_rows(r)


def test_maxlen_trims_and_the_replay_notices(r, tmp_path):
    r.execute_command("SQL.CHANGES", "db", "ON", "MAXLEN", "=", "50")
    sql(r, "db", "create table t(a)")
    for i in range(60):
        sql(r, "db", "insert into t values (?)", i)
    assert r.xlen(STREAM) == 50
    with pytest.raises(changes_replay.Gap, match="trimmed"):
        replay_rows(r, tmp_path)


def test_replay_notices_capture_turned_off_and_on(r, tmp_path):
    r.execute_command("SQL.CHANGES", "db", "ON")
    sql(r, "db", "create table t(a)")
    r.execute_command("SQL.CHANGES", "db", "OFF")
    sql(r, "db", "insert into t values (1)")
    r.execute_command("SQL.CHANGES", "db", "ON")
    sql(r, "db", "insert into t values (2)")
    with pytest.raises(changes_replay.Gap, match="off"):
        replay_rows(r, tmp_path)


# ---- replicas, AOF, crashes -----------------------------------------------------

def test_replicas_get_the_stream_with_the_pages_in_one_multi_exec(servers):
    master = servers()
    m = master.client()
    rep = attach_replica(servers, master, module=False)
    m.execute_command("SQL.CHANGES", "db", "ON", "MAXLEN", "100")
    sql(m, "db", "create table t(a)")
    m.execute_command("WAIT", 1, 5000)
    seen = monitored_commands(rep.client(), lambda: sql(m, "db", "insert into t values (random())"), "EXEC")
    names = [c.split()[0] for c in seen if c.split()[0] != "PING"]
    assert names[0] == "MULTI" and names[-1] == "EXEC"
    assert names[1:-1] == ["HSET", "INCR", "SET", "XADD"], seen
    for i in range(30):
        sql(m, "db", "insert into t values (?)", i)
    m.execute_command("WAIT", 1, 5000)
    assert m.xrange(STREAM) == rep.client().xrange(STREAM)
    assert rep.client().hgetall("{db}:changes:cfg") == {b"maxlen": b"100", b"trim": b"~"}


def test_kill_9_with_appendfsync_always_keeps_rows_and_entries_together(servers, tmp_path):
    s = servers(args=["--appendonly", "yes", "--appendfsync", "always"])
    c = s.client()
    c.execute_command("SQL.CHANGES", "db", "ON")
    sql(c, "db", "create table t(id integer primary key)")
    acked = kill_9_while_writing(s, "db", 200, what="200 acknowledged writes")
    s.start()
    c = s.client()
    ids = {row[0] for row in query(c, "db", "select id from t")[1:]}
    assert set(acked) <= ids
    inserted = {int(json.loads(e["key"])[0][1]) for e in rows_of(c, "insert")}
    assert inserted == ids  # never a change without its rows, nor rows without their change
    assert replay_rows(c, tmp_path) == module_rows(c)
    # the server still captures after the restart
    sql(c, "db", "delete from t where id = 1")
    assert rows_of(c)[-1]["op"] == "delete"


def test_promoted_replica_continues_the_stream(servers, tmp_path):
    master = servers()
    m = master.client()
    rep = attach_replica(servers, master)
    m.execute_command("SQL.CHANGES", "db", "ON")
    sql(m, "db", "create table t(a)")
    for i in range(20):
        sql(m, "db", "insert into t values (?)", i)
    m.execute_command("WAIT", 1, 5000)
    master.kill()
    r = rep.client()
    r.replicaof("no", "one")
    sql(r, "db", "update t set a = -a where a % 2 = 0")
    assert replay_rows(r, tmp_path) == module_rows(r)


def test_big_values_captured_land_once_and_the_server_lives(r):
    """A value of 1 MiB or more stops a main-thread call at its next check
    (budget.c); a check that refused SQLite memory inside the preupdate
    hook crashed redis-server in the insert that called it. Each insert
    lands once, with its entry."""
    r.execute_command("SQL.CHANGES", "db", "ON")
    sql(r, "db", "create table t(id integer primary key, b)")
    assert sql(r, "db", "insert into t(b) values (zeroblob(2000000))") == 1
    assert sql(r, "db", "insert into t(b) values (randomblob(1500000))") == 1
    assert sql(r, "db", "insert into t(b) select zeroblob(600000) from (select 1 union all select 2)") == 2
    assert query(r, "db", "select count(*), sum(length(b)) from t")[1] == [4, 4700000]
    ops = [e[1][b"op"] for e in r.xrange("{db}:changes")]
    assert ops.count(b"insert") == 4
    assert r.ping()
