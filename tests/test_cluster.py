"""test_cluster.py - kvsql on Redis Cluster (issue 6): databases spread over
nodes, and resharding or failover never loses a row.

Run by `make test` (tests/run, pytest). Every cluster is real: redis-server
processes with the module on loopback ports, joined by `redis-cli --cluster
create` (tests/cluster.py). The routing and scale-out tests share one
cluster of 3 masters with a replica each; resharding and failover get
clusters of their own. Load loops are bounded in count and in time.
"""
import os
import sqlite3
import tempfile
import threading
import time

import pytest
import redis

from harness import query, sql
from redis.exceptions import RedisClusterException

from cluster import Cluster, finish_slot, move_slot, redis_cli, slot_of, wait_for


def error_of(fn, *args):
    """The error message fn(*args) answers; fails when it answers no error."""
    try:
        reply = fn(*args)
    except redis.ResponseError as e:
        return str(e)
    raise AssertionError("expected an error, got %r" % (reply,))


def moved_to(cluster, node, key):
    return "MOVED %d 127.0.0.1:%d" % (slot_of(key), node.port)


def kvsql_connections(node):
    return node.client().info("kvsql")["kvsql_connections"]


def one_connection(node):
    """A client on a single connection, for ASKING and READONLY."""
    return node.client(single_connection_client=True)


def hash_as_sqlite_rows(r, key, sql_text):
    """Reads the hash's pages (FORMAT.md), writes them as a file and runs
    sql_text on it with Python's own sqlite3: what the bytes really hold."""
    n = r.hlen(key)
    pages = r.hmget(key, [str(i) for i in range(n)])
    fd, path = tempfile.mkstemp(suffix=".sqlite")
    try:
        with os.fdopen(fd, "wb") as f:
            for p in pages:
                f.write(p)
        db = sqlite3.connect(path)
        try:
            return [list(row) for row in db.execute(sql_text)]
        finally:
            db.close()
    finally:
        os.unlink(path)


@pytest.fixture(scope="module")
def shared():
    """One cluster of 3 masters with a replica each, for the tests that only
    route and read. Tests that move a slot leave the cluster stable."""
    c = Cluster(masters=3, replicas=1)
    yield c
    problems = c.close()
    assert not problems, problems


# ---- 1. routing -------------------------------------------------------------

def test_command_getkeys_and_command_info_see_the_database_key(shared):
    r = shared.nodes[0].client()
    assert r.execute_command("COMMAND GETKEYS", "SQL.EXEC", "shop", "select ?", "1") == ["shop"]
    assert r.execute_command("COMMAND GETKEYS", "SQL.QUERY", "{t}db", "select 1") == ["{t}db"]
    assert "no key arguments" in error_of(r.execute_command, "COMMAND GETKEYS", "SQL", "select 1")
    info = {row[0]: row for row in r.execute_command("COMMAND INFO", "SQL.EXEC", "SQL.QUERY", "SQL")}
    assert info[b"sql.exec"][3:6] == [1, 1, 1] and b"write" in info[b"sql.exec"][2]
    assert info[b"sql.query"][3:6] == [1, 1, 1] and b"readonly" in info[b"sql.query"][2]
    assert info[b"sql"][3:6] == [0, 0, 0]
    assert r.execute_command("CLUSTER", "KEYSLOT", "shop") == slot_of("shop")


def dbsizes(cluster):
    return {n.port: n.client().dbsize() for n in cluster.alive()}


