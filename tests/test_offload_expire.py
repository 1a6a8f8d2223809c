"""test_offload_expire.py - a key that vanishes under a worker's read (issue #22, item 8).

A long SQL.QUERY runs on a worker thread and reads pages from the live
hash (src/module/store/snapshot.c). When the key expires meanwhile, the read
finds pages missing: that is a change of the key, answered with the
documented SQLITE_ABORT ("deleted, replaced or moved"), never SQLITE_CORRUPT.
On the master, opening the key expires it (its event comes while the page
is read); on a replica the key reads as gone before the master's DEL
arrives (no event at all). --hz 1 keeps Redis's active expiry from
getting there first."""
import pytest

from harness import attach_replica, query, run_in_thread, sql, wait_for

ROWS = 200000
FILL = ("with recursive c(x) as (select 1 union all select x+1 from c where x<%d) "
        "insert into t select x, 'v'||x from c" % ROWS)
SLOW_READ = ("select count(*) from t a cross join (with recursive n(i) as (select 1 union all select i+1 "
             "from n where i<20) select i from n) b where a.v || b.i like '%99%'")


@pytest.mark.parametrize("where", ["master", "replica"])
def test_a_key_expiring_under_a_worker_read_is_an_abort_not_corruption(servers, where):
    master = servers(args=["--hz", "1"])
    m = master.client()
    replica = attach_replica(servers, master, args=["--hz", "1"])
    reader = m if where == "master" else replica.client()
    sql(m, "db", "create table t(id integer primary key, v text)")
    sql(m, "db", FILL)
    aborted = 0
    for i in range(3):  # a few keys: the read meets the expiry at different pages
        key = "db%d" % i
        m.restore(key, 0, m.dump("db"))
        wait_for(lambda: reader.exists(key), what="the copy on the reader")
        t, out = run_in_thread(lambda: query(reader, key, SLOW_READ))
        wait_for(lambda: reader.info("kvsql")["kvsql_worker_calls_running"] > 0, what="the read on a worker")
        m.pexpire(key, 30)
        t.join(60)
        assert "CORRUPT" not in out.get("error", ""), out
        assert "SQLITE_ABORT" in out.get("error", "") or "value" in out, out  # or it ended before the expiry
        assert not m.exists(key)
        aborted += "SQLITE_ABORT" in out.get("error", "")
    assert aborted > 0  # the reads did meet the expiry
