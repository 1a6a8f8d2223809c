"""test_offload.py - long SQL runs beside Redis's event loop (issue #14).

A call that runs past kvsql.offload-after-us moves to a worker thread, on
a snapshot of its database (src/module/offload/offload.c, snapshot.c). These tests
check what a client sees: other clients are served while it runs, readers
never mix two versions (the bank invariant, on a master and on a replica),
a long write lands whole and atomically, SQL.KILL and the time limit still
stop it, MULTI and Lua stay synchronous, a key deleted under a reader fails
the reader cleanly, and shutdown with workers running is clean. No timing
is asserted: only the order in which things happen, and counters."""
import random
import threading
import time

import pytest
import redis

from harness import attach_replica, query, run_in_thread, sql, wait_for

ROWS = 200000
FILL = ("with recursive c(x) as (select 1 union all select x+1 from c where x<%d) "
        "insert into t select x, 'v'||x from c" % ROWS)
# A read that takes a while (about a second here): every row 20 times, a
# LIKE on each.
SLOW_READ_COUNT = sum(1 for x in range(1, ROWS + 1) for i in range(1, 21) if "99" in "v%d%d" % (x, i))
SLOW_READ = ("select count(*) from t a cross join (with recursive n(i) as (select 1 union all select i+1 "
             "from n where i<20) select i from n) b where a.v || b.i like '%99%'")
# A write that takes a while: a correlated count for every row.
SLOW_WRITE = "update t set v = v || 'x' where (select count(*) from t t2 where t2.id between t.id and t.id + 100) > 0"


def info(r):
    return r.info("kvsql")


def worker_running(r):
    return info(r)["kvsql_worker_calls_running"] > 0


@pytest.fixture
def big(server):
    r = server.client()
    sql(r, "db", "create table t(id integer primary key, v text)")
    sql(r, "db", FILL)
    return r


def test_a_long_read_runs_on_a_worker_while_others_are_served(server, big):
    before = info(big)["kvsql_offloaded_calls"]
    t, out = run_in_thread(lambda: query(server.client(), "db", SLOW_READ))
    wait_for(lambda: worker_running(big), what="the read on a worker")
    # Served while the read runs: plain commands, and SQL on the same database.
    assert big.ping()
    assert big.set("other", "1")
    assert query(big, "db", "select max(id) from t")[1] == [ROWS]  # one seek: stays here
    assert sql(big, "db", "insert into t values(?, '99')", ROWS + 1) == 1  # would count 20 more
    assert t.is_alive(), "the long read ended before the others were served: make it longer"
    t.join(60)
    # The read counts the rows of its snapshot: the insert came after it began.
    assert out["value"][1] == [SLOW_READ_COUNT]
    assert info(big)["kvsql_offloaded_calls"] == before + 1


def test_two_long_reads_run_at_once(server, big):
    runs = [run_in_thread(lambda: query(server.client(), "db", SLOW_READ)) for _ in range(2)]
    wait_for(lambda: info(big)["kvsql_worker_calls_running"] == 2, what="both reads on workers at once")
    for t, out in runs:
        t.join(60)
        assert out["value"][1] == [SLOW_READ_COUNT]


def test_a_short_query_stays_on_the_main_thread(big):
    before = info(big)["kvsql_offloaded_calls"]
    for i in range(200):
        assert query(big, "db", "select v from t where id=?", i + 1)[1] == [b"v%d" % (i + 1)]
    assert info(big)["kvsql_offloaded_calls"] == before


def test_a_long_write_lands_whole_and_a_second_writer_waits(server, big):
    add = ("with recursive c(x) as (select 1 union all select x+1 from c where x<%d) "
           "insert into t select x + %d, 'w'||x from c" % (ROWS, ROWS))
    t, out = run_in_thread(lambda: sql(server.client(), "db", add))
    wait_for(lambda: worker_running(big), what="the write on a worker")
    # Readers see the last committed state; a second writer is refused.
    assert query(big, "db", "select count(*) from t")[1] == [ROWS]
    with pytest.raises(redis.ResponseError, match="SQLITE_BUSY .*worker thread"):
        sql(big, "db", "insert into t values(-1, 'x')")
    assert t.is_alive()
    t.join(60)
    assert out == {"value": ROWS}
    assert query(big, "db", "select count(*), max(id) from t")[1] == [2 * ROWS, 2 * ROWS]
    assert query(big, "db", "pragma integrity_check")[1] == [b"ok"]