def test_a_node_that_does_not_own_the_slot_answers_moved_and_runs_nothing(shared):
    key = "routing:db"
    owner = shared.owner(key)
    before = dbsizes(shared)
    for node in shared.masters():
        if node is owner:
            continue
        r = node.client()
        want = moved_to(shared, owner, key)
        assert error_of(sql, r, key, "create table t(a); insert into t values (1)") == want
        assert error_of(query, r, key, "select 1") == want
        # not through a transaction nor a script either
        c = one_connection(node)
        c.execute_command("MULTI")
        assert error_of(sql, c, key, "create table t(a)") == want
        with pytest.raises(redis.exceptions.ExecAbortError):
            c.execute_command("EXEC")
        assert error_of(r.eval, "return redis.call('SQL.EXEC', KEYS[1], ARGV[1])", 1, key,
                        "create table t(a)") == want
    # a script that declares a key of its own node but reaches for another
    own_key = next("own:%d" % i for i in range(10000) if shared.owner("own:%d" % i) is not owner)
    node = shared.owner(own_key)
    msg = error_of(node.client().eval, "return redis.call('SQL.EXEC', ARGV[1], 'create table t(a)')",
                   1, own_key, key)
    assert "non local key" in msg or "CROSSSLOT" in msg or "different slot" in msg, msg
    assert dbsizes(shared) == before  # nothing ran anywhere
    assert owner.client().exists(key) == 0


def test_ask_during_a_migration_and_no_stale_connection_on_either_side(shared):
    one, two = "{asktest}one", "{asktest}two"  # one slot
    slot = slot_of(one)
    assert slot_of(two) == slot
    rc = shared.client()
    sql(rc, one, "create table t(v text); insert into t values ('before')")
    source = shared.owner(one)
    target = shared.not_owner(one)
    src, tgt = source.client(), one_connection(target)
    assert query(src, one, "select v from t")[1:] == [[b"before"]]  # cached on the source
    connections = kvsql_connections(source)

    target.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", shared.node_id(source))
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", shared.node_id(target))
    # the source still serves reads of the key it holds, and sends a missing one over;
    # a write touches the database's other keys too: not while the slot is open
    assert query(src, one, "select v from t")[1:] == [[b"before"]]
    assert error_of(sql, src, one, "insert into t values ('migrating')").startswith("TRYAGAIN")
    ask = "ASK %d 127.0.0.1:%d" % (slot, target.port)
    assert error_of(sql, src, two, "create table t(v text)") == ask
    assert error_of(query, src, two, "select 1") == ask
    # the target refuses without ASKING, and without ASKING runs nothing
    assert error_of(query, tgt, one, "select v from t") == moved_to(shared, source, one)
    assert target.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    # with ASKING the target runs a read: 'one' is not there yet (an empty database)
    tgt.execute_command("ASKING")
    assert "no such table" in error_of(query, tgt, one, "select v from t")
    tgt.execute_command("ASKING")
    assert error_of(sql, tgt, two, "create table t(v text)").startswith("TRYAGAIN")
    assert target.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0  # nothing written

    assert src.execute_command("MIGRATE", "127.0.0.1", target.port, one, 0, 10000) == b"OK"
    assert kvsql_connections(source) == connections - 1  # MIGRATE closed it
    assert error_of(query, src, one, "select v from t") == ask
    tgt.execute_command("ASKING")  # what arrived, not the empty database seen before
    assert query(tgt, one, "select v from t")[1:] == [[b"before"]]
    for key in src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):  # its version key
        assert src.execute_command("MIGRATE", "127.0.0.1", target.port, key, 0, 10000) == b"OK"

    finish_slot(shared, slot, target)
    assert error_of(query, src, one, "select 1") == moved_to(shared, target, one)
    assert src.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    rc2 = shared.client()
    assert sql(rc2, one, "insert into t values ('after')") == 1
    assert sql(rc2, two, "create table t(v text); insert into t values ('born on the target')") == 1
    t = target.client()
    assert query(t, one, "select v from t")[1:] == [[b"before"], [b"after"]]
    assert query(t, one, "pragma integrity_check")[1:] == [[b"ok"]]
    assert t.get("{asktest}one:v") == b"2"
    assert query(rc, two, "select count(*) from t")[1:] == [[1]]


