"""test_library_scan.py - the redis VFS's page cache and its reads of many pages (issue 12).

The client page cache is bounded by the URI parameter cache_kb= and says
what it holds in kvsql_stats() (cache_pages, cache_bytes, cache_limit,
cache_evictions); a cold scan reads its pages in batches, following the
b-tree wherever the pages lie, and sends the next batch before SQLite asks
for it. These tests check the bound while databases bigger than the cache
are scanned and written, the batches of a cold scan in round trips counted
exactly by kvsql_stats(), and that read-ahead never shows a page of another
snapshot. Each test starts its own redis-server (harness.py), without the
module; no timed assertion.
"""
import json
import os
import time

import pytest

from libhelp import built, pydb, shell, shell_ok

pytestmark = pytest.mark.skipif(not built(), reason="libkvsql.so is not built")
needs_inprocess = pytest.mark.skipif(bool(os.environ.get("KVSQL_PRELOAD")),
                                     reason="a sanitized library loads only into a preloaded process")

SERIES = "with recursive s(x) as (select 1 union all select x + 1 from s where x < %d) "
ROWS = 8000                     # rows of 500 bytes: about 1100 pages of 4 KiB
FILL = ("create table t(id integer primary key, v text);"
        + SERIES % ROWS + "insert into t select x, printf('%0500d', x) from s;")
