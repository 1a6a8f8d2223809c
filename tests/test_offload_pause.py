"""test_offload_pause.py - no offloaded write while Redis pauses writes (issue #22, item 1).

Redis 7.0 pauses writes for CLIENT PAUSE ... WRITE, for FAILOVER and for
SHUTDOWN while a replica lags, and aborts (an assert in
propagatePendingCommands) when anything is propagated meanwhile. A long
SQL.EXEC runs on a worker thread (test_offload.py) and lands its pages
later: in one step, or staged in steps and published (test_offload_stage.py).
Every one of those places must wait out the pause (src/module/offload/offload.c,
stage.c). These tests start such a write, start a pause while it runs, see
the worker wait (INFO kvsql_offload_pause_waits) with nothing written, end
the pause, and check the write landed once, the replica equals the master
(DEBUG DIGEST) and the server is alive (the fixture fails a test whose
server crashed). Before the fix each of them crashed the master. No timing
is asserted."""
import os
import signal

import pytest
import redis

from harness import attach_replica, query, run_in_thread, sql, wait_for

ROWS = 200000
FILL = ("with recursive c(x) as (select 1 union all select x+1 from c where x<%d) "
        "insert into t select x, 'v'||x from c" % ROWS)
# About a second on a worker, and under 4 MiB of pages: written in one step.
SLOW_WRITE = "update t set v = v || 'x' where (select count(*) from t t2 where t2.id between t.id and t.id + 100) > 0"
MARKED = "select count(*) from t where v like '%x'"

STAGED_ROWS = 20000  # rows of about 300 bytes: about 6 MiB of pages, staged
BIG_WRITE = ("with recursive c(x) as (select 1 union all select x+1 from c where x < %d) "
             "insert into t select x, printf('%%0300d', x) from c" % STAGED_ROWS)
STAGE = "{db}:wstage"
STEP_PAUSE_MS = 300  # the worker waits between staging steps: a test acts meanwhile


def info(r):
    return r.info("kvsql")


def pause_waits(r):
    return info(r).get("kvsql_offload_pause_waits", 0)


def version(r):
    v = r.get("{db}:v")
    return int(v) if v else 0


def caught_up(m, rc):
    return m.info("replication")["master_repl_offset"] == rc.info("replication")["slave_repl_offset"]


def same_data(m, rc):
    wait_for(lambda: caught_up(m, rc), what="the replica to catch up")
    assert m.execute_command("DEBUG", "DIGEST") == rc.execute_command("DEBUG", "DIGEST")


class Write:
    """The write under test: 'one-step' (SLOW_WRITE) or 'staged' (BIG_WRITE)."""

    def __init__(self, kind):
        self.kind = kind

    def prepare(self, m):
        sql(m, "db", "create table t(id integer primary key, v text)")
        if self.kind == "one-step":
            sql(m, "db", FILL)
        else:
            sql(m, "db", "insert into t values (0, 'first')")

    def start(self, server):
        text = SLOW_WRITE if self.kind == "one-step" else BIG_WRITE
        return run_in_thread(lambda: sql(server.client(), "db", text))

    def running(self, m):
        """True once the write runs on its worker (staged: its steps began)."""
        if self.kind == "one-step":
            return info(m)["kvsql_worker_calls_running"] > 0
        return m.exists(STAGE) == 1

    def landed(self, r):
        if self.kind == "one-step":
            return query(r, "db", MARKED)[1] == [ROWS]
        return query(r, "db", "select count(*) from t")[1] == [STAGED_ROWS + 1]

    def untouched(self, r):
        if self.kind == "one-step":
            return query(r, "db", MARKED)[1] == [0]
        return query(r, "db", "select count(*) from t")[1] == [1]

    def reply(self):
        return ROWS if self.kind == "one-step" else STAGED_ROWS


def servers_for(servers, monkeypatch, kind):
    """A master (AOF on) with a replica; staged writes pause between steps."""
    if kind == "staged":
        monkeypatch.setenv("KVSQL_TEST_STAGE_PAUSE_MS", str(STEP_PAUSE_MS))
    master = servers(args=["--appendonly", "yes"])
    replica = attach_replica(servers, master)
    return master, replica