@pytest.mark.parametrize("first", ["db", "v"])
def test_a_module_write_during_a_migration_never_splits_the_database(shared, first):
    """A slot moved one MIGRATE at a time: while the database and its
    version key sit on two nodes, SQL.EXEC on either (through ASK on the
    target) must refuse with TRYAGAIN and write nothing, so that no second
    version key is made (the next MIGRATE would fail BUSYKEY) and the
    migration ends with the database whole."""
    db = "split%s:db" % first
    v = "{%s}:v" % db
    slot = slot_of(db)
    rc = shared.client()
    sql(rc, db, "create table acct(id integer primary key, bal integer)")
    sql(rc, db, "with recursive q(i) as (select 1 union all select i+1 from q where i<100)"
                " insert into acct select i, 1000 from q")
    source, target = shared.owner(db), shared.not_owner(db)
    src, tgt = source.client(), one_connection(target)
    version = src.get(v)
    target.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", shared.node_id(source))
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", shared.node_id(target))
    moved = db if first == "db" else v
    assert src.execute_command("MIGRATE", "127.0.0.1", target.port, moved, 0, 10000) == b"OK"
    transfer = "update acct set bal = bal - 500 where id = 1; update acct set bal = bal + 500 where id = 100"
    for node, c in ((source, src), (target, tgt)):
        if node is target:
            c.execute_command("ASKING")
        msg = error_of(sql, c, db, transfer)
        if node is source and first == "db":
            assert msg.startswith("ASK "), msg  # Redis itself sends it over
        elif node is target and first == "v":
            assert "no such table" in msg, msg  # an empty database: the write fails in SQL
        else:
            assert msg.startswith("TRYAGAIN kvsql: the cluster slot of '%s' is being migrated" % db), msg
            assert "'}'" not in msg
    on_target = sorted(target.client().execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100))
    assert on_target == [moved.encode()]  # nothing made there
    for key in src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
        assert src.execute_command("MIGRATE", "127.0.0.1", target.port, key, 0, 10000) == b"OK"
    finish_slot(shared, slot, target)
    t = target.client()
    assert t.get(v) == version
    assert query(t, db, "select sum(bal), min(bal) from acct")[1:] == [[100000, 1000]]
    assert sql(rc, db, transfer) == 1  # the migration ended: writes go on
    assert query(t, db, "select bal from acct where id in (1, 100) order by id")[1:] == [[500], [1500]]


def test_database_migrated_away_and_back_is_read_afresh(shared):
    key = "{roundtrip}db"
    slot = slot_of(key)
    home = shared.owner(key)
    away = shared.not_owner(key)
    h = one_connection(home)  # WAIT counts the writes of its own connection
    sql(h, key, "create table t(v text); insert into t values ('first home')")
    assert h.execute_command("WAIT", 1, 5000) == 1
    home_replica = one_connection(shared.replicas_of(home)[0])
    home_replica.execute_command("READONLY")
    away_replica = one_connection(shared.replicas_of(away)[0])
    away_replica.execute_command("READONLY")
    # cached at home, on the master and on its replica
    assert query(h, key, "select v from t")[1:] == [[b"first home"]]
    assert query(home_replica, key, "select v from t")[1:] == [[b"first home"]]

    moved = [key.encode(), (key + ":id").encode(), (key + ":v").encode()]  # the database, its version and identity (FORMAT.md)
    assert sorted(move_slot(shared, slot, home, away)) == moved
    a = away.client()
    assert sql(a, key, "insert into t values ('away'); delete from t where v = 'first home'") == 1
    assert query(a, key, "select v from t")[1:] == [[b"away"]]
    assert a.execute_command("WAIT", 1, 5000) == 1
    assert query(away_replica, key, "select v from t")[1:] == [[b"away"]]

    assert sorted(move_slot(shared, slot, away, home)) == moved
    assert error_of(query, a, key, "select 1") == moved_to(shared, home, key)
    assert error_of(query, away_replica, key, "select 1") == moved_to(shared, home, key)
    assert query(h, key, "select v from t")[1:] == [[b"away"]]
    assert sql(h, key, "insert into t values ('home again'); select v from t")[1:] == [[b"away"], [b"home again"]]
    assert query(h, key, "pragma integrity_check")[1:] == [[b"ok"]]
    assert h.execute_command("WAIT", 1, 5000) == 1
    assert query(home_replica, key, "select v from t")[1:] == [[b"away"], [b"home again"]]


