"""test_main_thread.py - no call holds Redis's main thread for long (issue
22, items 4 to 7, and calls that cannot move to a worker thread: inside
MULTI/EXEC, scripts and functions, or using TEMP objects, which are
stopped past kvsql.offload-after-us plus 30 ms).

The time limit, SQL.KILL and the move to a worker thread wait for a check,
and SQLite's progress handler runs only between virtual machine steps.
kvsql also checks at every big allocation and every 1024th, every 256th
page fetch and while binding NAMED parameters (src/module/connections/budget.c,
exec.c), so work done inside one step is seen too: each call below did
all its work in a few steps and held the main thread for seconds. Each
test waits for events, never for a time: the call runs on a worker thread
while another client's PING is answered, then SQL.KILL stops it (or it
ends as it should)."""

import re
import time

import pytest
import redis

from harness import query, run_in_thread, sql, wait_for

# Few steps, each on a value of 8 MB (hex and upper of a 4 MB zeroblob).
HEAVY_STEPS = ("with recursive c(i) as (select 1 union all select i+1 from c where i<%d) "
               "select sum(length(upper(hex(zeroblob(4000000+i))))) from c")


def info(r):
    return r.info("kvsql")


def on_a_worker_while_ping_is_answered(server, call, stop=True):
    """Runs call(client) in a thread; waits until it runs on a worker
    thread, checks that another client's PING is answered meanwhile, then
    (stop) stops it with SQL.KILL. Returns the call's outcome."""
    other = server.client()
    t, out = run_in_thread(lambda: call(server.client()))
    wait_for(lambda: info(other)["kvsql_worker_calls_running"] > 0 or not t.is_alive(), timeout=60,
             what="the call on a worker")
    assert t.is_alive() and info(other)["kvsql_worker_calls_running"] > 0, \
        "the call ended without running on a worker thread: %r" % (out,)
    assert other.ping()  # answered while the call runs
    assert t.is_alive()
    if stop:
        assert other.execute_command("SQL.KILL") == b"OK"
    t.join(60)
    assert not t.is_alive()
    assert server.client().ping() and not server.problems()
    return out


def test_few_heavy_steps_move_to_a_worker(server):
    """Item 4: about 10 steps a row, each on 8 MB: the clock was read only
    every 1,024 steps, so the call ran to its end on the main thread."""
    out = on_a_worker_while_ping_is_answered(server, lambda c: query(c, "db", HEAVY_STEPS % 400))
    assert "stopped by SQL.KILL" in out["error"]


def test_heavy_steps_of_other_functions_move_too(server):
    """A variant: quote() of random blobs, each step allocating tens of MB."""
    q = ("with recursive c(i) as (select 1 union all select i+1 from c where i<400) "
         "select sum(length(quote(randomblob(8000000)))) from c")
    out = on_a_worker_while_ping_is_answered(server, lambda c: query(c, "db", q))
    assert "stopped by SQL.KILL" in out["error"]


def test_a_big_argument_moves_the_call_at_once(server):
    """A value of 1 MB or more given as an argument: every step on it
    takes milliseconds, so the call starts on a worker."""
    r = server.client()
    before = info(r)["kvsql_offloaded_calls"]
    assert query(r, "db", "select length(?)", "x" * 2000000)[1] == [2000000]
    assert info(r)["kvsql_offloaded_calls"] == before + 1
    assert query(r, "db", "select length(?)", "x" * 1000)[1] == [1000]
    assert info(r)["kvsql_offloaded_calls"] == before + 1


# ---- printf and format ------------------------------------------------------------

def test_printf_repeating_past_the_length_limit_is_null_at_once(server):
    """SQLite 3.40's %c counts its repeats one by one even past the limit:
    thirty of these ran 12.5 s with a 2 s time limit. The result is NULL,
    as SQLite's, without the work."""
    r = server.client()
    r.config_set("kvsql.query-timeout-ms", 2000)
    q = ("with recursive c(i) as (select 1 union all select i+1 from c where i<30) "
         "select count(*), count(printf('%.*c', 900000000, 'x')), count(format('%5.*c%.*c', 20000000, 'y', 20000000, 'z')) from c")
    assert query(r, "db", q)[1] == [30, 0, 0]


# ---- NAMED ---------------------------------------------------------------------------

def named_call(n):
    params = ",".join(":p%d" % i for i in range(n))
    args = []
    for i in range(n):
        args += ["p%d" % i, i]
    return lambda c: query(c, "db", "NAMED", "select count(*) from (select 1) where 0 in (%s)" % params, *args)


def test_many_named_parameters_move_to_a_worker(server):
    """Item 5: binding 30,000 NAMED parameters held the main thread 14 s."""
    out = on_a_worker_while_ping_is_answered(server, named_call(30000))
    assert "stopped by SQL.KILL" in out["error"]


