"""test_library_changes.py - library commits (the `redis` VFS) publish their
row changes to the stream T:changes, in the module's format.

Against real redis-server processes with the module (for SQL.CHANGES and
the module's own entries): the entries a library commit appends equal the
module's for the same SQL; rollbacks, failed statements and ROLLBACK TO
leave none; module and library writers make one stream; a random library
workload replays (tools/changes_replay.py) to the same rows; with capture
off the commit sends no entry and runs no stream command; what capture
cannot publish is refused with nothing written. In-process tests use
Python's sqlite3 (not in sanitized builds); the shell test runs there too.
"""
import json
import os
import random
import sqlite3
import subprocess

import pytest
import redis

from harness import sql
from libhelp import LIB, built, env, pydb, uri
from test_changes import STREAM, entries, module_rows, random_call, replay_rows

pytestmark = pytest.mark.skipif(not built(), reason="libkvsql.so is not built")
needs_inprocess = pytest.mark.skipif(bool(os.environ.get("KVSQL_PRELOAD")),
                                     reason="a sanitized library loads only into a preloaded process")


def stream(r, key):
    return entries(r, "{%s}:changes" % key)


def without_version(es):
    return [{k: v for k, v in e.items() if k != "version"} for e in es]


def shell_lines(server, key, lines):
    """The sqlite3 shell on key, one statement per line, going on after
    errors (no -bail); returns stderr."""
    p = subprocess.run(["sqlite3", "-cmd", ".load " + LIB, "-cmd", ".open " + uri(server, key)],
                       input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120, env=env())
    return p.stderr


# The same statements, each its own transaction, through the module and the library.
SAME_SQL = [
    "create table t(id integer primary key, v text, b blob, x real, n)",
    "insert into t values (1, 'a', x'00ff', 1.5, null), (2, 'b', null, 100, 7)",
    "update t set v = 'z', n = n + 1 where id = 2",
    "update t set id = 5 where id = 1",  # a new rowid: a delete and an insert
    "delete from t where id = 2",
    "create table w(k text, n int, v, primary key (n, k)) without rowid",
    "insert into w values ('a', 1, 2), ('b', 2, 'text''s')",
    "update w set n = 5 where k = 'a'",
    "delete from w where k = 'b'",
    "create table r(a, b)",  # rowids without an INTEGER PRIMARY KEY
    "insert into r values (1, 2)",
    "alter table r add column c default 'new'",
    "update r set c = 'set'",
    "pragma user_version = 3",  # pages, no row: a commit entry
    "create index i on t(v)",
]


def test_library_entries_equal_the_modules_for_the_same_sql(servers):
    s = servers()
    r = s.client()
    r.execute_command("SQL.CHANGES", "m", "ON")
    r.execute_command("SQL.CHANGES", "l", "ON")
    for q in SAME_SQL:
        sql(r, "m", q)
    assert shell_lines(s, "l", [q + ";" for q in SAME_SQL]) == ""
    mod, lib = stream(r, "m"), stream(r, "l")
    assert without_version(lib) == without_version(mod)
    assert [e["version"] for e in lib] == [e["version"] for e in mod]  # one version per commit, from 0 ("on")
    assert [e["op"] for e in lib].count("commit") == 1
    assert module_rows(r, "l") == module_rows(r, "m")


def test_rollback_failed_statements_and_rollback_to_leave_no_entry(servers):
    s = servers()
    r = s.client()
    r.execute_command("SQL.CHANGES", "db", "ON")
    assert shell_lines(s, "db", [
        "create table u(id integer primary key, n int unique);",
        "create table log(x);",
        "create trigger tr after insert on u begin insert into log values (new.id); end;",
        "insert into u values (1, 1), (2, 2);"]) == ""
    before = len(stream(r, "db"))
    conflict = "insert into u select id + 10, n + 10 from u union all select 99, 1;"  # rows in, then a conflict
    err = shell_lines(s, "db", [
        "begin;", "insert into u values (3, 3);", "rollback;",
        conflict,  # autocommit: the statement's transaction is rolled back
        "begin;", "insert into u values (4, 4);",
        conflict,  # inside a transaction: SQLite undoes the statement only
        "savepoint s;", "update u set n = 40 where id = 4;", "delete from u where id = 1;", "rollback to s;",
        "savepoint s2;", "update u set n = 41 where id = 4;", "release s2;",
        "commit;"])
    assert err.count("UNIQUE constraint failed") == 2, err
    got = stream(r, "db")[before:]
    assert [(e["op"], e["table"], json.loads(e["key"])[0][1]) for e in got] == [
        ("insert", "u", "4"), ("insert", "log", "3"), ("update", "u", "4")]
    assert json.loads(got[2]["new"])["n"] == ["integer", "41"]
    assert len({e["version"] for e in got}) == 1
    assert module_rows(r) == {"log": [(1, 1), (2, 2), (3, 4)], "u": [(1, 1, 1), (2, 2, 2), (4, 4, 41)]}