def test_keys_dropped_with_a_lost_slot_leave_no_stale_connection(shared):
    """A master that learns that a node with a newer config epoch owns one
    of its slots drops the keys it still holds there (Redis's delKeysInSlot,
    here after `CLUSTER SETSLOT <slot> NODE <id>` + `CLUSTER BUMPEPOCH` on
    another node). Redis 7.0.15 fires no keyspace event for those
    deletions; the database is gone, and the module must not keep
    answering from it when the slot comes back."""
    key = "{lostslot}db"
    slot = slot_of(key)
    rc = shared.client()
    sql(rc, key, "create table t(v text); insert into t values ('dropped with the slot')")
    old = shared.owner(key)
    taker = shared.not_owner(key)
    o = old.client()
    assert query(o, key, "select v from t")[1:] == [[b"dropped with the slot"]]  # cached
    connections = kvsql_connections(old)

    taker.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", shared.node_id(taker))
    taker.client().execute_command("CLUSTER", "BUMPEPOCH")
    wait_for(lambda: o.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0, what="the keys dropped")
    shared.wait_stable()
    assert shared.owner(key) is taker
    # no event tells the module: its once-a-second sweep closes the connection
    wait_for(lambda: kvsql_connections(old) == connections - 1, what="the sweep to close the connection")
    connections_after_drop = kvsql_connections(old)
    # the slot comes back, empty: the database is gone for good
    o.execute_command("CLUSTER", "SETSLOT", slot, "NODE", shared.node_id(old))
    o.execute_command("CLUSTER", "BUMPEPOCH")
    wait_for(lambda: shared.owner(key) is old, what="the slot back")
    shared.wait_stable()
    assert o.exists(key) == 0

    seen = query(o, key, "select count(*) from sqlite_master")[1:]
    try:
        recreated = sql(o, key, "create table t(v text); insert into t values ('new'); select v from t")[1:]
    except redis.ResponseError as e:
        recreated = "error: %s" % e
    assert (seen, recreated) == ([[0]], [[b"new"]]), \
        "a stale connection answers for a database Redis deleted with its slot: " \
        "tables seen %r (want [[0]]), create table t again: %r" % (seen, recreated)
    assert connections_after_drop == connections - 1


def test_redis_cli_c_follows_moved_to_the_owner(shared):
    key = "cli:shop"
    owner = shared.owner(key)
    other = shared.not_owner(key)
    cli = ["-c", "-p", other.port]
    assert redis_cli(*cli, "SQL.EXEC", key, "create table item(id integer primary key, name text);"
                     "insert into item(name) values (?), (?)", "pen", "ink").strip() == "2"
    out = redis_cli(*cli, "SQL.QUERY", key, "select id, name from item where name = ?", "ink")
    assert out.split() == ["id", "integer", "name", "text", "2", "ink"]
    assert owner.client().exists(key) == 1
    assert other.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot_of(key)) == 0
    # without -c redis-cli shows the redirection
    assert redis_cli("-p", other.port, "SQL.QUERY", key, "select 1").strip() == moved_to(shared, owner, key)


def test_sql_without_a_key_answers_an_error_pointing_to_sql_exec(shared):
    for node in shared.masters():  # (a replica refuses it earlier, as a write)
        for text in ("create table t(a)", "select 1"):
            msg = error_of(node.client().execute_command, "SQL", text)
            assert "SQL.EXEC" in msg, msg
    assert shared.owner("_sql:redis_db").client().exists("_sql:redis_db") == 0
    with pytest.raises(RedisClusterException):  # a cluster client cannot route it at all
        shared.client().execute_command("SQL", "select 1")


