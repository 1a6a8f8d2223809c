"""test_acl_aux.py - the caller's ACL key patterns cover the keys kvsql writes for it (issue #22, item 10).

Besides the key it names, a write changes the database's auxiliary keys
({K}:v, {K}:readers, {K}:undo, {K}:undo:idx, {K}:undo:ver, {K}:log,
{K}:changes; a big offloaded write also {K}:wstage and {K}:stage:old;
SQL.CHANGES {K}:changes and {K}:changes:cfg; SQL.DROP every one). Redis cannot see those
names, so kvsql checks them against the caller's key permissions before
the first write (src/module/commands/acl.c): a user whose patterns do not cover one
gets NOPERM naming it, and nothing is written."""
import pytest
import redis

from harness import query, sql

BIG = ("with recursive c(x) as (select 1 union all select x+1 from c where x < 20000) "
       "insert into t select x, printf('%0300d', x) from c")  # about 6 MiB of pages: staged
WRITTEN_AUX = ["{db}:v", "{db}:readers", "{db}:undo", "{db}:undo:idx", "{db}:undo:ver", "{db}:log",
               "{db}:changes"]


def user(server, name, *rules):
    admin = server.client()
    admin.acl_setuser(name, enabled=True, passwords=["+pw"], commands=[], keys=[], reset=True)
    admin.execute_command("ACL", "SETUSER", name, "+sql.exec", "+sql.query", "+sql.changes", "+sql.drop",
                          *rules)
    return server.client(username=name, password="pw")


def test_a_user_allowed_only_the_key_cannot_make_kvsql_write_its_aux_keys(server):
    admin = server.client()
    u = user(server, "only-db", "~db")
    with pytest.raises(redis.exceptions.NoPermissionError, match=r"\{db\}:v.*nothing was written"):
        sql(u, "db", "create table t(a)")
    assert admin.keys("*") == []
    # Read-only calls write nothing besides: allowed.
    sql(admin, "db", "create table t(a); insert into t values (1)")
    assert query(u, "db", "select a from t")[1] == [1]
    with pytest.raises(redis.exceptions.NoPermissionError):
        sql(u, "db", "insert into t values (2)")
    assert query(admin, "db", "select count(*) from t")[1] == [1]


def test_a_big_write_leaves_stage_keys_it_may_not_write(server):
    """The example of the issue: a staged write used to UNLINK {db}:wstage
    and RENAME over {db}:stage:old whatever the caller's patterns. Now a
    user who may not write them gets the write in one step, not staged."""
    admin = server.client()
    sql(admin, "db", "create table t(id integer primary key, v text)")
    admin.set("{db}:wstage", "the admin's")
    admin.set("{db}:stage:old", "the admin's too")
    u = user(server, "no-stage", "~db", *["~" + k for k in WRITTEN_AUX])
    staged = admin.info("kvsql")["kvsql_offload_staged_writes"]
    assert sql(u, "db", BIG) == 20000
    assert admin.info("kvsql")["kvsql_offload_staged_writes"] == staged
    assert admin.get("{db}:wstage") == b"the admin's"
    assert admin.get("{db}:stage:old") == b"the admin's too"
    assert query(admin, "db", "select count(*) from t")[1] == [20000]
    # The same write by a user who may write them is staged.
    staging = user(server, "stage", "~db", "~{db}:*")
    admin.delete("{db}:wstage", "{db}:stage:old")
    assert sql(staging, "db", BIG.replace("select x,", "select x + 20000,")) == 20000
    assert admin.info("kvsql")["kvsql_offload_staged_writes"] == staged + 1
    assert query(admin, "db", "select count(*) from t")[1] == [40000]


def test_sql_changes_needs_its_stream_and_config(server):
    admin = server.client()
    sql(admin, "db", "create table t(a)")
    u = user(server, "no-cfg", "~db", *["~" + k for k in WRITTEN_AUX])
    with pytest.raises(redis.exceptions.NoPermissionError, match=r"\{db\}:changes:cfg"):
        u.execute_command("SQL.CHANGES", "db", "ON")
    assert not admin.exists("{db}:changes:cfg") and not admin.exists("{db}:changes")
    assert sql(u, "db", "insert into t values (1)") == 1  # every key a write writes is allowed


def test_patterns_covering_the_aux_keys_allow_everything(server):
    u = user(server, "tenant", "~tenant1:*", "~{tenant1:*")
    assert sql(u, "tenant1:db", "create table t(id integer primary key, v text)") == 0
    assert sql(u, "tenant1:db", BIG) == 20000
    assert u.execute_command("SQL.CHANGES", "tenant1:db", "ON") == b"OK"
    assert query(u, "tenant1:db", "select count(*) from t")[1] == [20000]


def test_sql_drop_needs_every_aux_key(server):
    admin = server.client()
    sql(admin, "db", "create table t(a)")
    u = user(server, "no-drop", "~db", *["~" + k for k in WRITTEN_AUX])
    with pytest.raises(redis.exceptions.NoPermissionError, match=r"\{db\}:"):
        u.execute_command("SQL.DROP", "db")
    assert admin.exists("db") and admin.exists("{db}:v")
    full = user(server, "drop", "~db", "~{db}:*")
    assert full.execute_command("SQL.DROP", "db") >= 2
    assert admin.keys("*") == []


@pytest.mark.parametrize("how", ["at once", "queued in MULTI"])
def test_a_check_that_passed_is_forgotten_when_the_rules_change(server, how):
    """A writing call's check of its auxiliary keys is remembered for the
    user and the key (acl.c); an ACL command, run at once or at EXEC,
    forgets it, so the next call sees the new rules."""
    admin = server.client()
    u = user(server, "changing", "~db", "~{db}:*")
    sql(u, "db", "create table t(a)")
    sql(u, "db", "insert into t values (1)")  # the check passed: remembered
    if how == "at once":
        admin.execute_command("ACL", "SETUSER", "changing", "resetkeys", "~db")
    else:
        queuer = server.client()
        pipe = queuer.pipeline(transaction=True)
        pipe.execute_command("ACL", "SETUSER", "changing", "resetkeys", "~db")
        pipe.execute()
    with pytest.raises(redis.exceptions.NoPermissionError, match=r"\{db\}:v.*nothing was written"):
        sql(u, "db", "insert into t values (2)")
    assert query(admin, "db", "select count(*) from t")[1] == [1]
