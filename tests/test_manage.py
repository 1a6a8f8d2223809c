"""test_manage.py - managing databases as a whole against real redis-server
processes: `kvsql ls/rm/cp/mv` (tools/kvsql.c, tools/kvsql_keys.c), the
module's SQL.DROP (src/module/commands/drop.c), and what the tool promises about
files: an export never destroys the copy it replaces, an import refuses
what is not a database, progress shows on a terminal only."""
import os
import pty
import select
import sqlite3
import subprocess

import pytest

from harness import attach_replica, monitored_commands, sql, wait_for
from test_cli import KVSQL, kvsql, make_db, url
from libhelp import env


def aux_keys(key):
    """Every auxiliary key name of key (docs/FORMAT.md), the format's list."""
    t = key if "{" in key and "}" in key[key.index("{") + 2:] else "{%s}" % key
    return [t + s for s in (":v", ":lease", ":readers", ":undo", ":undo:idx", ":undo:ver", ":log", ":changes",
                            ":changes:cfg", ":stage", ":stage:old", ":id", ":wstage")]


def keys_of(r, key):
    return sorted(k.decode() for k in r.keys("*") if k.decode() == key or k.decode() in aux_keys(key))


@pytest.fixture(params=[True, False], ids=["module", "plain"])
def srv(request, servers):
    return servers(module=request.param)


def imported(srv, tmp_path, key, rows=20):
    src = str(tmp_path / ("%s.db" % abs(hash(key))))
    make_db(src, rows=rows).close()
    res = kvsql("import", "--replace", src, url(srv, key))
    assert res.returncode == 0, res.stderr
    return src


# ---- ls ---------------------------------------------------------------------

def test_ls_lists_databases_with_layout_pages_size_version(srv, tmp_path):
    imported(srv, tmp_path, "shop")
    imported(srv, tmp_path, "{app}orders", rows=400)
    r = srv.client()
    r.hset("plain_hash", "a", "b")  # a hash that is no database
    r.set("{shop}:lease", "x")      # an auxiliary key is not listed
    res = kvsql("ls", "redis://127.0.0.1:%d" % srv.port)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["KEY", "LAYOUT", "PAGES", "SIZE", "VERSION"]
    rows = {l.split()[0]: l.split()[1:] for l in lines[1:]}
    assert set(rows) == {"shop", "{app}orders"}, res.stdout
    for key in rows:
        layout, npages, size, version = rows[key]
        assert layout == "hash/4096" and int(npages) == r.hlen(key) and int(size) == 4096 * r.hlen(key)
        assert version == (r.get(aux_keys(key)[0]) or b"0").decode()


def test_ls_on_a_cluster_lists_every_master(clusters, tmp_path):
    c = clusters(masters=3)
    keys = ["db%d" % i for i in range(12)]
    for k in keys:
        imported(c.nodes[0], tmp_path, k, rows=3)
    res = kvsql("ls", "redis://127.0.0.1:%d" % c.nodes[0].port)
    assert res.returncode == 0, res.stderr
    assert sorted(l.split()[0] for l in res.stdout.splitlines()[1:]) == sorted(keys)


# ---- rm -----------------------------------------------------------------------

def test_rm_removes_the_database_and_every_auxiliary_key(srv, tmp_path):
    imported(srv, tmp_path, "k")
    r = srv.client()
    for aux in aux_keys("k")[3:-1]:  # leftovers of every kind (T:wstage would say a write is on)
        r.set(aux, "x")
    r.set("other", "y")
    res = kvsql("rm", url(srv, "k"))
    assert res.returncode == 0 and "removed k" in res.stdout, res.stderr
    assert keys_of(r, "k") == [] and r.get("other") == b"y"
    res = kvsql("rm", url(srv, "k"))
    assert res.returncode == 1 and "no database there" in res.stderr


def test_rm_is_refused_while_a_writer_holds_the_lease_unless_forced(srv, tmp_path):
    imported(srv, tmp_path, "k")
    r = srv.client()
    r.set("{k}:lease", "token", px=60000)
    res = kvsql("rm", url(srv, "k"))
    assert res.returncode == 1 and "holds its lease" in res.stderr and "--force" in res.stderr
    assert r.exists("k")
    res = kvsql("rm", "--force", url(srv, "k"))
    assert res.returncode == 0, res.stderr
    assert keys_of(r, "k") == []