def test_sql_kill_and_the_time_limit_stop_a_worker_call(server, big):
    t, out = run_in_thread(lambda: query(server.client(), "db", SLOW_READ))
    wait_for(lambda: worker_running(big), what="the read on a worker")
    assert big.execute_command("SQL.KILL") == b"OK"
    t.join(60)
    assert "SQL.KILL" in out["error"]
    big.config_set("kvsql.query-timeout-ms", 200)
    with pytest.raises(redis.ResponseError, match="SQLITE_INTERRUPT .*kvsql.query-timeout-ms"):
        query(big, "db", SLOW_READ)
    with pytest.raises(redis.ResponseError, match="SQLITE_INTERRUPT .*kvsql.query-timeout-ms"):
        sql(big, "db", SLOW_WRITE)
    assert query(big, "db", "select count(*) from t where v like '%x'")[1] == [0]  # nothing written


def test_multi_and_lua_stay_synchronous(big):
    """Calls inside MULTI and scripts never move; a long one is stopped
    instead (test_main_thread.py)."""
    before = info(big)["kvsql_offloaded_calls"]
    p = big.pipeline(transaction=True)
    p.execute_command("SQL.QUERY", "db", "select count(*) from t where id > ?", ROWS - 1000)
    p.execute_command("SQL.EXEC", "db", "update t set v = 'm' where id = 1")
    p.execute_command("SQL.QUERY", "db", SLOW_READ)
    res = p.execute(raise_on_error=False)
    assert res[0][1] == [1000] and res[1] == 1
    assert "inside MULTI/EXEC cannot move to a worker thread" in str(res[2])
    # A short one (a range of the rowid): a count of every row can pass the
    # stop of a call that cannot move in a sanitized build on a busy machine.
    assert big.eval("return redis.call('SQL.QUERY', KEYS[1], ARGV[1])[2][1]", 1, "db",
                    "select count(*) from t where id > %d" % (ROWS - 1000)) == 1000
    assert info(big)["kvsql_offloaded_calls"] == before
    assert query(big, "db", "select v from t where id = 1")[1] == [b"m"]  # MULTI's update landed


@pytest.mark.parametrize("how", ["del", "flushall", "migrate"])
def test_a_key_deleted_or_moved_under_a_reader_fails_the_reader(servers, how):
    server = servers()
    big = server.client()
    sql(big, "db", "create table t(id integer primary key, v text)")
    sql(big, "db", FILL)
    t, out = run_in_thread(lambda: query(server.client(), "db", SLOW_READ))
    wait_for(lambda: worker_running(big), what="the read on a worker")
    if how == "del":
        big.delete("db")
    elif how == "flushall":
        big.flushall()
    else:  # what a cluster's resharding does to each key of a slot
        other = servers()
        big.migrate("127.0.0.1", other.port, "db", 0, 5000)
        assert query(other.client(), "db", "select count(*) from t")[1] == [ROWS]
    t.join(60)
    assert "error" in out, "the read finished before the key went: make it longer"
    assert "deleted, replaced or moved" in out["error"]
    assert big.ping()
    assert not big.exists("db")


def test_worker_threads_config(server, big):
    big.config_set("kvsql.worker-threads", 0)
    before = info(big)["kvsql_offloaded_calls"]
    assert query(big, "db", "select count(*) from t where v like '%5%'")[1][0] > 0
    assert info(big)["kvsql_offloaded_calls"] == before  # no worker: it ran here
    big.config_set("kvsql.worker-threads", 3)
    assert query(big, "db", "select count(*) from t where v like '%5%'")[1][0] > 0
    assert info(big)["kvsql_offloaded_calls"] == before + 1
    assert info(big)["kvsql_worker_threads"] == 3
    # Fewer threads while calls wait for one: every queued call still runs.
    big.config_set("kvsql.worker-threads", 1)
    wait_for(lambda: info(big)["kvsql_worker_threads"] == 1, what="the pool to shrink")
    runs = [run_in_thread(lambda: query(server.client(), "db", SLOW_READ)) for _ in range(2)]
    wait_for(lambda: info(big)["kvsql_worker_calls_queued"] == 1, what="one call queued")
    big.config_set("kvsql.worker-threads", 0)
    for t, out in runs:
        t.join(60)
        assert out["value"][1] == [SLOW_READ_COUNT]
    wait_for(lambda: info(big)["kvsql_worker_threads"] == 0, what="the pool to end")