SUM = "select count(*), sum(length(v)), sum(substr(v, 490) + 0) from t"
WANT = (ROWS, ROWS * 500, ROWS * (ROWS + 1) // 2)   # the last 11 digits of each row hold its id


def stats(db):
    return json.loads(db.execute("select kvsql_stats()").fetchone()[0])


def last_stats(out):
    """The kvsql_stats() JSON the shell printed last."""
    return json.loads([line for line in out.split("\n") if line.startswith("{")][-1])


def test_cache_kb_bounds_the_cache_while_a_bigger_database_is_scanned_and_written(servers):
    s = servers(module=False)
    shell_ok(s, "big", FILL)
    pages = s.client().hlen("big")
    assert pages > 1000
    # a reader with a cache of 256 KiB (63 pages): a scan, a transaction that
    # writes every page, and a scan again, all in one process
    out = shell_ok(s, "big", SUM + ";\nselect kvsql_stats();\n"
                   "update t set v = printf('%0500d', id + 1);\n"
                   + SUM + ";\nselect kvsql_stats();\npragma integrity_check;\n", cache_kb=256)
    lines = out.split("\n")
    assert lines[0] == "%d|%d|%d" % WANT
    first = json.loads(lines[1])
    assert first["cache_limit"] == 256 * 1024
    assert 0 < first["cache_bytes"] <= first["cache_limit"]
    assert first["cache_pages"] * 4096 < first["cache_bytes"] and first["cache_pages"] < pages / 10
    assert first["cache_evictions"] > pages / 2
    assert lines[2] == "%d|%d|%d" % (ROWS, ROWS * 500, WANT[2] + ROWS)
    second = json.loads(lines[3])
    assert second["commits"] == 1 and second["pages_written"] > pages / 2  # one transaction, bigger than the cache
    assert 0 < second["cache_bytes"] <= second["cache_limit"]
    assert lines[4] == "ok"
    # what another client reads, with the default cache (4 MiB: all of it)
    out = shell_ok(s, "big", SUM + ";\nselect kvsql_stats();\n")
    assert out.split("\n")[0] == "%d|%d|%d" % (ROWS, ROWS * 500, WANT[2] + ROWS)
    st = last_stats(out)
    assert st["cache_limit"] == 4096 * 1024 and st["cache_evictions"] == 0
    assert st["cache_pages"] == pages


@needs_inprocess
def test_warm_reads_stay_at_one_round_trip_after_a_scan_bigger_than_the_cache(servers):
    s = servers(module=False)
    shell_ok(s, "warm", FILL)
    db = pydb(s, "warm", cache_kb=128)
    db.execute("pragma cache_size = 0")  # SQLite's own cache: the least it keeps
    assert db.execute(SUM).fetchone() == WANT
    assert stats(db)["cache_evictions"] > 0
    # page 1 never leaves the cache: after another client's commit the next
    # begin still finds the cache warm and keeps it (the changelog)
    pydb(s, "warm").execute("update t set v = 'changed' where id = 4000")
    logged = stats(db)["log_begins"]
    point = "select length(v) from t where id = ?"
    assert db.execute(point, (4000,)).fetchone() == (7,)
    assert stats(db)["log_begins"] == logged + 1
    for i in (1, 2, 3):
        assert db.execute(point, (i,)).fetchone() == (500,)  # their pages come into the cache
    for i in range(30):
        before = stats(db)["round_trips"]
        assert db.execute(point, (1 + i % 3,)).fetchone() == (500,)
        assert stats(db)["round_trips"] - before == 1  # begin only


@pytest.mark.parametrize("value", ["0", "x", "1073741825"])
def test_a_bad_cache_kb_is_named_in_the_error(servers, value):
    s = servers(module=False)
    out, err = shell(s, "k", "select kvsql_error();\n", cache_kb=value)
    assert "unable to open database" in err
    assert out.strip() == "k: cache_kb=%s: expected an integer from 1 to 1073741824" % value


def scan_trips(s, key, **params):
    db = pydb(s, key, **params)
    before = stats(db)
    assert db.execute(SUM).fetchone()[0] == ROWS
    after = stats(db)
    return {k: after[k] - before.get(k, 0) for k in ("round_trips", "reads", "pages_read")}


@needs_inprocess
def test_a_cold_scan_reads_32_pages_or_more_per_round_trip(servers):
    s = servers(module=False)
    shell_ok(s, "cold", FILL)
    pages = s.client().hlen("cold")
    got = scan_trips(s, "cold")
    assert got["round_trips"] * 32 <= pages, got    # connecting and begin included
    assert got["pages_read"] <= pages                # none twice
    # a cache of 64 KiB (15 pages) still reads in batches (of a quarter of it)
    got = scan_trips(s, "cold", cache_kb=64)
    assert got["round_trips"] * 2 <= pages, got


@needs_inprocess
def test_a_cold_scan_follows_the_b_tree_when_its_pages_lie_backwards(servers):
    s = servers(module=False)
    # pages freed by a dropped table are reused from the free list, which
    # hands them out in no useful order: the table's leaves are not in page order
    shell_ok(s, "back", "create table old(v);" + SERIES % ROWS + "insert into old select printf('%0500d', x) "
             "from s; create table keep(v); insert into keep values (1); drop table old;" + FILL)
    db = pydb(s, "back")
    leaves = [r[0] for r in db.execute("select pageno from dbstat where name = 't' and pagetype = 'leaf' "
                                       "order by path")]
    backwards = sum(1 for a, b in zip(leaves, leaves[1:]) if b != a + 1)
    assert backwards > len(leaves) / 2, "the layout this test needs did not come about"
    pages = s.client().hlen("back")
    got = scan_trips(s, "back")
    assert got["round_trips"] * 32 <= pages, got
    assert got["pages_read"] <= pages


@needs_inprocess
def test_read_ahead_keeps_to_the_snapshot_while_another_client_commits(servers):
    s = servers(module=False)
    shell_ok(s, "snap", FILL)
    w = pydb(s, "snap")
    r = pydb(s, "snap", cache_kb=512)
    r.execute("pragma cache_size = 0")
    r.execute("begin")
    assert r.execute(SUM).fetchone() == WANT          # cold: batches and prefetch
    w.execute("update t set v = printf('%0500d', id * 2)")  # every page changes
    assert r.execute(SUM).fetchone() == WANT          # the same snapshot: read again, from undo records
    r.execute("commit")
    assert r.execute(SUM).fetchone() == (ROWS, ROWS * 500, 2 * WANT[2])
    # a scan stopped early leaves its next batch on the way; the next
    # statements (a write, a read) still see what they must
    assert len(r.execute("select v from t limit 3000").fetchall()) == 3000
    r.execute("update t set v = printf('%0500d', id) where id % 2 = 0")
    assert w.execute(SUM).fetchone() == (ROWS, ROWS * 500, sum(i if i % 2 == 0 else 2 * i for i in range(1, ROWS + 1)))
    assert r.execute(SUM).fetchone() == w.execute(SUM).fetchone()
    assert r.execute("pragma integrity_check").fetchone()[0] == "ok"


@needs_inprocess
def test_a_reader_reading_for_longer_than_its_lease_keeps_its_snapshot(servers):
    # Reads without a script (HMGET, then GET T:v) do not renew the reader's
    # registration; a script read does, at least every lease_ms/4. A reader
    # that keeps reading past lease_ms must still be registered when a commit
    # comes, or that commit keeps no undo for it.
    s = servers(module=False)
    shell_ok(s, "lease", FILL)
    r = pydb(s, "lease", cache_kb=64, lease_ms=1000)
    r.execute("pragma cache_size = 0")
    r.execute("begin")
    region = "select sum(substr(v, 490) + 0) from t where id between ? and ?"
    for i in range(40):  # about 2 s of reads, each missing the cache
        a = 1 + (i * 197) % (ROWS - 100)
        assert r.execute(region, (a, a + 99)).fetchone()[0] == sum(range(a, a + 100))
        time.sleep(0.05)
    pydb(s, "lease").execute("update t set v = 'gone'")  # every page changes
    assert r.execute(region, (4001, 4100)).fetchone()[0] == sum(range(4001, 4101))
    assert r.execute(SUM).fetchone() == WANT
    r.execute("commit")
    assert r.execute("select count(*) from t where v = 'gone'").fetchone()[0] == ROWS
