"""test_spread.py - the spread layout (docs/FORMAT.md, "The spread layout")
through the library, on one non-cluster redis-server: a database made with
layout=spread, what each layout says when opened as the other (library and
module), and the commit protocol under faults: a writer stopped at each step
boundary (by the store's test knob KVSQL_TEST_SPREAD_STOP, which makes the
writer SIGSTOP itself exactly there), a zombie whose page writes land late,
collection next to a reader on an old snapshot, and a collected snapshot."""
import os
import signal
import subprocess

import pytest

from harness import BUILD, MODULE, ROOT, wait_for
from libhelp import built, env, pydb, writer_stopped_at

pytestmark = pytest.mark.skipif(not built(), reason="libkvsql.so is not built")
needs_inprocess = pytest.mark.skipif(bool(os.environ.get("KVSQL_PRELOAD")),
                                     reason="a sanitized library loads only into a preloaded process")
needs_module = pytest.mark.skipif(not os.path.exists(MODULE), reason="kvsql.so is not built")

ROWS = 2000  # about 40 pages of 4 KiB: several runs
KVSQL = os.path.join(ROOT, BUILD, "kvsql")


def kvsql(*args):
    return subprocess.run([KVSQL, *args], capture_output=True, text=True, timeout=60, env=env())


def fill(s, key, rows=ROWS, **params):
    db = pydb(s, key, layout="spread", **params)
    db.execute("create table t(id integer primary key, v integer, pad text)")
    db.execute("begin")
    for i in range(rows):
        db.execute("insert into t values (?, 1, ?)", (i, "p" * 60))
    db.execute("commit")
    return db


def total(db):
    return db.execute("select sum(v) from t").fetchone()[0]


def run_keys(r, key):
    return [k for k in r.keys("{%s/*}%s:p" % (key, key))]


def copies_of(r, key, copy):
    """Fields of copy id `copy` in any run key of key."""
    return [f for k in run_keys(r, key) for f in r.hkeys(k) if f.decode().endswith(":" + copy)]


def state(r, key):
    return r.get("{%s}:v" % key), r.get("{%s}:id" % key), r.hgetall(key)