def waits_during_pause(m, w, t, v0, before):
    """The worker reached a write during the pause and waits: nothing written."""
    wait_for(lambda: pause_waits(m) > before, timeout=60, what="the write to wait out the pause")
    assert t.is_alive()  # no reply yet
    assert version(m) == v0 and w.untouched(m)


@pytest.mark.parametrize("kind", ["one-step", "staged"])
def test_a_write_waits_out_client_pause_write(servers, monkeypatch, kind):
    master, replica = servers_for(servers, monkeypatch, kind)
    m, rc = master.client(), replica.client()
    w = Write(kind)
    w.prepare(m)
    v0, before = version(m), pause_waits(m)
    t, out = w.start(master)
    wait_for(lambda: w.running(m), what="the write on its worker")
    m.execute_command("CLIENT", "PAUSE", 60000, "WRITE")
    waits_during_pause(m, w, t, v0, before)
    m.execute_command("CLIENT", "UNPAUSE")
    t.join(60)
    assert out == {"value": w.reply()}
    assert version(m) == v0 + 1 and w.landed(m)
    same_data(m, rc)
    assert w.landed(rc)
    assert not m.exists(STAGE)


@pytest.mark.parametrize("kind", ["one-step", "staged"])
def test_a_write_waits_out_a_failover_to_a_stopped_replica(servers, monkeypatch, kind):
    """FAILOVER pauses writes until the replica has everything; a stopped
    replica never does, so the pause lasts until FAILOVER ABORT."""
    master, replica = servers_for(servers, monkeypatch, kind)
    m, rc = master.client(), replica.client()
    w = Write(kind)
    w.prepare(m)
    wait_for(lambda: caught_up(m, rc), what="the replica to catch up")
    v0, before = version(m), pause_waits(m)
    t, out = w.start(master)
    wait_for(lambda: w.running(m), what="the write on its worker")
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        m.set("after-stop", "1")  # the replica now lags
        m.execute_command("FAILOVER", "TIMEOUT", 60000)
        waits_during_pause(m, w, t, v0, before)
        m.execute_command("FAILOVER", "ABORT")
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
    t.join(60)
    assert out == {"value": w.reply()}
    assert m.info("replication")["role"] == "master"
    assert version(m) == v0 + 1 and w.landed(m)
    same_data(m, rc)


@pytest.mark.parametrize("kind", ["one-step", "staged"])
def test_a_shutdown_with_a_lagging_replica_saves_and_writes_nothing_half(servers, monkeypatch, kind):
    """SHUTDOWN pauses writes while it waits for a lagging replica; the
    write waits too, so the final save runs, every acknowledged write is in
    it, and the write in flight is not (its client never got a reply)."""
    master, replica = servers_for(servers, monkeypatch, kind)
    m = master.client()
    m.config_set("shutdown-timeout", 60)
    w = Write(kind)
    w.prepare(m)
    v0, before = version(m), pause_waits(m)
    t, out = w.start(master)
    wait_for(lambda: w.running(m), what="the write on its worker")
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        m.set("acknowledged", "yes")  # the replica now lags
        stopper, _ = run_in_thread(lambda: master.client().shutdown())
        waits_during_pause(m, w, t, v0, before)
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)  # it catches up: the shutdown goes on
    stopper.join(60)
    t.join(60)
    master.proc.wait(timeout=30)
    assert "error" in out  # the connection closed with no reply
    assert "ASSERTION" not in master.log()
    master.start()
    m = master.client()
    assert m.get("acknowledged") == b"yes"
    assert version(m) == v0 and w.untouched(m)
    assert not m.exists(STAGE) or 0 < m.pttl(STAGE) <= 60000
    assert query(m, "db", "pragma integrity_check")[1] == [b"ok"]