def test_changes_made_by_triggers_follow_their_statement(servers):
    s = servers()
    r = s.client()
    r.execute_command("SQL.CHANGES", "db", "ON")
    assert shell_lines(s, "db", [
        "create table t(id integer primary key, n int unique);",
        "create table log(x);",
        "create trigger b before insert on t begin insert into log values (new.id); end;",
        "create view v as select id, n from t;",
        "create trigger iv instead of insert on v begin insert into log values (-new.id); end;",
        "insert into t values (1, 1);"]) == ""
    before = len(stream(r, "db"))
    err = shell_lines(s, "db", [
        "begin;",
        "insert into t values (2, 1);",  # the BEFORE trigger logs, then the conflict undoes both
        "insert into v values (3, 3);",  # only the INSTEAD OF trigger changes a row; SQLite counts none
        "commit;"])
    assert "UNIQUE constraint failed" in err
    got = stream(r, "db")[before:]
    assert [(e["op"], e["table"], json.loads(e["key"])[0][1], json.loads(e["new"])["x"][1]) for e in got] == [
        ("insert", "log", "2", "-3")]


@needs_inprocess
def test_module_and_library_writers_make_one_stream(servers, tmp_path):
    s = servers()
    r = s.client()
    r.execute_command("SQL.CHANGES", "db", "ON")
    c = pydb(s, "db")
    sql(r, "db", "create table t(k integer primary key, a)")
    for i in range(30):
        if i % 3:
            c.execute("insert into t values (?, ?)", (i, "lib"))
        else:
            sql(r, "db", "insert into t values (?, 'mod')", str(i))
        if i % 5 == 4:
            c.execute("update t set a = a || '+' where k = ?", (i - 1,))
    versions = [int(e["version"]) for e in stream(r, "db")]
    assert versions == sorted(versions) and set(versions) == set(range(0, int(r.get("{db}:v")) + 1))
    assert replay_rows(r, tmp_path) == module_rows(r)


@needs_inprocess
def test_replay_of_a_random_library_workload_gives_the_same_rows(servers, tmp_path):
    s = servers()
    r = s.client()
    r.execute_command("SQL.CHANGES", "db", "ON")
    c = pydb(s, "db")
    rnd = random.Random(12)
    c.execute("create table t1(k integer primary key, a, b)")
    c.execute("create table t2(k int primary key, a, b) without rowid")
    c.execute("create table t3(k, a, b)")
    c.execute("create unique index u3 on t3(a)")  # conflicts: statements that fail half-way
    tables = ["t1", "t2", "t3"]
    for i in range(250):
        if i == 100:
            c.execute("alter table t3 add column c default 'new'")
        if i == 170:
            c.execute("create table t4(k integer primary key, a, b)")
            c.execute("drop table t1")
            tables = ["t2", "t3", "t4"]
        for stmt in random_call(rnd, tables).split("; "):
            try:
                c.execute(stmt)
            except sqlite3.Error:
                pass  # a failed statement: inside a transaction, the transaction goes on
        if c.in_transaction and rnd.random() < 0.5:
            c.execute("commit")
        elif c.in_transaction:
            c.execute("rollback")
    assert replay_rows(r, tmp_path) == module_rows(r)


def monitored(server, action):
    """The commands server runs (scripts' included) while action runs."""
    seen = []
    r = server.client()
    with r.monitor() as m:
        action()
        r.execute_command("ECHO", "monitored-end")
        while True:
            cmd = m.next_command()["command"]
            if cmd.startswith("ECHO monitored-end"):
                return seen
            seen.append(cmd)


@needs_inprocess
def test_with_capture_off_a_commit_sends_and_runs_nothing_for_changes(servers):
    s = servers()
    r = s.client()
    c = pydb(s, "db")
    c.execute("create table t(a)")
    off = monitored(s, lambda: c.execute("insert into t values ('x')"))
    evals = [cmd for cmd in off if cmd.startswith("EVAL")]
    assert len(evals) == 2  # begin (which takes the lease: test_library_trips.py), commit
    stream_cmds = [cmd for cmd in off if "{db}:changes" in cmd and not cmd.startswith("EVAL")]
    assert [cmd.split()[0] for cmd in stream_cmds] == ["EXISTS", "EXISTS"]  # begin and commit ask; nothing else
    assert not r.exists(STREAM)
    r.execute_command("SQL.CHANGES", "db", "ON")
    on = monitored(s, lambda: c.execute("insert into t values ('y')"))
    assert sum(cmd.startswith("XADD") for cmd in on) == 1


def test_ddl_first_in_a_deferred_transaction_after_capture_was_turned_on(servers):
    s = servers()
    r = s.client()
    assert shell_lines(s, "db", ["create table a(x);",
                                 ".shell redis-cli -p %d SQL.CHANGES db ON" % s.port,
                                 "begin;", "create table b(y);", "insert into b values (1);", "commit;"]) == ""
    assert [e["op"] for e in entries(r)] == ["on", "schema", "insert"]