def test_named_binding_finds_each_pair(r):
    assert query(r, "db", "NAMED", "select :b, @a, $c, :a", "$a", 1, ":b", "x", "c", 3)[1] == [b"x", 1, 3, 1]
    # the first pair of a name binds it (and the second is unused: an error)
    with pytest.raises(redis.ResponseError, match="names no parameter"):
        query(r, "db", "NAMED", "select :a", "a", 1, "a", 2)
    assert query(r, "db", "NAMED", "select :a, :ab, :b", "ab", 2, "b", 3, "a", 1)[1] == [1, 2, 3]
    with pytest.raises(redis.ResponseError, match="no argument gives :zz"):
        query(r, "db", "NAMED", "select :a, :zz", "a", 1, "z", 2)


# ---- TEMP objects ----------------------------------------------------------------------

COUNT_3M = ("with recursive c(i) as (select 1 union all select i+1 from c where i<%d) "
            "select count(*) from c where i %% 7 = 1")


def test_a_database_with_temp_objects_still_moves_calls_that_do_not_use_them(server):
    """Item 6: once a call made a TEMP table, every long call on the
    database stayed on the main thread."""
    r = server.client()
    sql(r, "db", "create table t(a); create temp table scratch(a); create temp view sv as select 1")
    out = on_a_worker_while_ping_is_answered(server, lambda c: query(c, "db", COUNT_3M % 100000000))
    assert "stopped by SQL.KILL" in out["error"]
    # A short call that names a TEMP object runs here, and sees it.
    before = info(r)["kvsql_offloaded_calls"]
    q = "select count(*), (select count(*) from scratch) from (%s)" % (COUNT_3M % 3000)
    assert query(r, "db", q)[1] == [1, 0]
    assert query(r, "db", "select count(*) from SV, (%s)" % (COUNT_3M % 3000))[1] == [1]
    assert info(r)["kvsql_offloaded_calls"] == before


def test_a_temp_table_shadowing_a_main_table_keeps_the_call_here(r):
    sql(r, "db", "create table t(a); insert into t values (1), (2)")
    sql(r, "db", "create temp table t(a); insert into temp.t values (5)")
    before = info(r)["kvsql_offloaded_calls"]
    q = "select sum(a), (%s) from t" % (COUNT_3M % 300)  # short, also sanitized on a busy machine
    assert query(r, "db", q)[1][0] == 5  # TEMP's t, as SQLite resolves it
    # A long one cannot move (a worker would read main's t): it is stopped.
    with pytest.raises(redis.ResponseError, match=STAYED % "that makes or may use TEMP objects"):
        query(r, "db", "select sum(a), (%s) from t" % (COUNT_3M % 3000000))
    assert info(r)["kvsql_offloaded_calls"] == before


# ---- calls that cannot move are stopped, not left to hold the main thread -------------

# The error of a call that could not move and ran past offload-after-us
# plus the margin (budget.c), for the words of its reason.
STAYED = "SQLITE_INTERRUPT SQL stopped after [0-9]+ ms on Redis's main thread: a long call %s cannot move"
LONG_READ = COUNT_3M % 3000000  # about 0.6 s here
LONG_WRITE = "insert into t(a) select count(*) from (%s)" % LONG_READ  # writes one row, at the end


def while_pinging(server, call):
    """Runs call(client) on a client of its own in a thread while another
    client PINGs (at most 100,000 times). Returns the call's outcome and
    the slowest PING in seconds: reported in failure messages, never
    asserted (speed goes in make bench)."""
    other = server.client()
    t, out = run_in_thread(lambda: call(server.client()))
    slowest = 0.0
    for _ in range(100000):
        if not t.is_alive():
            break
        start = time.monotonic()
        assert other.ping()
        slowest = max(slowest, time.monotonic() - start)
    t.join(60)
    assert not t.is_alive()
    return out, slowest


def in_multi(c, cmd, text):
    p = c.pipeline(transaction=True)
    p.execute_command(cmd, "db", text)
    p.execute_command("SQL.QUERY", "db", "select 1")
    first, second = p.execute(raise_on_error=False)
    assert second[1] == [1]  # the rest of the transaction ran
    if isinstance(first, Exception):
        raise first
    return first


def in_eval(c, cmd, text):
    return c.eval("return redis.call(ARGV[1], KEYS[1], ARGV[2])", 1, "db", cmd, text)


FUNCTION = "#!lua name=kvsqltest\nredis.register_function('sqlcall', function(keys, args) " \
           "return redis.call(args[1], keys[1], args[2]) end)"


def in_function(c, cmd, text):
    return c.fcall("sqlcall", 1, "db", cmd, text)


@pytest.mark.parametrize("where,words", [(in_multi, "inside MULTI/EXEC"), (in_eval, "inside a Lua script or function"),
                                         (in_function, "inside a Lua script or function")])