def test_rm_refuses_a_key_of_another_type(srv):
    srv.client().set("s", "x")
    res = kvsql("rm", url(srv, "s"))
    assert res.returncode == 1 and "holds a string" in res.stderr
    assert srv.client().get("s") == b"x"


# ---- cp and mv ----------------------------------------------------------------

def test_cp_copies_to_another_key_and_server(servers, tmp_path):
    a, b = servers(module=False), servers(module=False)
    src = imported(a, tmp_path, "k", rows=50)
    assert kvsql("cp", url(a, "k"), url(a, "k2")).returncode == 0
    res = kvsql("cp", url(a, "k"), url(b, "k"))
    assert res.returncode == 0, res.stderr
    for server, key in ((a, "k2"), (b, "k")):
        out = str(tmp_path / ("out-%d-%s.db" % (server.port, key)))
        assert kvsql("export", url(server, key), out).returncode == 0
        assert sqlite3.connect(out).execute("SELECT count(*), sum(v) FROM t").fetchone() == \
            sqlite3.connect(src).execute("SELECT count(*), sum(v) FROM t").fetchone()
    res = kvsql("cp", url(a, "k"), url(b, "k"))
    assert res.returncode == 1 and "add --replace" in res.stderr
    assert kvsql("cp", "--replace", url(a, "k"), url(b, "k")).returncode == 0


def test_mv_moves_and_removes_the_source(srv, tmp_path):
    imported(srv, tmp_path, "k", rows=30)
    r = srv.client()
    res = kvsql("mv", url(srv, "k"), url(srv, "{t}new"))
    assert res.returncode == 0 and "moved k to {t}new" in res.stdout, res.stderr
    assert keys_of(r, "k") == []
    res = kvsql("shell", url(srv, "{t}new"), "SELECT count(*) FROM t")
    assert res.stdout.strip() == "30", res.stderr


def test_mv_is_refused_while_a_writer_holds_the_source(srv, tmp_path):
    imported(srv, tmp_path, "k")
    r = srv.client()
    r.set("{k}:lease", "token", px=60000)
    res = kvsql("mv", url(srv, "k"), url(srv, "k2"))
    assert res.returncode == 1 and "holds its lease" in res.stderr
    assert r.exists("k") and not r.exists("k2")


# ---- export and import keep good copies -----------------------------------------

def test_failed_export_replace_keeps_the_old_file(srv, tmp_path):
    imported(srv, tmp_path, "k", rows=300)
    backup = str(tmp_path / "backup.db")
    assert kvsql("export", url(srv, "k"), backup).returncode == 0
    before = open(backup, "rb").read()
    r = srv.client()
    r.hset("k", str(r.hlen("k") - 1), b"damaged")  # the export cannot read this page
    res = kvsql("export", "--replace", url(srv, "k"), backup)
    assert res.returncode == 1 and res.stderr.count("kvsql:") == 1, res.stderr
    assert open(backup, "rb").read() == before
    assert sorted(os.listdir(str(tmp_path))) == sorted(x for x in os.listdir(str(tmp_path))
                                                       if ".kvsql-" not in x)  # no temporary file left


def test_export_replace_replaces_a_good_copy_whole(srv, tmp_path):
    imported(srv, tmp_path, "k", rows=10)
    out = str(tmp_path / "out.db")
    assert kvsql("export", url(srv, "k"), out).returncode == 0
    inode = os.stat(out).st_ino
    kvsql("shell", url(srv, "k"), "INSERT INTO t(name) VALUES ('new')")
    assert kvsql("export", "--replace", url(srv, "k"), out).returncode == 0
    assert os.stat(out).st_ino != inode  # a new file renamed over the old one
    assert sqlite3.connect(out).execute("SELECT count(*) FROM t").fetchone() == (11,)


def test_export_refuses_a_file_with_a_hot_journal(srv, tmp_path):
    imported(srv, tmp_path, "k")
    out = str(tmp_path / "out.db")
    assert kvsql("export", url(srv, "k"), out).returncode == 0
    open(out + "-journal", "wb").write(b"x" * 512)
    res = kvsql("export", "--replace", url(srv, "k"), out)
    assert res.returncode == 1 and "-journal" in res.stderr