@needs_inprocess
def test_what_capture_cannot_publish_is_refused_with_nothing_written(servers):
    s = servers()
    r = s.client()
    c = pydb(s, "db")
    c.execute("create table t(a)")
    c.execute("begin")
    c.execute("insert into t values (1)")
    r.execute_command("SQL.CHANGES", "db", "ON")  # after this transaction's begin
    v = r.get("{db}:v")
    with pytest.raises(sqlite3.OperationalError):
        c.execute("commit")
    if c.in_transaction:
        c.execute("rollback")
    assert r.get("{db}:v") == v
    c.execute("insert into t values (2)")  # again: captured
    assert [e["op"] for e in entries(r)] == ["on", "insert"]
    for refused in ["vacuum", "create table c as select * from t"]:
        with pytest.raises(sqlite3.Error):
            c.execute(refused)
        assert "capture is on" in c.execute("select kvsql_error()").fetchone()[0]
    r.delete(STREAM)
    r.set(STREAM, "x")
    with pytest.raises(sqlite3.Error):
        c.execute("insert into t values (3)")
    assert int(r.get("{db}:v")) == int(v) + 1 and r.get(STREAM) == b"x"
    assert c.execute("select count(*) from t").fetchone()[0] == 1


@needs_inprocess
def test_a_replaced_trace_callback_makes_commits_fail_not_lie(servers):
    s = servers()
    r = s.client()
    r.execute_command("SQL.CHANGES", "db", "ON")
    c = pydb(s, "db")
    c.execute("create table t(a)")
    c.set_trace_callback(lambda q: None)  # replaces kvsql's trace callback
    with pytest.raises(sqlite3.Error):
        c.execute("insert into t values (1)")
    assert "trace callback" in c.execute("select kvsql_error()").fetchone()[0]
    assert [e["op"] for e in entries(r)] == ["on", "schema"]


# ---- a spread database (docs/FORMAT.md, "The spread layout") -----------------

def spread_lines(server, key, lines):
    p = subprocess.run(["sqlite3", "-cmd", ".load " + LIB, "-cmd", ".open " + uri(server, key, layout="spread")],
                       input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120, env=env())
    return p.stderr


def test_a_spread_database_publishes_the_modules_entries_for_the_same_sql(servers):
    s = servers()
    r = s.client()
    r.execute_command("SQL.CHANGES", "m", "ON")
    r.execute_command("SQL.CHANGES", "sp", "ON")
    for q in SAME_SQL:
        sql(r, "m", q)
    assert spread_lines(s, "sp", [q + ";" for q in SAME_SQL]) == ""
    assert r.hget("sp", "layout") == b"spread"
    mod, lib = stream(r, "m"), stream(r, "sp")
    assert without_version(lib) == without_version(mod)
    assert [e["version"] for e in lib] == [e["version"] for e in mod]


def test_on_a_spread_database_rollbacks_leave_no_entry(servers):
    s = servers()
    r = s.client()
    r.execute_command("SQL.CHANGES", "sp", "ON")
    assert spread_lines(s, "sp", ["create table u(id integer primary key, n int unique);",
                                  "insert into u values (1, 1), (2, 2);"]) == ""
    before = len(stream(r, "sp"))
    err = spread_lines(s, "sp", [
        "begin;", "insert into u values (3, 3);", "rollback;",
        "insert into u select id + 10, n + 10 from u union all select 99, 1;",
        "begin;", "insert into u values (4, 4);",
        "savepoint s;", "update u set n = 40 where id = 4;", "rollback to s;",
        "commit;"])
    assert err.count("UNIQUE constraint failed") == 1, err
    got = stream(r, "sp")[before:]
    assert [(e["op"], e["table"], json.loads(e["key"])[0][1]) for e in got] == [("insert", "u", "4")]


@needs_inprocess
def test_what_capture_cannot_publish_on_a_spread_database_is_refused_with_nothing_written(servers):
    s = servers()
    r = s.client()
    c = pydb(s, "sp", layout="spread")
    c.execute("create table t(a)")
    c.execute("begin")
    c.execute("insert into t values (1)")
    r.execute_command("SQL.CHANGES", "sp", "ON")  # after this transaction's begin
    v = r.get("{sp}:v")
    with pytest.raises(sqlite3.OperationalError):
        c.execute("commit")
    if c.in_transaction:
        c.execute("rollback")
    assert r.get("{sp}:v") == v
    c.execute("insert into t values (2)")  # again: captured
    assert [e["op"] for e in stream(r, "sp")] == ["on", "insert"]
    r.delete("{sp}:changes")
    r.set("{sp}:changes", "x")
    with pytest.raises(sqlite3.Error):
        c.execute("insert into t values (3)")
    assert int(r.get("{sp}:v")) == int(v) + 1 and r.get("{sp}:changes") == b"x"
    assert c.execute("select count(*) from t").fetchone()[0] == 1