def test_a_database_and_its_hash_tagged_keys_share_one_slot(shared):
    db, counter = "{tenant7}orders", "{tenant7}count"
    aux = "{orders}:lease"  # the auxiliary key name of FORMAT.md for "orders"
    r = shared.nodes[0].client()
    assert r.execute_command("CLUSTER", "KEYSLOT", db) == r.execute_command("CLUSTER", "KEYSLOT", counter)
    assert r.execute_command("CLUSTER", "KEYSLOT", aux) == r.execute_command("CLUSTER", "KEYSLOT", "orders")
    owner = shared.owner(db)
    c = owner.client()
    # one transaction and one script over the database and a plain key
    sql(c, db, "create table o(id integer primary key, item text)")
    p = c.pipeline(transaction=True)
    p.execute_command("SQL.EXEC", db, "insert into o(item) values (?)", "pen")
    p.incr(counter)
    assert p.execute() == [1, 1]
    script = "redis.call('SQL.EXEC', KEYS[1], 'insert into o(item) values (?)', ARGV[1]) " \
             "return redis.call('INCR', KEYS[2])"
    assert c.eval(script, 2, db, counter, "ink") == 2
    assert query(c, db, "select count(*) from o")[1:] == [[2]]
    assert c.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot_of(db)) == 4  # with db's version and identity keys
    assert c.get(db + ":v") == b"3"
    # keys in different slots cannot be used together
    other = next("k%d" % i for i in range(1000) if slot_of("k%d" % i) != slot_of(db))
    assert "CROSSSLOT" in error_of(c.eval, script, 2, db, other, "x")


# ---- 2. scale out -----------------------------------------------------------

def test_a_thousand_databases_spread_over_three_masters(shared):
    keys = ["tenant:%d" % i for i in range(1000)]
    rc = shared.client()
    for i, k in enumerate(keys):
        assert sql(rc, k, "create table t(n integer, name text); insert into t values (?, ?)", str(i), k) == 1
    masters = shared.masters()
    assert len(masters) == 3
    any_node = masters[0].client()
    slots = any_node.pipeline(transaction=False)
    for k in keys:
        slots.execute_command("CLUSTER", "KEYSLOT", k)
    assert slots.execute() == [slot_of(k) for k in keys]

    held = {}
    for m in masters:
        held[m.port] = {k.decode() for k in m.client().scan_iter(match="tenant:*", count=1000)}
    assert sum(len(s) for s in held.values()) == 1000
    assert set().union(*held.values()) == set(keys)
    for port, mine in held.items():
        assert 250 <= len(mine) <= 420, (port, len(mine))  # about a third each

    for i, k in enumerate(keys):
        owner = shared.owner(k)
        assert k in held[owner.port]
        assert query(owner.client(), k, "select n, name from t")[1:] == [[i, k.encode()]]
    for m in masters:  # a sample of redirections from the others
        c = m.client()
        for k in keys[:300]:
            if k not in held[m.port]:
                assert error_of(query, c, k, "select 1") == moved_to(shared, shared.owner(k), k)
        assert kvsql_connections(m) <= m.client().dbsize()


def test_a_replica_answers_sql_query_after_readonly(shared):
    keys = ["tenant:%d" % i for i in range(1000, 1060)]
    writers = {m.port: one_connection(m) for m in shared.masters()}  # WAIT counts its own connection's writes
    for k in keys:
        sql(writers[shared.owner(k).port], k, "create table t(k text); insert into t values (?)", k)
    for m in shared.masters():
        assert writers[m.port].execute_command("WAIT", 1, 5000) == 1
        mine = [k for k in keys if shared.owner(k) is m]
        theirs = [k for k in keys if shared.owner(k) is not m]
        replicas = shared.replicas_of(m)
        assert len(replicas) == 1
        rep = one_connection(replicas[0])
        assert error_of(query, rep, mine[0], "select k from t") == moved_to(shared, m, mine[0])
        rep.execute_command("READONLY")
        for k in mine:
            assert query(rep, k, "select k from t")[1:] == [[k.encode()]]
        assert error_of(sql, rep, mine[0], "insert into t values ('no')") == moved_to(shared, m, mine[0])
        assert error_of(query, rep, theirs[0], "select 1") == moved_to(shared, shared.owner(theirs[0]), theirs[0])
    rc = shared.client()
    for k in keys:  # nothing written by a replica
        assert query(rc, k, "select count(*) from t")[1:] == [[1]]


