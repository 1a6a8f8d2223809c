"""test_library_stage.py - big commits of the redis VFS, staged (issue 12).

A commit of more than stage_kb= of pages is uploaded in short scripts into
T:stage, completed there with the pages it does not write, and published by
one short script that renames T:stage to K (src/client/hash/store_redis.c, "big
commits"; docs/FORMAT.md, "Big commits"), so that other clients never wait
long. These tests check that such a commit lands whole, shows nothing
before its publish (its writer stopped mid-upload), publishes nothing once
its writer lost the lease, keeps the snapshot of a reader that began
before it, replaces a staging key a crashed writer left, reaches a
replica, and that the module reads and writes the database afterwards. Each test starts its own redis-server (harness.py); counts come
from kvsql_stats(); no timed assertion (the PING wait is a bench row:
library_big_commit_ping_max).
"""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from harness import MODULE, attach_replica, wait_for
from libhelp import built, env, pydb, shell_ok, uri

pytestmark = pytest.mark.skipif(not built(), reason="libkvsql.so is not built")
needs_inprocess = pytest.mark.skipif(bool(os.environ.get("KVSQL_PRELOAD")),
                                     reason="a sanitized library loads only into a preloaded process")

SERIES = "with recursive s(x) as (select 1 union all select x + 1 from s where x < %d) "
ROWS = 3000  # rows of 500 bytes: about 400 pages, far above stage_kb=64 (16 pages)
SUM = "select count(*), sum(substr(v, 490) + 0) from t"


def stats(db):
    return json.loads(db.execute("select kvsql_stats()").fetchone()[0])


def fill(s, key, rows=ROWS, **params):
    w = pydb(s, key, stage_kb=64, **params)
    w.execute("create table t(id integer primary key, v text)")
    w.execute(SERIES % rows + "insert into t select x, printf('%0500d', x) from s")
    return w