def test_shutdown_while_a_worker_runs(server, big):
    t, out = run_in_thread(lambda: query(server.client(), "db", SLOW_READ))
    wait_for(lambda: worker_running(big), what="the read on a worker")
    try:
        big.shutdown(nosave=True)
    except redis.ConnectionError:
        pass
    wait_for(lambda: not server.alive(), what="the server to end")
    t.join(10)
    assert server.proc.wait(10) == 0, server.log()[-2000:]
    assert not server.problems()


# ---- snapshots: the bank invariant --------------------------------------------

ACCOUNTS = 400
TOTAL = ACCOUNTS * 1000
# One account per page or so (a 3000-byte pad), so a reader's scan spans
# many pages and the whole query; the correlated subquery makes it slow.
BANK_SUM = ("select sum(balance), count(*) from accounts a "
            "where (select count(*) from slow where slow.k <= a.id % 5 + 2000) >= 0")
# The same, slower: the scan of accounts spans the whole query.
BANK_SUM_SLOW = ("select sum(balance) / 8, count(*) / 8 from accounts a cross join (with recursive n(i) as "
                 "(select 1 union all select i+1 from n where i<8) select i from n) b "
                 "where (select count(*) from slow where slow.k <= a.id % 5 + 2000) >= 0")


def make_bank(r):
    sql(r, "bank", "create table accounts(id integer primary key, balance integer, pad blob)")
    sql(r, "bank", "with recursive c(x) as (select 1 union all select x+1 from c where x<%d) "
                   "insert into accounts select x, 1000, zeroblob(3000) from c" % ACCOUNTS)
    sql(r, "bank", "create table slow(k integer)")
    sql(r, "bank", "with recursive c(x) as (select 1 union all select x+1 from c where x<3000) "
                   "insert into slow select x from c")


MOVE = ("update accounts set balance = balance - ?1 where id = ?2; "
        "update accounts set balance = balance + ?1 where id = ?3")


def transfer(r, rng):
    a, b = rng.sample(range(1, ACCOUNTS + 1), 2)
    amount = rng.randint(1, 50)
    sql(r, "bank", MOVE, amount, a, b)


def users_transfer(r, rng):
    """A transfer made the way a user's own tool might: on a copy of the
    hash, then one HSET of the pages that differ into the database."""
    r.copy("bank", "bank:copy", replace=True)
    transfer_on = r.hgetall("bank")
    a, b = rng.sample(range(1, ACCOUNTS + 1), 2)
    amount = rng.randint(1, 50)
    sql(r, "bank:copy", MOVE, amount, a, b)
    new = r.hgetall("bank:copy")
    diff = {f: v for f, v in new.items() if transfer_on.get(f) != v}
    r.hset("bank", mapping=diff)


def swap_transfer(r, rng):
    """A transfer made on a copy that then replaces the database with
    RENAME, as the library's big commits publish (docs/FORMAT.md)."""
    r.copy("bank", "bank:new", replace=True)
    a, b = rng.sample(range(1, ACCOUNTS + 1), 2)
    sql(r, "bank:new", MOVE, rng.randint(1, 50), a, b)
    r.rename("bank:new", "bank")


def check_bank(writer, reader, readers=2, reads=4, deadline_s=120, move=transfer, sum_sql=BANK_SUM):
    stop = threading.Event()
    done = {"transfers": 0}

    def write():
        rng = random.Random(7)
        while not stop.is_set() and done["transfers"] < 20000:
            move(writer, rng)
            done["transfers"] += 1

    sums = []

    def read(c):
        for _ in range(reads):
            sums.append(query(c, "bank", sum_sql)[1])

    w = threading.Thread(target=write)
    w.start()
    rs = [threading.Thread(target=read, args=(reader(),)) for _ in range(readers)]
    end = time.time() + deadline_s
    for t in rs:
        t.start()
    for t in rs:
        t.join(max(1, end - time.time()))
    stop.set()
    w.join(30)
    assert len(sums) == readers * reads
    assert all(s == [TOTAL, ACCOUNTS] for s in sums), sums
    assert done["transfers"] > 0
    return done["transfers"]