# ---- 3. resharding under load ------------------------------------------------

class Load:
    """Writers insert numbered rows into many databases through cluster
    clients (which follow MOVED and ASK) and record the acknowledged ones;
    a reader checks that every database shows at least the rows
    acknowledged before it asked, and that a command's two statements
    landed together. Bounded: at most `max_writes` per writer and
    `max_seconds` in all, with `pause` seconds after each write."""

    def __init__(self, cluster, keys, writers=3, max_writes=50000, max_seconds=150, pause=0.001):
        self.cluster, self.keys = cluster, keys
        self.acked = {k: set() for k in keys}
        self.unknown = {k: set() for k in keys}  # writes whose client failed before a reply
        self.client_errors = []
        self.lock = threading.Lock()
        self.errors, self.stale_reads, self.reads = [], [], 0
        self.busy = 0  # writes refused with SQLITE_BUSY, which write nothing
        self.stop = threading.Event()
        self.deadline = time.time() + max_seconds
        self.max_writes, self.pause = max_writes, pause
        self.threads = [threading.Thread(target=self.write, args=(w,)) for w in range(writers)]
        self.threads.append(threading.Thread(target=self.read))

    def count(self):
        with self.lock:
            return sum(len(s) for s in self.acked.values())

    def running(self):
        return not self.stop.is_set() and time.time() < self.deadline

    def write(self, w):
        rc = self.cluster.client()
        for n in range(self.max_writes):
            if not self.running():
                return
            key = self.keys[(n * 7 + w * 13) % len(self.keys)]
            row = w * 1000000 + n
            try:
                reply = sql(rc, key, "insert into t(id, w, pad) values (?1, ?2, randomblob(120));"
                                     "update meta set n = n + 1", str(row), str(w))
            except redis.ResponseError as e:
                if str(e).startswith("SQLITE_BUSY"):  # refused, nothing written: another write to the key runs
                    with self.lock:                    # on a worker (a busy machine makes writes long)
                        self.busy += 1
                    continue
                self.errors.append("%s row %d: %r" % (key, row, e))  # any other refusal: a failure
                continue
            except Exception as e:  # the client broke (redis-py's cluster client while slots move,
                with self.lock:     # a lost connection): the write may or may not have landed
                    self.unknown[key].add(row)
                    self.client_errors.append("%s row %d: %r" % (key, row, e))
                rc = self.cluster.client()
                continue
            if reply != 1:
                self.errors.append("%s row %d: reply %r" % (key, row, reply))
                continue
            with self.lock:
                self.acked[key].add(row)
            time.sleep(self.pause)  # a steady load that leaves redis-cli some CPU

    def read(self):
        rc = self.cluster.client()
        for n in range(10 ** 6):
            if not self.running():
                return
            key = self.keys[(n * 11) % len(self.keys)]
            with self.lock:
                at_least = len(self.acked[key])
            try:
                rows, n_meta = query(rc, key, "select count(*), (select n from meta) from t")[1]
            except redis.ResponseError as e:
                self.errors.append("read %s: %r" % (key, e))
                continue
            except Exception as e:  # the client broke, as in write()
                with self.lock:
                    self.client_errors.append("read %s: %r" % (key, e))
                rc = self.cluster.client()
                continue
            self.reads += 1
            if rows < at_least or rows != n_meta:
                self.stale_reads.append((key, rows, n_meta, at_least))
            time.sleep(self.pause)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads), "a load thread did not stop"

    def wait_for_more(self, n, timeout=30):
        start = self.count()
        try:
            wait_for(lambda: self.count() >= start + n, timeout=timeout, what="%d more writes" % n)
        except AssertionError as e:
            raise AssertionError("%s: %d writes, threads alive %s, %d errors %r" % (
                e, self.count(), [t.is_alive() for t in self.threads], len(self.errors), self.errors[:5]))