@needs_inprocess
def test_a_big_commit_is_staged_and_lands_whole_while_others_read(servers):
    s = servers(module=False)
    w = fill(s, "big")
    assert stats(w)["staged_commits"] == 1  # the insert of 400 pages
    r = s.client()
    assert not r.exists("{big}:stage") and not r.exists("{big}:stage:old") and r.ttl("big") == -1
    seen, done = set(), threading.Event()

    def read():
        rd = pydb(s, "big")
        while not done.is_set():
            seen.add(rd.execute(SUM).fetchone())
        seen.add(rd.execute(SUM).fetchone())
    th = threading.Thread(target=read)
    th.start()
    try:
        for k in range(1, 4):  # every row, every page, in one transaction each
            w.execute("update t set v = printf('%%0500d', id + %d)" % k)
    finally:
        done.set()
        th.join()
    assert stats(w)["staged_commits"] == 4
    assert seen <= {(ROWS, ROWS * (ROWS + 1) // 2 + k * ROWS) for k in range(4)}, seen
    assert (ROWS, ROWS * (ROWS + 1) // 2 + 3 * ROWS) in seen
    assert pydb(s, "big").execute("pragma integrity_check").fetchone()[0] == "ok"


@needs_inprocess
def test_a_reader_that_began_before_a_staged_commit_keeps_its_snapshot(servers):
    s = servers(module=False)
    w = fill(s, "snap")
    r = pydb(s, "snap", cache_kb=64)
    r.execute("pragma cache_size = 0")
    r.execute("begin")
    before = r.execute(SUM).fetchone()
    assert before == (ROWS, ROWS * (ROWS + 1) // 2)
    w.execute("update t set v = printf('%0500d', id * 2)")  # overwrites every page, staged
    assert stats(w)["staged_commits"] == 2
    assert r.execute(SUM).fetchone() == before  # read again, from the undo the uploads saved
    r.execute("commit")
    assert r.execute(SUM).fetchone() == (ROWS, ROWS * (ROWS + 1))


@needs_inprocess
def test_a_staging_key_a_crashed_writer_left_is_replaced(servers):
    s = servers(module=False)
    w = fill(s, "crash")
    c = s.client()
    c.hset("{crash}:stage", mapping={"0": b"junk", "1": b"junk", "999999": b"junk"})
    c.pexpire("{crash}:stage", 600000)
    w.execute("update t set v = printf('%0500d', id + 1)")
    assert stats(w)["staged_commits"] == 2
    assert not c.exists("{crash}:stage")
    other = pydb(s, "crash")
    assert other.execute(SUM).fetchone() == (ROWS, ROWS * (ROWS + 1) // 2 + ROWS)
    assert other.execute("pragma integrity_check").fetchone()[0] == "ok"


@needs_inprocess
def test_stage_kb_0_commits_in_one_script(servers):
    s = servers(module=False)
    w = pydb(s, "one", stage_kb=0)
    w.execute("create table t(id integer primary key, v text)")
    w.execute(SERIES % ROWS + "insert into t select x, printf('%0500d', x) from s")
    assert stats(w)["staged_commits"] == 0 and stats(w)["commits"] == 2
    assert w.execute(SUM).fetchone() == (ROWS, ROWS * (ROWS + 1) // 2)


@needs_inprocess
def test_a_staged_commit_reaches_a_replica(servers):
    s = servers(module=False)
    rep = attach_replica(servers, s, module=False)
    fill(s, "repl")
    m, rr = s.client(), rep.client()
    target = m.info("replication")["master_repl_offset"]
    wait_for(lambda: rr.info("replication").get("slave_repl_offset", 0) >= target, what="the replica")
    assert rr.hgetall("repl") == m.hgetall("repl") and rr.get("{repl}:v") == m.get("{repl}:v")
    assert not rr.exists("{repl}:stage") and rr.ttl("repl") == -1


@needs_inprocess
@pytest.mark.skipif(not os.path.exists(MODULE), reason="the module is not built")
def test_the_module_reads_and_writes_after_a_staged_commit(servers):
    s = servers()
    c = s.client()
    w = fill(s, "mod")
    assert c.execute_command("SQL.QUERY", "mod", "select count(*) from t")[1] == [ROWS]  # cached connection
    w.execute("delete from t where id > 100")
    w.execute(SERIES % ROWS + "insert or replace into t select x, printf('%0500d', x * 3) from s")
    assert stats(w)["staged_commits"] == 3
    assert c.execute_command("SQL.QUERY", "mod", "select count(*), sum(substr(v, 490) + 0) from t")[1] == \
        [ROWS, 3 * ROWS * (ROWS + 1) // 2]
    c.execute_command("SQL.EXEC", "mod", "update t set v = 'm' where id = 1")
    assert w.execute("select v from t where id = 1").fetchone() == ("m",)
    assert w.execute("pragma integrity_check").fetchone()[0] == "ok"


def test_the_sqlite3_shell_stages_a_big_commit_and_reads_it_back(servers):
    s = servers(module=False)
    out = shell_ok(s, "sh", "create table t(id integer primary key, v text);\n"
                   "begin;\n" + SERIES % ROWS + "insert into t select x, printf('%0500d', x) from s;\n"
                   "update t set v = printf('%0500d', id + 1) where id % 2 = 0;\ncommit;\n"
                   + SUM + ";\nselect kvsql_stats();\npragma integrity_check;\n", stage_kb=64)
    lines = out.split("\n")
    assert lines[0] == "%d|%d" % (ROWS, ROWS * (ROWS + 1) // 2 + ROWS // 2)
    assert json.loads(lines[1])["staged_commits"] == 1 and lines[2] == "ok"
    assert not s.client().exists("{sh}:stage")


@needs_inprocess
@pytest.mark.skipif(not os.path.exists(MODULE), reason="the module is not built")
def test_a_staged_commit_the_publish_refuses_leaves_the_database_as_it_was(servers):
    s = servers()
    c = s.client()
    w = fill(s, "cap")
    version = c.get("{cap}:v")
    w.execute("begin")
    w.execute("update t set v = printf('%0500d', id * 5)")
    c.execute_command("SQL.CHANGES", "cap", "ON")  # capture on after the begin: the publish refuses
    with pytest.raises(sqlite3.OperationalError):
        w.execute("commit")  # SQLITE_BUSY_SNAPSHOT: SQLite rolls the transaction back
    assert not w.in_transaction
    assert c.exists("{cap}:stage")  # built, never published (it lapses, or the next big commit drops it)
    assert c.get("{cap}:v") == version
    assert pydb(s, "cap").execute(SUM).fetchone() == (ROWS, ROWS * (ROWS + 1) // 2)
    w.execute("update t set v = printf('%0500d', id * 5)")  # capture on: one commit script
    assert w.execute(SUM).fetchone() == (ROWS, 5 * ROWS * (ROWS + 1) // 2)
    assert stats(w)["staged_commits"] == 1 and c.xlen("{cap}:changes") > ROWS  # the fill only


BIG_ROWS = 100000  # 50 MB: 200 upload scripts, time enough to stop the writer between two of them
WRITER = """
import os, sqlite3, sys
c = sqlite3.connect(":memory:"); c.enable_load_extension(True); c.load_extension(os.environ["KVSQL_LIB"])
db = sqlite3.connect(sys.argv[1], uri=True, isolation_level=None, timeout=30)
try:
    db.execute("update t set v = printf('%0500d', id + 1)")
    print("committed")
except sqlite3.Error as e:
    print("failed: %s" % db.execute("select kvsql_error()").fetchone()[0])
"""


def stopped_while_staging(s, key, **params):
    """A writer process updating every row of key, stopped (SIGSTOP) while
    T:stage exists, before its publish; None when it published first."""
    r = s.client()
    w = subprocess.Popen([sys.executable, "-c", WRITER, uri(s, key, stage_kb=64, **params)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    deadline = time.time() + 60
    while w.poll() is None and time.time() < deadline and not r.exists("{%s}:stage" % key):
        time.sleep(0.001)
    w.send_signal(signal.SIGSTOP)
    if r.exists("{%s}:stage" % key):
        return w
    w.send_signal(signal.SIGCONT)
    w.communicate(timeout=120)
    return None


@needs_inprocess
def test_nothing_of_a_staged_commit_shows_before_its_publish(servers):
    s = servers(module=False)
    fill(s, "vis", BIG_ROWS)
    r = s.client()
    for attempt in range(5):
        version, pages = r.get("{vis}:v"), r.hgetall("vis")
        total = pydb(s, "vis").execute(SUM).fetchone()
        w = stopped_while_staging(s, "vis")
        if w is None:
            continue  # it published before the stop: try again
        try:
            assert r.get("{vis}:v") == version and r.hgetall("vis") == pages
            assert pydb(s, "vis").execute(SUM).fetchone() == total
        finally:
            w.send_signal(signal.SIGCONT)
        out, err = w.communicate(timeout=120)
        assert out.strip() == "committed", out + err
        assert pydb(s, "vis").execute(SUM).fetchone() == (total[0], total[1] + BIG_ROWS)
        return
    pytest.fail("the writer published before it could be stopped, 5 times")


@needs_inprocess
def test_a_staging_writer_that_loses_its_lease_publishes_nothing(servers):
    s = servers(module=False)
    fill(s, "fence", BIG_ROWS)
    r = s.client()
    for attempt in range(5):
        w = stopped_while_staging(s, "fence", lease_ms=300)
        if w is not None:
            break
    else:
        pytest.fail("the writer published before it could be stopped, 5 times")
    try:
        wait_for(lambda: not r.exists("{fence}:lease"), what="the stopped writer's lease to lapse")
        pydb(s, "fence").execute("update t set v = 'other' where id = 1")  # another writer, meanwhile
    finally:
        w.send_signal(signal.SIGCONT)
    out, err = w.communicate(timeout=120)
    assert out.startswith("failed") and "write lease was lost" in out, out + err
    db = pydb(s, "fence")
    assert db.execute("select count(*) from t where v = 'other'").fetchone()[0] == 1
    assert db.execute("select count(*) from t where substr(v, 490) + 0 = id").fetchone()[0] == BIG_ROWS - 1
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"


@needs_inprocess
def test_a_staged_commit_keeps_the_ttl_of_the_key(servers):
    """Issue 23 item 7: the publish renamed T:stage over K and PERSISTed it,
    dropping an EXPIRE the user had set (a small commit keeps it)."""
    s = servers(module=False)
    w = fill(s, "ttl")
    r = s.client()
    r.expire("ttl", 3600)
    w.execute("update t set v = printf('%0500d', id + 1)")
    assert stats(w)["staged_commits"] == 2
    assert 3500 < r.ttl("ttl") <= 3600
    r.persist("ttl")
    w.execute("update t set v = printf('%0500d', id + 2)")
    assert stats(w)["staged_commits"] == 3 and r.ttl("ttl") == -1  # no TTL stays none, not T:stage's


@needs_inprocess
@pytest.mark.parametrize("loss", ["deleted", "expired", "one field deleted"])
def test_a_staged_commit_whose_staging_key_lost_pages_publishes_nothing(servers, loss):
    """T:stage deleted (by anyone), lapsed or evicted (volatile-*: it has a
    TTL), or missing one uploaded field between two steps: the copy step
    must not refill it from the old pages, and the publish must fail with
    nothing written (repro_stage_deleted.py, repro_stage_evicted.py)."""
    s = servers(module=False)
    fill(s, "lost", BIG_ROWS)
    r = s.client()
    for attempt in range(5):
        version, total = r.get("{lost}:v"), pydb(s, "lost").execute(SUM).fetchone()
        w = stopped_while_staging(s, "lost")
        if w is not None:
            break
    else:
        pytest.fail("the writer published before it could be stopped, 5 times")
    try:
        stage = "{lost}:stage"
        if loss == "deleted":
            r.delete(stage)
        elif loss == "expired":
            # again until it lapses: a step already on its way may renew it once
            wait_for(lambda: r.pexpire(stage, 1) is not None and not r.exists(stage),
                     what="the staging key to lapse")
        else:
            r.hdel(stage, r.hrandfield(stage))
    finally:
        w.send_signal(signal.SIGCONT)
    out, err = w.communicate(timeout=120)
    assert out.startswith("failed") and "lost pages it had uploaded" in out, out + err
    # SQLite's rollback may write the old bytes back as a commit of their own (src/vfs.c)
    assert int(r.get("{lost}:v")) in (int(version), int(version) + 1)
    db = pydb(s, "lost")
    assert db.execute(SUM).fetchone() == total
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    db.execute("update t set v = printf('%0500d', id + 2)")  # the next big commit lands whole
    assert db.execute(SUM).fetchone() == (BIG_ROWS, BIG_ROWS * (BIG_ROWS + 1) // 2 + 2 * BIG_ROWS)