@pytest.mark.parametrize("content,why", [(b"", "is empty (0 bytes)"), (b"hello world\n" * 20, "no SQLite header")])
def test_import_refuses_what_is_not_a_database_with_one_message(srv, tmp_path, content, why):
    imported(srv, tmp_path, "k", rows=7)
    bad = str(tmp_path / "bad.db")
    open(bad, "wb").write(content)
    res = kvsql("import", "--replace", bad, url(srv, "k"))
    assert res.returncode == 1 and why in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    res = kvsql("shell", url(srv, "k"), "SELECT count(*) FROM t")
    assert res.stdout.strip() == "7", res.stderr  # the database is untouched


# ---- progress ----------------------------------------------------------------

def run_on_terminal(*args):
    """Runs kvsql with stderr on a pseudo-terminal: (returncode, what the terminal got)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([KVSQL, *args], stdout=subprocess.DEVNULL, stderr=slave, env=env())
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the other side closed
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return p.wait(timeout=60), out.decode(errors="replace")


def test_progress_shows_on_a_terminal_and_nowhere_else(srv, tmp_path):
    src = str(tmp_path / "big.db")
    make_db(src, rows=40).close()
    db = sqlite3.connect(src)
    db.execute("CREATE TABLE big(b BLOB)")
    db.executemany("INSERT INTO big VALUES (randomblob(3000))", [()] * 1500)
    db.commit()
    db.close()
    rc, term = run_on_terminal("import", src, url(srv, "big"))
    assert rc == 0 and "pages/s" in term and "left" in term, term
    total = int(term.split(" pages,")[-2].split("/")[-1])
    assert "%d/%d pages" % (total, total) in term
    out = str(tmp_path / "out.db")
    rc, term = run_on_terminal("export", url(srv, "big"), out)
    assert rc == 0 and "%d/%d pages" % (total, total) in term, term
    res = kvsql("export", "--replace", url(srv, "big"), out)  # not a terminal: quiet
    assert res.returncode == 0 and res.stderr == ""


# ---- SQL.DROP ----------------------------------------------------------------

def test_sql_drop_removes_everything_and_replicates_exactly_that(servers):
    m = servers()
    rep = attach_replica(servers, m)
    r = m.client()
    sql(r, "db", "CREATE TABLE t(x)")
    r.execute_command("SQL.CHANGES", "db", "ON")
    sql(r, "db", "INSERT INTO t VALUES (1)")
    r.set("other", "1")
    existing = keys_of(r, "db")
    assert "db" in existing and "{db}:v" in existing and "{db}:changes" in existing
    wait_for(lambda: keys_of(rep.client(), "db") == existing, what="the replica has the database")
    seen = monitored_commands(rep.client(), lambda: r.execute_command("SQL.DROP", "db"), "DEL")
    dels = [c for c in seen if c.startswith("DEL")]
    assert len(dels) == 1 and sorted(x.strip('"') for x in dels[0].split()[1:]) == existing, seen
    assert keys_of(r, "db") == [] and r.get("other") == b"1"
    wait_for(lambda: keys_of(rep.client(), "db") == [], what="the replica dropped it")
    assert r.execute_command("SQL.DROP", "db") == 0
    # a new database at the same key starts afresh
    sql(r, "db", "CREATE TABLE u(y)")
    assert r.execute_command("SQL.QUERY", "db", "SELECT name FROM sqlite_master")[1:] == [[b"u"]]


def test_sql_drop_is_refused_under_a_lease_unless_force(server):
    r = server.client()
    sql(r, "db", "CREATE TABLE t(x)")
    r.set("{db}:lease", "token", px=60000)
    with pytest.raises(Exception, match="lease"):
        r.execute_command("SQL.DROP", "db")
    assert r.exists("db")
    assert r.execute_command("SQL.DROP", "db", "FORCE") == 4  # db, {db}:v, {db}:id, {db}:lease
    r.set("s", "x")
    with pytest.raises(Exception, match="WRONGTYPE"):
        r.execute_command("SQL.DROP", "s")
    with pytest.raises(Exception, match="syntax"):
        r.execute_command("SQL.DROP", "db", "NOW")


def test_sql_drop_forgets_the_cached_connection(server):
    r = server.client()
    sql(r, "db", "CREATE TABLE t(x)")
    sql(r, "db", "INSERT INTO t VALUES (1)")
    assert r.execute_command("SQL.QUERY", "db", "SELECT count(*) FROM t")[1:] == [[1]]
    r.execute_command("SQL.DROP", "db")
    with pytest.raises(Exception, match="no such table"):
        r.execute_command("SQL.QUERY", "db", "SELECT count(*) FROM t")