def owners(cluster, keys):
    return {k: cluster.owner(k) for k in keys}


def key_in_lowest_slots(node_view_slots, prefix, span):
    """A key whose slot is among the `span` lowest slots of a node: the ones
    `redis-cli --cluster reshard` moves first."""
    lowest = set(sorted(node_view_slots)[:span])
    return next("%s%d" % (prefix, i) for i in range(100000) if slot_of("%s%d" % (prefix, i)) in lowest)


def test_reshard_and_rebalance_under_load_lose_no_acknowledged_row(clusters):
    c = clusters(masters=3)
    a, b, _ = sorted(c.masters(), key=lambda n: min(c.view(n)[c.node_id(n)]["slots"]))
    a_slots = c.view(a)[c.node_id(a)]["slots"]
    big = key_in_lowest_slots(a_slots, "big:", 500)  # moved by the first reshard
    keys = ["db:%d" % i for i in range(240)] + [big]
    rc = c.client()
    for k in keys:
        sql(rc, k, "create table t(id integer primary key, w int, pad blob);"
                   "create table meta(n int); insert into meta values (0)")
    # about 1 MB in one database: a MIGRATE of some 250 pages
    sql(rc, big, "create table bulk(x blob); with recursive s(i) as (select 1 union all select i + 1"
                 " from s where i < 1000) insert into bulk select randomblob(1000) from s")
    assert c.owner(big) is a and rc.hlen(big) > 250
    start_owner = owners(c, keys)

    timings = {}
    with Load(c, keys) as load:
        load.wait_for_more(300)
        phases = []

        def phase(name, fn):
            """Runs a redis-cli command under the load; counts the writes
            acknowledged while it ran."""
            before, t0 = load.count(), time.time()
            out = fn()
            timings[name] = time.time() - t0
            phases.append((name, before, load.count()))
            c.wait_stable()
            load.wait_for_more(100)
            return out

        phase("reshard 1000 slots a->b", lambda: c.reshard(a, b, 1000))
        assert c.owner(big) is b
        d = c.add_master()
        phase("rebalance onto an empty master", lambda: c.rebalance("--cluster-use-empty-masters"))
        assert len(c.masters()) == 4
        phase("rebalance with weight a=3", lambda: c.rebalance("--cluster-weight", "%s=3" % c.node_id(a)))
        writes_during = [(name, after - before) for name, before, after in phases]
    assert all(n > 0 for _, n in writes_during), writes_during

    c.wait_stable()
    assert "[OK] All 16384 slots covered" in c.check()
    final_owner = owners(c, keys)
    moved = [k for k in keys if final_owner[k] is not start_owner[k]]
    assert len(moved) >= 60, len(moved)
    assert any(final_owner[k] is d for k in keys)

    # every acknowledged row is there, in a sound database, and nothing else
    # but writes whose client broke before the reply came
    lost, unacked = {}, {}
    for k in keys:
        r = final_owner[k].client()
        assert query(r, k, "pragma integrity_check")[1:] == [[b"ok"]], k
        ids = {row[0] for row in query(r, k, "select id from t")[1:]}
        if load.acked[k] - ids:
            lost[k] = sorted(load.acked[k] - ids)[:10]
        if ids - load.acked[k] - load.unknown[k]:
            unacked[k] = sorted(ids - load.acked[k] - load.unknown[k])[:10]
        assert query(r, k, "select n from meta")[1:] == [[len(ids)]], k
    assert not lost, "acknowledged rows lost: %r" % lost
    assert not load.stale_reads, load.stale_reads[:10]
    assert not load.errors, load.errors[:10]
    assert len(load.client_errors) <= 10, load.client_errors[:10]
    assert not unacked, "rows nobody wrote: %r" % unacked
    assert load.reads > 100
    assert query(final_owner[big].client(), big, "select count(*) from bulk")[1:] == [[1000]]

    # no node answers for a database that left it; the new owner serves the
    # bytes that arrived, read afresh
    for k in moved:
        old, new = start_owner[k], final_owner[k]
        assert error_of(query, old.client(), k, "select count(*) from t") == moved_to(c, new, k)
        assert old.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot_of(k)) == 0
        r = new.client()
        served = query(r, k, "select id, w, hex(pad) from t order by id")[1:]
        assert [[i, w, p.decode()] for i, w, p in served] == \
            hash_as_sqlite_rows(r, k, "select id, w, hex(pad) from t order by id")
    for n in c.masters():
        assert kvsql_connections(n) <= n.client().dbsize()
    print("\nresharding: %d databases moved, %d rows acknowledged, %d reads; writes per phase %s; "
          "seconds per phase %s" % (len(moved), load.count(), load.reads, writes_during,
                                     {k: round(v, 1) for k, v in timings.items()}))