def test_a_staged_write_waits_to_publish(servers, monkeypatch):
    """The pause begins after the last staging step, before the publish:
    the publish waits."""
    master, replica = servers_for(servers, monkeypatch, "staged")
    m, rc = master.client(), replica.client()
    w = Write("staged")
    w.prepare(m)
    # The same write on another key first: how many fields its staged hash ends with.
    sql(m, "probe", "create table t(id integer primary key, v text)")
    sql(m, "probe", "insert into t values (0, 'first')")
    sql(m, "probe", BIG_WRITE)
    fields = m.hlen("probe")
    v0, before = version(m), pause_waits(m)
    t, out = w.start(master)
    wait_for(lambda: m.hlen(STAGE) == fields, timeout=60, interval=0.005, what="every page staged")
    m.execute_command("CLIENT", "PAUSE", 60000, "WRITE")
    waits_during_pause(m, w, t, v0, before)
    assert m.hlen(STAGE) == fields
    m.execute_command("CLIENT", "UNPAUSE")
    t.join(60)
    assert out == {"value": STAGED_ROWS}
    assert version(m) == v0 + 1 and w.landed(m) and not m.exists(STAGE)
    same_data(m, rc)


def test_the_time_limit_ends_the_wait_with_nothing_written(servers, monkeypatch):
    """The wait counts toward kvsql.query-timeout-ms."""
    master, replica = servers_for(servers, monkeypatch, "one-step")
    m, rc = master.client(), replica.client()
    w = Write("one-step")
    w.prepare(m)
    m.config_set("kvsql.query-timeout-ms", 8000)  # more than the SQL takes
    v0, before = version(m), pause_waits(m)
    t, out = w.start(master)
    wait_for(lambda: w.running(m), what="the write on its worker")
    m.execute_command("CLIENT", "PAUSE", 60000, "WRITE")
    waits_during_pause(m, w, t, v0, before)
    t.join(60)
    assert "SQLITE_INTERRUPT" in out.get("error", "") and "nothing was written" in out["error"]
    m.execute_command("CLIENT", "UNPAUSE")
    assert version(m) == v0 and w.untouched(m)
    same_data(m, rc)


def test_a_client_gone_during_the_pause_gets_nothing_written(servers, monkeypatch):
    master, replica = servers_for(servers, monkeypatch, "one-step")
    m, rc = master.client(), replica.client()
    w = Write("one-step")
    w.prepare(m)
    v0, before = version(m), pause_waits(m)
    writer = master.client()
    wid = writer.client_id()
    t, out = run_in_thread(lambda: sql(writer, "db", SLOW_WRITE))
    wait_for(lambda: w.running(m), what="the write on its worker")
    m.execute_command("CLIENT", "PAUSE", 60000, "WRITE")
    waits_during_pause(m, w, t, v0, before)
    m.client_kill_filter(_id=wid)
    t.join(60)
    m.execute_command("CLIENT", "UNPAUSE")
    wait_for(lambda: info(m)["kvsql_worker_calls_running"] == 0, what="the worker to end")
    assert version(m) == v0 and w.untouched(m)
    same_data(m, rc)


def test_a_long_call_that_makes_temp_objects_waits_before_it_runs_again(servers, monkeypatch):
    """A long call that made TEMP objects runs again on the main thread, in
    its reply (offload.c, run_here); a write there must not run during the
    pause either: the worker waits it out before handing it back. There,
    unable to move, it is stopped past offload-after-us plus 30 ms with
    nothing written (test_main_thread.py)."""
    master, replica = servers_for(servers, monkeypatch, "one-step")
    m, rc = master.client(), replica.client()
    w = Write("one-step")
    w.prepare(m)
    v0, before = version(m), pause_waits(m)
    text = ("insert into t(id, v) select -1, count(*) from t a where (select count(*) from t t2 where t2.id "
            "between a.id and a.id + 100) > 0; create temp table tt as select 1")
    t, out = run_in_thread(lambda: sql(master.client(), "db", text))
    wait_for(lambda: w.running(m), what="the call on its worker")
    m.execute_command("CLIENT", "PAUSE", 60000, "WRITE")
    waits_during_pause(m, w, t, v0, before)
    assert query(m, "db", "select count(*) from t where id = -1")[1] == [0]
    m.execute_command("CLIENT", "UNPAUSE")
    t.join(60)
    assert "makes or may use TEMP objects cannot move" in out.get("error", ""), out
    assert query(m, "db", "select count(*) from t where id = -1")[1] == [0]
    assert version(m) == v0
    assert info(m)["kvsql_offload_run_here"] >= 1
    same_data(m, rc)
