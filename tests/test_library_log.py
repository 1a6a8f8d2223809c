"""test_library_log.py - the changelog T:log of the redis VFS (issue 12).

A library client keeps its page cache across other clients' commits: its
begin sends the version it cached and learns from T:log which pages
changed since (docs/FORMAT.md, "The protocol of the redis VFS"). These
tests check what a reader sees after commits by another library client
and by the module, in round trips counted exactly by kvsql_stats(), and
that the module writes the log only while a library client keeps it.
Each test starts its own redis-server (harness.py); no timed assertion.
"""
import json
import os

import pytest

SERIES = "with recursive s(value) as (select %d union all select value + 1 from s where value < %d) "

from harness import MODULE
from libhelp import built, pydb

pytestmark = [pytest.mark.skipif(not built(), reason="libkvsql.so is not built"),
              pytest.mark.skipif(bool(os.environ.get("KVSQL_PRELOAD")),
                                 reason="a sanitized library loads only into a preloaded process")]


def stats(db):
    return json.loads(db.execute("select kvsql_stats()").fetchone()[0])


def trips_of(db, sql, *args):
    """The rows of one autocommit query and the round trips it took."""
    before = stats(db)["round_trips"]
    rows = db.execute(sql, args).fetchall()
    return rows, stats(db)["round_trips"] - before


def filled(s, key, rows=3000):
    w = pydb(s, key)
    w.execute("create table t(id integer primary key, v text)")
    w.execute(SERIES % (1, rows) + "insert into t select value, printf('%040d', value) from s")
    return w


def test_a_read_after_another_clients_commit_takes_one_round_trip(servers):
    s = servers(module=False)
    w = filled(s, "log1")
    r = pydb(s, "log1")
    assert r.execute("select count(*), sum(length(v)) from t").fetchone() == (3000, 120000)  # warm
    for i in range(1, 40):
        w.execute("update t set v = ? where id = ?", ("new%d" % i, i * 71))
        rows, trips = trips_of(r, "select v from t where id = ?", i * 71)
        assert rows == [("new%d" % i,)]
        assert trips == 1
    st = stats(r)
    assert st["log_begins"] >= 39
    # every row is as the writer left it: no page was kept that changed
    assert r.execute("select count(*) from t where v like 'new%'").fetchone()[0] == 39
    assert r.execute("pragma integrity_check").fetchone()[0] == "ok"


def test_a_reader_sees_many_commits_shrinking_and_growing_the_database(servers):
    s = servers(module=False)
    w = filled(s, "log2")
    r = pydb(s, "log2")
    want = w.execute("select count(*), sum(id) from t").fetchone()
    assert r.execute("select count(*), sum(id) from t").fetchone() == want
    w.execute("delete from t where id > 500")          # shrinks: pages cut off
    w.execute("vacuum")
    w.execute(SERIES % (501, 900) + "insert into t select value, 'again' from s")  # grows again
    for i in range(70):                                # more commits than the log keeps
        w.execute("update t set v = 'x' where id = ?", (i + 1,))
        if i in (0, 5):
            assert r.execute("select count(*), sum(id) from t").fetchone() == \
                w.execute("select count(*), sum(id) from t").fetchone()
    assert r.execute("select count(*), sum(id), sum(v = 'x') from t").fetchone() == \
        w.execute("select count(*), sum(id), sum(v = 'x') from t").fetchone()
    assert r.execute("pragma integrity_check").fetchone()[0] == "ok"


def test_a_commit_of_many_pages_drops_the_readers_cache(servers):
    s = servers(module=False)
    w = filled(s, "log3")
    r = pydb(s, "log3")
    r.execute("select sum(length(v)) from t").fetchone()
    w.execute("update t set v = printf('%050d', id)")  # every page: logged as '*'
    rows, _ = trips_of(r, "select sum(length(v)) from t")
    assert rows == [(150000,)]


@pytest.mark.skipif(not os.path.exists(MODULE), reason="the module is not built")
def test_the_module_logs_its_commits_only_while_a_library_client_keeps_the_log(servers):
    s = servers()
    c = s.client()
    c.execute_command("SQL.EXEC", "mlog", "create table t(id integer primary key, v)")
    c.execute_command("SQL.EXEC", "mlog", SERIES % (1, 2000) + "insert into t select value, 'm' from s")
    assert not c.exists("{mlog}:log")  # no library client: the module pays nothing
    r = pydb(s, "mlog")
    assert r.execute("select count(*) from t").fetchone()[0] == 2000
    assert c.exists("{mlog}:log") and c.pttl("{mlog}:log") > 0
    for i in range(1, 20):
        c.execute_command("SQL.EXEC", "mlog", "update t set v = 'changed' where id = %d" % (i * 97))
        rows, trips = trips_of(r, "select v from t where id = ?", i * 97)
        assert rows == [("changed",)]
        assert trips == 1
    head = c.lindex("{mlog}:log", 0).decode()
    assert head.split(":")[0] == c.get("{mlog}:v").decode()
    assert r.execute("select count(*) from t where v = 'changed'").fetchone()[0] == 19