# ---- 4. failover --------------------------------------------------------------

def test_failover_keeps_every_write_that_wait_confirmed(clusters):
    c = clusters(masters=3, replicas=1)
    keys = ["fo:%d" % i for i in range(90)]
    writers = {m.port: one_connection(m) for m in c.masters()}  # WAIT counts its own connection's writes
    for k in keys:
        sql(writers[c.owner(k).port], k, "create table t(id integer primary key, pad blob)")
    for m in c.masters():
        assert writers[m.port].execute_command("WAIT", 1, 5000) == 1
    victim = c.owner(keys[0])
    heir = c.replicas_of(victim)[0]
    victim_keys = [k for k in keys if c.owner(k) is victim]
    assert len(victim_keys) >= 15

    acked = {k: set() for k in victim_keys}
    count = [0]
    stop = threading.Event()

    def write():
        r = redis.Redis(host="127.0.0.1", port=victim.port, socket_timeout=5)
        for n in range(1, 30001):
            if stop.is_set():
                return
            k = victim_keys[n % len(victim_keys)]
            try:
                sql(r, k, "insert into t values (?, randomblob(100))", str(n))
                if r.execute_command("WAIT", 1, 1000) != 1:
                    continue
            except (redis.ConnectionError, redis.TimeoutError):
                return
            acked[k].add(n)
            count[0] += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_for(lambda: count[0] >= 300 or not writer.is_alive(), timeout=60,
                 what="300 writes confirmed by WAIT 1")
        assert count[0] >= 300, "the writer stopped early"
        victim.kill()
    finally:
        stop.set()
        writer.join(timeout=30)
    assert not writer.is_alive()
    t0 = time.time()
    wait_for(lambda: heir.client().info("replication")["role"] == "master", timeout=30, what="failover")
    c.wait_stable()
    failover_seconds = time.time() - t0

    h = heir.client()
    for k in victim_keys:
        assert c.owner(k) is heir
        ids = {row[0] for row in query(h, k, "select id from t")[1:]}
        assert acked[k] <= ids, (k, sorted(acked[k] - ids)[:10])
        assert query(h, k, "pragma integrity_check")[1:] == [[b"ok"]]
    rc = c.client()
    for k in keys:  # every database, on every master, takes writes again
        assert sql(rc, k, "insert into t values (-1, null)") == 1

    # the old master comes back as a replica of its heir, with the heir's data
    victim.start()
    wait_for(lambda: victim.client().info("replication").get("master_link_status") == "up",
             timeout=30, what="the old master replicating")
    assert victim.client().info("replication")["master_port"] == heir.port
    assert h.execute_command("WAIT", 1, 5000) == 1
    old = one_connection(victim)
    k = victim_keys[0]
    assert error_of(sql, old, k, "insert into t values (-2, null)") == moved_to(c, heir, k)
    old.execute_command("READONLY")
    assert query(old, k, "select count(*) from t")[1:] == query(h, k, "select count(*) from t")[1:]
    print("\nfailover: %d writes confirmed, replica took over in %.1fs" % (count[0], failover_seconds))