@needs_inprocess
def test_a_spread_database_is_a_map_and_runs_of_copies(servers):
    s = servers(module=False)
    db = fill(s, "sp")
    r = s.client()
    m = r.hgetall("sp")
    assert m[b"layout"] == b"spread" and int(m[b"psize"]) == 4096
    n = int(m[b"npages"])
    assert n > 16 and sorted(k for k in m if k.isdigit()) == sorted(str(i).encode() for i in range(n))
    ident = r.get("{sp}:id").decode()
    # every page's current copy is in its run key, under the map's copy id
    for i in range(n):
        assert r.hexists("{sp/%d}sp:p" % (i // 16), "%d:%s" % (i, m[str(i).encode()].decode()))
    assert ident.split(":")[1] in {c.decode() for k, c in m.items() if k.isdigit()}
    other = pydb(s, "sp", layout="spread")
    assert total(other) == ROWS
    assert other.execute("pragma integrity_check").fetchone()[0] == "ok"
    db.execute("update t set v = 2 where id = 7")
    assert total(other) == ROWS + 1
    assert r.zcard("{sp}:pending") == 0


def scripts_run(r):
    stats = r.info("commandstats")
    return sum(stats.get(c, {}).get("calls", 0) for c in ("cmdstat_eval", "cmdstat_evalsha"))


@needs_inprocess
def test_a_warm_read_transaction_runs_one_script_and_leaves_its_registration_for_the_next(servers):
    s = servers(module=False)
    fill(s, "warm").close()
    r = s.client()
    db = pydb(s, "warm", layout="spread")
    assert total(db) == ROWS  # every page cached
    before = scripts_run(r)
    for i in range(50):
        assert db.execute("select v from t where id = ?", (i,)).fetchone()[0] == 1
    assert scripts_run(r) - before == 50  # the begin only: no end script of its own
    assert r.zcard("{warm}:readers") == 1  # replaced by each begin, not piled up
    db.close()
    wait_for(lambda: r.zcard("{warm}:readers") == 0, what="the closed connection's registration to go")


@needs_inprocess
def test_each_layout_refuses_to_open_as_the_other(servers):
    s = servers(module=False)
    fill(s, "sp").close()
    hashdb = pydb(s, "h")
    hashdb.execute("create table a(b)")
    as_hash = pydb(s, "sp")
    with pytest.raises(Exception):
        as_hash.execute("select * from t").fetchone()
    assert "layout spread" in as_hash.execute("select kvsql_error()").fetchone()[0]
    as_spread = pydb(s, "h", layout="spread")
    with pytest.raises(Exception):
        as_spread.execute("select * from a").fetchone()
    assert "one-hash" in as_spread.execute("select kvsql_error()").fetchone()[0]
    r = s.client()
    assert r.hget("sp", "layout") == b"spread" and not r.hexists("h", "layout")


def native_file(path):
    p = subprocess.run(["sqlite3", path], input="create table t(id integer primary key, v integer, pad text); "
                       "with recursive c(i) as (select 0 union all select i + 1 from c where i < %d) "
                       "insert into t select i, 1, hex(randomblob(30)) from c; "
                       "create table a(x integer primary key, y text); "
                       "with recursive c(i) as (select 1 union all select i + 1 from c where i < 3000) "
                       "insert into a select i, hex(randomblob(40)) from c; create index ay on a(y);" % (ROWS - 1),
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return path


@needs_module
@pytest.mark.skipif(not os.path.exists(KVSQL), reason="the kvsql tool is not built")
def test_the_module_never_reads_a_spread_database_as_a_hash(servers, tmp_path):
    s = servers()
    p = kvsql("import", "--layout", "spread", native_file(str(tmp_path / "n.db")), "redis://127.0.0.1:%d/sp" % s.port)
    assert p.returncode == 0, p.stderr
    r = s.client()
    before = state(r, "sp")
    for cmd in (["SQL.QUERY", "sp", "select count(*) from t"], ["SQL.EXEC", "sp", "insert into t values (-1, 1, '')"]):
        with pytest.raises(Exception) as e:
            r.execute_command(*cmd)
        assert "layout spread" in str(e.value), e.value
    assert state(r, "sp") == before


@needs_inprocess
@pytest.mark.parametrize("at,rows", [("lock", ROWS), ("copies", ROWS), ("copies", 8 * ROWS)])
def test_a_writer_stopped_before_its_publish_changes_nothing_and_its_copies_are_collected(servers, at, rows):
    """8 * ROWS: a commit of more than 256 pages, whose intent names a range."""
    s = servers(module=False)
    db = fill(s, "f", rows)
    r = s.client()
    before = state(r, "f")
    w = writer_stopped_at(s, "f", at, lease_ms=300)
    pending = r.zrange("{f}:pending", 0, -1)
    if at == "copies":
        assert len(pending) == 1
        copy, pages = pending[0].decode().split(":")
        assert pages.startswith("*") == (rows > ROWS)
        assert copies_of(r, "f", copy)  # its copies are written...
    else:
        assert pending == []
    assert state(r, "f") == before  # ...and no snapshot sees them
    assert total(db) == rows
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    w.kill()
    w.wait()
    db.execute("update t set v = v + 10")  # the lease lapsed: another writer goes on
    assert total(pydb(s, "f", layout="spread")) == 11 * rows
    if at == "copies":
        def swept():
            db.execute("select kvsql_gc()").fetchone()
            return r.zcard("{f}:pending") == 0
        wait_for(swept, timeout=30, what="the dead writer's intent to lapse and be swept")
        assert copies_of(r, "f", copy) == []


@needs_inprocess
def test_a_zombie_writers_late_copies_change_nothing(servers):
    s = servers(module=False)
    db = fill(s, "z")
    r = s.client()
    w = writer_stopped_at(s, "z", "lock", lease_ms=300)  # holds the lease, has written nothing
    wait_for(lambda: not r.exists("{z}:lease"), what="the stopped writer's lease to lapse")
    db.execute("update t set v = v + 10")
    after = state(r, "z")
    w.send_signal(signal.SIGCONT)  # it writes its copies now, late, and tries to publish
    out, err = w.communicate(timeout=60)
    assert out.startswith("failed:") and "lease" in out, out + err
    assert state(r, "z") == after
    assert total(pydb(s, "z", layout="spread")) == 11 * ROWS
    assert r.zcard("{z}:pending") == 0
    live = {c for k, c in r.hgetall("z").items() if k.isdigit()}
    for k in run_keys(r, "z"):
        for f in r.hkeys(k):
            assert f.split(b":")[1] in live, f  # the zombie's copies were dropped with its refused publish


@needs_inprocess
def test_collection_keeps_what_a_reader_on_an_old_snapshot_needs(servers):
    s = servers(module=False)
    db = fill(s, "g")
    r = s.client()
    reader = pydb(s, "g", layout="spread")
    reader.execute("begin")
    assert reader.execute("select v from t where id = 0").fetchone()[0] == 1  # the snapshot: a few pages read
    for k in range(5):
        db.execute("update t set v = v + 1")
        db.execute("select kvsql_gc()").fetchone()
    assert r.zcard("{g}:gc") > 0  # what the reader may need is kept
    assert total(reader) == ROWS  # every other page read now, as of the old snapshot
    assert reader.execute("pragma integrity_check").fetchone()[0] == "ok"
    reader.execute("commit")
    assert total(reader) == 6 * ROWS
    db.execute("select kvsql_gc()").fetchone()
    reader.close()
    db.execute("update t set v = v + 1 where id = 0")  # the reader is gone: everything superseded goes
    db.execute("select kvsql_gc()").fetchone()
    assert r.zcard("{g}:gc") == 0
    live = {c for k, c in r.hgetall("g").items() if k.isdigit()}
    stored = sum(r.hlen(k) for k in run_keys(r, "g"))
    assert stored == int(r.hget("g", "npages"))  # one copy per page: memory back to the database's size
    assert all(f.split(b":")[1] in live for k in run_keys(r, "g") for f in r.hkeys(k))


@needs_inprocess
def test_a_collected_snapshot_is_a_clear_error_never_other_data(servers):
    s = servers(module=False)
    db = fill(s, "old")
    r = s.client()
    reader = pydb(s, "old", layout="spread", lease_ms=200)
    reader.execute("begin")
    assert reader.execute("select v from t where id = 0").fetchone()[0] == 1
    member = [m for m in r.zrange("{old}:readers", 0, -1, withscores=True)]
    assert len(member) == 1
    lapses = member[0][1]

    def lapsed():
        sec, usec = r.time()
        return sec * 1000 + usec // 1000 > lapses
    wait_for(lapsed, what="the reader's registration to lapse")
    db.execute("update t set v = v + 1")
    db.execute("select kvsql_gc()").fetchone()
    with pytest.raises(Exception):
        total(reader)
    assert "snapshot too old" in reader.execute("select kvsql_error()").fetchone()[0]
    if reader.in_transaction:
        reader.execute("rollback")
    assert total(reader) == 2 * ROWS  # a new snapshot reads the new state



@pytest.mark.skipif(not os.path.exists(KVSQL), reason="the kvsql tool is not built")
def test_the_tool_imports_checks_exports_lists_and_collects_a_spread_database(servers, tmp_path):
    s = servers(module=False)
    src, out = native_file(str(tmp_path / "src.db")), str(tmp_path / "out.db")
    base = "redis://127.0.0.1:%d" % s.port
    p = kvsql("import", "--layout", "spread", src, base + "/imp")
    assert p.returncode == 0, p.stderr
    r = s.client()
    assert r.hget("imp", "layout") == b"spread" and run_keys(r, "imp")
    p = kvsql("check", base + "/imp?layout=spread")
    assert p.returncode == 0 and "ok" in p.stdout, p.stdout + p.stderr
    p = kvsql("check", base + "/imp")  # as a one-hash database: refused, naming the layout
    assert p.returncode != 0 and "layout spread" in p.stderr, p.stderr
    p = kvsql("export", base + "/imp?layout=spread", out)
    assert p.returncode == 0, p.stderr
    dump = lambda f: subprocess.run(["sqlite3", f, ".dump"], capture_output=True, text=True).stdout
    assert dump(out) == dump(src)
    p = kvsql("ls", base)
    assert any(line.split()[:2] == ["imp", "spread/4096"] for line in p.stdout.splitlines()), p.stdout
    p = kvsql("shell", base + "/imp?layout=spread", "update a set y = 'z' where x < 100")
    assert p.returncode == 0, p.stderr
    assert r.get("{imp}:v") == b"2"  # the import, then the update
    p = kvsql("gc", base + "/imp?layout=spread")
    assert p.returncode == 0 and "page copies collected" in p.stdout, p.stdout + p.stderr
    assert r.zcard("{imp}:gc") == 0


# ---- kvsql rm, cp and mv of a spread database (docs/COMMANDS.md) ------------

def keys_of_db(r, key):
    """Every key of database `key`: its map, its home keys, its run keys."""
    return sorted(k for k in r.keys("*") if k == key.encode() or k.startswith(("{%s}:" % key).encode())
                  or (k.startswith(("{%s/" % key).encode()) and k.endswith(("}%s:p" % key).encode())))


def dump(db):
    return list(db.iterdump())


@needs_inprocess
@pytest.mark.skipif(not os.path.exists(KVSQL), reason="the kvsql tool is not built")
def test_rm_deletes_every_key_of_a_spread_database_even_runs_past_its_length(servers):
    s = servers(module=False)
    base = "redis://127.0.0.1:%d" % s.port
    db = fill(s, "sp")
    keep = fill(s, "sp2", rows=50)  # another spread database: untouched
    r = s.client()
    r.set("other", "y")
    reader = pydb(s, "sp", layout="spread")
    reader.execute("begin")
    assert reader.execute("select v from t where id = 0").fetchone()[0] == 1  # holds the old pages in T:gc
    high = int(r.hget("sp", "npages"))
    db.execute("delete from t where id >= 100")
    db.execute("vacuum")  # the map shrinks; the cut pages' copies stay for the reader
    assert int(r.hget("sp", "npages")) <= (high - 1) // 16 * 16 - 16  # whole runs past the map's length
    assert any(int(k.split(b"/")[1].split(b"}")[0]) * 16 >= int(r.hget("sp", "npages")) for k in run_keys(r, "sp"))
    before = keys_of_db(r, "sp")
    p = kvsql("rm", base + "/sp")
    assert p.returncode == 0 and "removed sp (%d keys)" % len(before) in p.stdout, p.stdout + p.stderr
    assert keys_of_db(r, "sp") == []
    assert r.get("other") == b"y" and total(keep) == 50 and len(run_keys(r, "sp2")) > 0
    with pytest.raises(Exception):
        total(reader)  # its copies are gone: an error, never other data
    reader.close()
    assert kvsql("rm", base + "/sp").returncode == 1


@needs_inprocess
@pytest.mark.skipif(not os.path.exists(KVSQL), reason="the kvsql tool is not built")
def test_rm_of_a_spread_database_is_refused_while_a_writer_holds_it_unless_forced(servers):
    s = servers(module=False)
    base = "redis://127.0.0.1:%d" % s.port
    fill(s, "w")
    r = s.client()
    w = writer_stopped_at(s, "w", "copies")  # its lease held, its intent and copies written
    try:
        p = kvsql("rm", base + "/w")
        assert p.returncode == 1 and "holds its lease" in p.stderr, p.stderr
        assert r.zcard("{w}:pending") == 1 and keys_of_db(r, "w")
        p = kvsql("rm", "--force", base + "/w")
        assert p.returncode == 0, p.stderr
        assert keys_of_db(r, "w") == []
    finally:
        w.send_signal(signal.SIGCONT)
        out, _ = w.communicate(timeout=60)
    assert "failed" in out  # fenced out by the removal's lease: its publish refused
    assert keys_of_db(r, "w") == []  # and it deleted its copies


@needs_inprocess
@pytest.mark.skipif(not os.path.exists(KVSQL), reason="the kvsql tool is not built")
def test_cp_and_mv_of_a_spread_database_give_an_equal_independent_spread_database(servers):
    s = servers(module=False)
    base = "redis://127.0.0.1:%d" % s.port
    db = fill(s, "src")
    r = s.client()
    p = kvsql("cp", base + "/src", base + "/copy")  # no layout= on either URL: the source's
    assert p.returncode == 0, p.stderr
    assert r.hget("copy", "layout") == b"spread" and run_keys(r, "copy")
    copy = pydb(s, "copy", layout="spread")
    assert dump(copy) == dump(db)
    copy.execute("update t set v = 5 where id = 1")
    assert total(db) == ROWS and total(copy) == ROWS + 4
    db.execute("update t set v = 7 where id = 2")
    assert total(copy) == ROWS + 4
    expected = dump(db)
    db.close()
    p = kvsql("mv", base + "/src", base + "/{t}moved")
    assert p.returncode == 0 and "moved src to {t}moved" in p.stdout, p.stderr
    assert keys_of_db(r, "src") == []
    moved = pydb(s, "{t}moved", layout="spread")
    assert r.hget("{t}moved", "layout") == b"spread" and dump(moved) == expected
    moved.execute("update t set v = 0")
    assert total(copy) == ROWS + 4
    p = kvsql("cp", base + "/copy", base + "/flat?layout=hash")  # a URL's own layout= wins
    assert p.returncode == 0, p.stderr
    assert dump(pydb(s, "flat")) == dump(copy)


@needs_module
@pytest.mark.skipif(not os.path.exists(KVSQL), reason="the kvsql tool is not built")
def test_sql_drop_refuses_a_spread_database_and_names_kvsql_rm(servers, tmp_path):
    s = servers()
    p = kvsql("import", "--layout", "spread", native_file(str(tmp_path / "src.db")),
              "redis://127.0.0.1:%d/sd" % s.port)
    assert p.returncode == 0, p.stderr
    r = s.client()
    before = keys_of_db(r, "sd")
    assert len(before) > 3
    for args in (["SQL.DROP", "sd"], ["SQL.DROP", "sd", "FORCE"]):
        with pytest.raises(Exception) as e:
            r.execute_command(*args)
        assert "layout spread" in str(e.value) and "kvsql rm" in str(e.value)
    assert keys_of_db(r, "sd") == before  # nothing removed: no run key orphaned