@pytest.mark.parametrize("cmd", ["SQL.QUERY", "SQL.EXEC"])
def test_a_long_call_inside_multi_or_a_script_is_stopped_with_nothing_written(server, where, words, cmd):
    """A call inside MULTI/EXEC or a script cannot move to a worker (no
    client can block there) and ran on the main thread up to
    kvsql.query-timeout-ms (10 s): now it stops past offload-after-us plus
    30 ms, with a reply that says why and what to do."""
    r = server.client()
    r.function_load(FUNCTION, replace=True)
    sql(r, "db", "create table t(a)")
    v0, before = r.get("{db}:v"), info(r)
    out, slowest = while_pinging(server, lambda c: where(c, cmd, LONG_WRITE if cmd == "SQL.EXEC" else LONG_READ))
    assert re.search(STAYED % words, out.get("error", "")), (out, "slowest PING %.3f s" % slowest)
    assert "nothing was written" in out["error"] and "run it on its own" in out["error"]
    after = info(r)
    assert after["kvsql_stay_stops"] == before["kvsql_stay_stops"] + 1
    assert after["kvsql_offloaded_calls"] == before["kvsql_offloaded_calls"]
    assert r.get("{db}:v") == v0 and query(r, "db", "select count(*) from t")[1] == [0]
    # A short call there runs as before.
    assert where(r, cmd, "insert into t values (1)" if cmd == "SQL.EXEC" else "select 7") in (1, [[[b"7", b"int"]], [7]])
    assert r.ping() and not server.problems()


def test_a_long_call_using_temp_objects_is_stopped_and_they_stay(server):
    """Item 6's other half: a call that may use the connection's TEMP
    objects cannot move (they live only in that connection) and ran up to
    the time limit on the main thread; now it stops, nothing written, and
    the TEMP objects are still there."""
    r = server.client()
    sql(r, "db", "create table t(a); create temp table scratch(a); insert into scratch values (1)")
    v0 = r.get("{db}:v")
    for call in (lambda c: query(c, "db", "select count(*) from scratch, (%s)" % LONG_READ),
                 lambda c: sql(c, "db", "insert into t(a) select count(*) from scratch, (%s)" % LONG_READ)):
        out, slowest = while_pinging(server, call)
        assert re.search(STAYED % "that makes or may use TEMP objects", out.get("error", "")), \
            (out, "slowest PING %.3f s" % slowest)
        assert "drop the TEMP objects" in out["error"] and "nothing was written" in out["error"]
    assert r.get("{db}:v") == v0 and query(r, "db", "select count(*) from t")[1] == [0]
    assert query(r, "db", "select count(*) from scratch")[1] == [1]  # the connection kept them


def test_a_long_call_that_makes_temp_objects_is_stopped(server):
    """Its worker finds it made TEMP objects, which must live in the key's
    connection: it runs again on the main thread, where it cannot move."""
    r = server.client()
    r.config_set("kvsql.query-timeout-ms", 60000)  # its worker's run, sanitized on a busy machine, is long
    sql(r, "db", "create table t(a)")
    before = info(r)
    out, slowest = while_pinging(server, lambda c: sql(c, "db", "create temp table x as %s" % LONG_READ))
    assert re.search(STAYED % "that makes or may use TEMP objects", out.get("error", "")), \
        (out, "slowest PING %.3f s" % slowest)
    assert info(r)["kvsql_offload_run_here"] == before["kvsql_offload_run_here"] + 1
    with pytest.raises(redis.ResponseError, match="no such table"):
        query(r, "db", "select count(*) from temp.x")
    assert sql(r, "db", "create temp table y as select 1") == 0  # a short one is made


# ---- one step over a whole table ---------------------------------------------------------

def test_count_of_a_table_is_checked_between_pages(server):
    """Item 7: SELECT count(*) is one step (OP_Count) however big the
    table: it never moved. Now its page reads are checked."""
    r = server.client()
    sql(r, "db", "create table t(id integer primary key, v text)")
    sql(r, "db", "with recursive c(x) as (select 1 union all select x+1 from c where x<200000) "
                 "insert into t select x, 'v'||x from c")
    assert query(r, "db", "select count(*) from t")[1] == [200000]  # warms the connection
    r.config_set("kvsql.offload-after-us", 1)  # any check moves it
    before = info(r)["kvsql_offloaded_calls"]
    assert query(r, "db", "select count(*) from t")[1] == [200000]
    assert info(r)["kvsql_offloaded_calls"] == before + 1


# ---- preparing -------------------------------------------------------------------------

def test_preparing_a_statement_moves_to_a_worker(server):
    """Preparing runs no progress handler, and SQLite expands views of
    views before it authorizes anything: this held the main thread for
    seconds, until the memory limit stopped it there. Now it moves to a
    worker first (where the memory limit stops it)."""
    r = server.client()
    columns = ", ".join("c%d" % i for i in range(6))
    stmts = ["create table t0(x, %s)" % columns, "create table t1(x, %s)" % columns,
             "create view v1 as select * from t0 union all select * from t1"]
    stmts += ["create view v%d as select * from v%d union all select * from v%d" % (i, i - 1, i - 1)
              for i in range(2, 17)]
    sql(r, "db", "; ".join(stmts))
    r.config_set("kvsql.call-memory-kb", 65536)
    r.config_set("kvsql.offload-after-us", 1)  # any check moves it
    before = info(r)["kvsql_offloaded_calls"]
    with pytest.raises(redis.ResponseError, match="more than 65536 KiB"):
        query(r, "db", "select count(*) from v16 where 0")
    assert info(r)["kvsql_offloaded_calls"] == before + 1
    assert r.ping() and not server.problems()