def test_bank_invariant_on_the_master(server):
    r = server.client()
    make_bank(r)
    before = info(r)
    check_bank(r, server.client)
    after = info(r)
    assert after["kvsql_offloaded_calls"] >= before["kvsql_offloaded_calls"] + 8
    # Module writes keep the pages the readers need: no reader started again.
    assert after["kvsql_offload_restarts"] == before["kvsql_offload_restarts"]


def test_bank_invariant_on_a_replica(servers):
    master = servers()
    m = master.client()
    make_bank(m)
    replica = attach_replica(servers, master)
    rc = replica.client()
    wait_for(lambda: query(rc, "bank", "select count(*) from accounts")[1] == [ACCOUNTS], what="replica sync")
    check_bank(m, replica.client, readers=2, reads=3)
    # Replicated writes break a reader's snapshot: it starts again, never mixes.
    assert info(rc)["kvsql_offloaded_calls"] >= 6


def test_bank_invariant_when_renames_replace_the_database(server):
    r = server.client()
    make_bank(r)
    check_bank(r, server.client, readers=1, reads=3, move=swap_transfer, sum_sql=BANK_SUM_SLOW)
    assert info(r)["kvsql_offload_restarts"] >= 1


def test_bank_invariant_with_a_users_hset(server):
    """Changes kvsql cannot keep (a user's HSET of a new version's pages)
    make a reader start again on a new snapshot: it never mixes them."""
    r = server.client()
    make_bank(r)
    check_bank(r, server.client, readers=1, reads=3, move=users_transfer, sum_sql=BANK_SUM_SLOW)
    assert info(r)["kvsql_offload_restarts"] >= 1


def test_a_long_write_reaches_the_replica_and_the_aof(servers):
    master = servers(args=["--appendonly", "yes", "--appendfsync", "always"])
    m = master.client()
    replica = attach_replica(servers, master)
    before = info(m)["kvsql_offloaded_calls"]
    sql(m, "db", "create table t(id integer primary key, v text)")
    sql(m, "db", FILL)
    assert info(m)["kvsql_offloaded_calls"] == before + 1
    rc = replica.client()
    wait_for(lambda: rc.hlen("db") == m.hlen("db") and query(rc, "db", "select count(*) from t")[1] == [ROWS],
             what="the replica to have the rows")
    assert query(rc, "db", "pragma integrity_check")[1] == [b"ok"]
    master.restart()  # loads the AOF
    m = master.client()
    assert query(m, "db", "select count(*), sum(id) from t")[1] == [ROWS, ROWS * (ROWS + 1) // 2]


def test_temp_objects_stay_with_the_keys_connection(big):
    """TEMP objects live in the key's cached connection: a long call that
    makes one runs again there (here its TEMP statement comes after the
    call has moved) and, since it cannot move from there, stops past
    offload-after-us with nothing made (test_main_thread.py); a short one
    makes them, and calls on that connection stay there and see them."""
    before = info(big)
    with pytest.raises(redis.ResponseError, match="makes or may use TEMP objects cannot move"):
        sql(big, "db", SLOW_READ + "; create temp table tt as select id from t where v like '%99%'")
    after = info(big)
    assert after["kvsql_offload_run_here"] == before["kvsql_offload_run_here"] + 1
    with pytest.raises(redis.ResponseError, match="no such table"):
        query(big, "db", "select count(*) from tt")
    sql(big, "db", "create temp table tt as select id from t where id between 1 and 500")
    assert query(big, "db", "select count(*) from tt")[1] == [500]
    assert query(big, "db", "select count(*) from t join tt using(id) where v like '%9%'")[1] == \
        [sum(1 for x in range(1, 501) if "9" in "v%d" % x)]
    assert info(big)["kvsql_offloaded_calls"] == after["kvsql_offloaded_calls"]  # stayed here
