"""test_net.py - the network layer for many nodes (src/client/net/nodes.h)
against real redis-server processes: a 3-master Redis Cluster
(tests/cluster.py) and one plain server.

build/net_probe (tests/net.c) holds one kvsql_net and runs the batches
this file sends it, one line each, answering each with its replies and
the counters (per node: requests, round trips, bytes). The tests check
where every command landed with their own clients of each node. Every
wait is for an event and bounded; nothing depends on timing.
"""
import json

import pytest

from cluster import finish_slot, slot_of, wait_for
from fakenode import FakeNode
from netprobe import PROBE_BUILT, Probe
SQLITE_BUSY, SQLITE_IOERR, SQLITE_CANTOPEN, SQLITE_AUTH = 5, 10, 14, 23

pytestmark = pytest.mark.skipif(not PROBE_BUILT, reason="net_probe is not built")


@pytest.fixture
def probes():
    made = []

    def make(addr):
        made.append(Probe(addr))
        return made[-1]

    yield make
    for p in made:
        p.close()


def one_key_per_slot(prefix):
    """16384 keys, the i-th in slot i."""
    keys = [None] * 16384
    left, i = 16384, 0
    while left and i < 2000000:
        k = "%s%d" % (prefix, i)
        s = slot_of(k)
        if keys[s] is None:
            keys[s] = k
            left -= 1
        i += 1
    assert left == 0
    return keys


def owners(c):
    """[Server owning slot i for i in 0..16383], by one CLUSTER SLOTS."""
    out = [None] * 16384
    for lo, hi, master, *_ in c.alive()[0].client().execute_command("CLUSTER", "SLOTS"):
        for s in range(lo, hi + 1):
            out[s] = c.by_port(master[1])
    return out


def ok(ans):
    assert ans["rc"] == 0, ans["err"]
    return ans["replies"]


def node_of(ans, server):
    return ans["nodes"].get(server.addr, {})


# ---- routing -----------------------------------------------------------------

def test_a_batch_over_every_slot_lands_each_command_on_its_owner_in_one_round_trip_per_node(clusters, probes):
    c = clusters(masters=3)
    masters = c.masters()
    keys = one_key_per_slot("k")
    p = probes(masters[0].addr)
    ok(p.run([["GET", keys[0]]]))  # the slot map and the connections
    p.clear()
    ans = p.run([["SET", k, "v-" + k] for k in keys])
    assert ok(ans) == ["OK"] * len(keys)
    # in flight together: one round, every master written before any reply read,
    # one wait for each, each asked exactly for the keys of its slots
    assert ans["rounds"] == 1 and ans["max_in_flight"] == 3 and ans["refreshes"] == 0, ans
    owner = owners(c)
    for m in masters:
        mine = [k for k in keys if owner[slot_of(k)] is m]
        st = node_of(ans, m)
        assert st["requests"] == len(mine) and st["round_trips"] == 1 and st["redirects"] == 0, (m.addr, st)
        assert st["bytes_out"] > 0 and st["bytes_in"] == 2 * len(mine), st  # "OK" each
        held = {k.decode() for k in m.client().scan_iter(count=1000)}
        assert held == set(mine), m.addr
    ans = p.run([["GET", k] for k in keys])
    assert ok(ans) == ["v-" + k for k in keys]
    assert ans["rounds"] == 2 and all(node_of(ans, m)["round_trips"] == 2 for m in masters)


def test_every_node_has_its_requests_before_any_reply_is_awaited(clusters, probes):
    """The server side of "in flight together": while the seed (the first
    node whose replies the probe reads) is paused, the other masters have
    already run their commands of the same batch."""
    c = clusters(masters=3)
    seed = c.masters()[0]
    owner = owners(c)
    p = probes(seed.addr)
    ok(p.run([["GET", "x"]]))
    keys = one_key_per_slot("p")[::128]
    others = [k for k in keys if owner[slot_of(k)] is not seed]
    assert len(others) < len(keys) and {owner[slot_of(k)].port for k in others} == {
        m.port for m in c.masters() if m is not seed}
    seed.client().execute_command("CLIENT", "PAUSE", 30000, "WRITE")  # the SETs wait
    try:
        p.send([["SET", k, "1"] for k in keys])
        wait_for(lambda: all(owner[slot_of(k)].client().get(k) == b"1" for k in others), timeout=20,
                 what="the other masters to run their part while the seed is paused")
        assert not p.sel.select(0)  # the probe still waits for the seed's replies
    finally:
        seed.client().execute_command("CLIENT", "UNPAUSE")
    ans = p.answer()
    assert ok(ans) == ["OK"] * len(keys) and ans["rounds"] == 2 and ans["max_in_flight"] == 3, ans


def test_one_server_without_cluster_mode_takes_every_slot(servers, probes):
    s = servers(module=False)
    keys = ["k%d" % i for i in range(1000)]
    p = probes("127.0.0.1:%d" % s.port)
    ans = p.run([["SET", k, k] for k in keys] + [["MGET", keys[0], keys[1]]])
    assert ok(ans)[-1] == [keys[0], keys[1]]
    st = list(ans["nodes"].values())
    assert len(st) == 1 and st[0]["requests"] == 1001 and st[0]["round_trips"] == 2, st  # map, then the batch
    assert s.client().dbsize() == 1000


def test_the_configuration_s_password_and_database_reach_every_link(servers, probes):
    s = servers(module=False)
    s.client().config_set("requirepass", "secret")
    try:
        p = probes("redis://default:secret@127.0.0.1:%d/3" % s.port)
        assert ok(p.run([["SET", "k%d" % i, "v"] for i in range(10)])) == ["OK"] * 10
        assert s.client(password="secret", db=3).dbsize() == 10
        bad = probes("redis://default:wrong@127.0.0.1:%d/3" % s.port).run([["GET", "k1"]])
        assert bad["rc"] == SQLITE_AUTH and "127.0.0.1:%d" % s.port in bad["err"], bad
        assert "WRONGPASS" in bad["err"] and bad["replies"] == [None], bad
    finally:
        s.client(password="secret").config_set("requirepass", "")  # so the harness can stop it


def test_a_node_refusing_the_password_fails_every_batch_that_needs_it_naming_it(clusters, probes):
    c = clusters(masters=3)
    seed, other = c.masters()[0], c.masters()[1]
    owner = owners(c)
    seed.client().config_set("requirepass", "secret")
    other.client().config_set("requirepass", "not-the-same")
    try:
        p = probes("redis://default:secret@%s" % seed.addr)
        keys = one_key_per_slot("a")[::64]
        for _ in range(2):  # the refused link is dropped, not left unauthenticated for the next batch
            ans = p.run([["GET", k] for k in keys])
            assert ans["rc"] == SQLITE_AUTH and other.addr in ans["err"] and "WRONGPASS" in ans["err"], ans
        mine = [k for k in keys if owner[slot_of(k)] is not other]  # seed and third master: fine
        assert ok(p.run([["GET", k] for k in mine])) == [None] * len(mine)
    finally:
        seed.client(password="secret").config_set("requirepass", "")
        other.client(password="not-the-same").config_set("requirepass", "")


# ---- slot migration ----------------------------------------------------------

def migrating(c, slot, source, target):
    t, s = target.client(), source.client()
    t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", c.node_id(source))
    s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", c.node_id(target))


def migrate(source, target, keys):
    assert source.client().execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 10000,
                                           "KEYS", *keys) == b"OK"


def test_every_command_succeeds_during_a_migration_ask_and_after_it_moved(clusters, probes):
    c = clusters(masters=3)
    mig = ["{mig}%d" % i for i in range(20)]
    slot = slot_of(mig[0])
    source = c.owner(slot)
    target = next(m for m in c.masters() if m is not source)
    others = [k for k in one_key_per_slot("o")[::97]]  # every node's slots too
    p = probes(c.masters()[0].addr)
    assert ok(p.run([["SET", k, "v" + k] for k in mig + others])) == ["OK"] * (len(mig) + len(others))

    migrating(c, slot, source, target)
    migrate(source, target, mig[:10])  # half of the slot's keys on the target
    batch = ([["GET", k] for k in mig + others] + [["SET", "{mig}new", "fresh"]] +
             [["MGET", mig[0], mig[1]], ["MGET", mig[10], mig[11]]])
    ans = p.run(batch)
    replies = ok(ans)
    assert replies[:len(mig) + len(others)] == ["v" + k for k in mig + others]
    assert replies[-3:] == ["OK", ["v" + mig[0], "v" + mig[1]], ["v" + mig[10], "v" + mig[11]]]
    assert node_of(ans, source)["redirects"] == 12, ans  # ASK: 10 GETs, the new key, one MGET
    # written on the importing node: its 10 migrated keys and the new one
    assert target.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 11
    assert source.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 10

    migrate(source, target, mig[10:])
    finish_slot(c, slot, target)
    p.clear()
    ans = p.run([["GET", k] for k in mig + ["{mig}new"] + others])
    assert ok(ans) == ["v" + k for k in mig] + ["fresh"] + ["v" + k for k in others]
    assert node_of(ans, source)["redirects"] >= 1 and ans["refreshes"] == 1, ans  # MOVED, then the map
    p.clear()
    ans = p.run([["GET", k] for k in mig])
    assert ok(ans) == ["v" + k for k in mig]
    assert ans["rounds"] == 1 and all(st["redirects"] == 0 for st in ans["nodes"].values()), ans
    assert node_of(ans, target)["requests"] == len(mig)


def tryagain_count(server):
    stat = server.client().info("errorstats").get("errorstat_TRYAGAIN", "count=0")
    if isinstance(stat, dict):  # some redis-py versions parse it
        return int(stat["count"])
    return int(dict(kv.split("=") for kv in stat.split(","))["count"])


def test_tryagain_is_retried_until_the_migration_lets_the_command_through(clusters, probes):
    c = clusters(masters=3)
    a, b = "{try}a", "{try}b"
    slot = slot_of(a)
    source = c.owner(slot)
    target = next(m for m in c.masters() if m is not source)
    p = probes(source.addr)
    ok(p.run([["SET", a, "1"], ["SET", b, "2"]]))
    migrating(c, slot, source, target)
    migrate(source, target, [a])  # a moved, b not: MGET a b is TRYAGAIN at the source
    before = tryagain_count(source)
    p.send([["MGET", a, b], ["GET", "{elsewhere}x"]])
    wait_for(lambda: tryagain_count(source) > before, timeout=10, what="a TRYAGAIN at the source")
    migrate(source, target, [b])  # now both on the target: ASK, then the command runs there
    ans = p.answer()
    assert ok(ans) == [["1", "2"], None]
    assert node_of(ans, source)["redirects"] >= 1, ans


# ---- failures ----------------------------------------------------------------

def test_a_node_down_gives_an_error_naming_it_then_clusterdown_names_who_said_it(clusters, probes):
    c = clusters(masters=3)
    masters = c.masters()
    victim, live = masters[1], masters[0]
    keys = one_key_per_slot("d")
    p = probes(live.addr)
    ok(p.run([["SET", k, "x"] for k in keys[::50]]))
    victim.kill()
    for _ in range(2):  # the open link breaks, then no connection at all
        ans = p.run([["SET", k, "y" * 100] for k in keys])  # more than one write() to each node
        assert ans["rc"] in (SQLITE_IOERR, SQLITE_CANTOPEN) and victim.addr in ans["err"], ans
        assert ans["replies"] == [None] * len(keys)
    owner = owners(c)
    mine = [k for k in keys if owner[slot_of(k)] is live][:20]
    # a failed batch says nothing of its commands: those sent to live nodes may have run
    assert ok(p.run([["SET", k, "z"] for k in mine])) == ["OK"] * len(mine)
    assert ok(p.run([["GET", k] for k in mine])) == ["z"] * len(mine)
    wait_for(lambda: live.client().cluster("info")["cluster_state"] == "fail", timeout=30,
             what="the cluster to see the node down")
    ans = p.run([["GET", k] for k in mine])
    assert ans["rc"] == SQLITE_BUSY and "CLUSTERDOWN" in ans["err"] and live.addr in ans["err"], ans


def test_after_a_failover_the_next_batches_find_the_promoted_replica(clusters, probes):
    c = clusters(masters=3, replicas=1)
    keys = one_key_per_slot("f")[::16]
    seed = c.masters()[0]
    p = probes(seed.addr)
    assert ok(p.run([["SET", k, "v" + k] for k in keys])) == ["OK"] * len(keys)
    q = probes(seed.addr)  # its map names every master, its only link is to the seed
    q_key = next(k for k in keys if c.owner(k) is seed)
    assert ok(q.run([["GET", q_key]])) == ["v" + q_key] and len(q.run([])["nodes"]) >= 3
    victim = c.masters()[1]
    heir = c.replicas_of(victim)[0]
    assert victim.client().execute_command("WAIT", 1, 10000) == 1  # the replica has every write
    victim.kill()
    wait_for(lambda: heir in c.masters() and c.stable(), timeout=60, what="the replica promoted")
    answers = [p.run([["GET", k] for k in keys]) for _ in range(2)]
    first, second = answers
    if first["rc"] != 0:  # the dead master's link broke under the first batch: said, and the map asked again
        assert first["rc"] == SQLITE_IOERR and victim.addr in first["err"], first
    assert ok(second) == ["v" + k for k in keys]
    assert node_of(second, heir)["requests"] > 0 and victim.addr not in json.dumps(second["replies"])
    # no link to the dead master yet: its refused connection makes the map be asked for, and
    # the first batch goes to the promoted replica
    q.clear()
    ans = q.run([["GET", k] for k in keys])
    assert ok(ans) == ["v" + k for k in keys]
    assert ans["refreshes"] == 1 and node_of(ans, heir)["requests"] > 0, ans


# ---- hostile replies ---------------------------------------------------------

@pytest.mark.parametrize("reply", [
    b"-MOVED\r\n", b"-MOVED 99999 127.0.0.1:1\r\n", b"-MOVED 12 127.0.0.1:notaport\r\n",
    b"-MOVED 12 :\r\n", b"-MOVED 12 127.0.0.1:1\r\n", b"-ASK 12 127.0.0.1:1\r\n", b"-ASK x y\r\n",
    b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n", b"-CLUSTERDOWN The cluster is down\r\n",
    b"-MOVED 12 " + b"h" * 5000 + b":7000\r\n",
])
def test_bad_or_unreachable_redirections_fail_the_batch_or_come_back_as_errors(reply, probes):
    node = FakeNode(reply)
    try:
        ans = probes("redis://%s?connect_timeout_ms=500&timeout_ms=5000" % node.addr).run([["GET", "k"]])
    finally:
        node.close()
    if ans["rc"] == 0:  # not a redirection it could follow: the caller judges the error reply
        assert ans["replies"] == [{"error": reply[1:-2].decode()}], ans
    else:
        assert ans["replies"] == [None] and ans["err"], ans
        assert node.addr in ans["err"] or "127.0.0.1:1" in ans["err"], ans


@pytest.mark.parametrize("slots", [
    b"*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$0\r\n\r\n:1\r\n",          # owner: our host, port 1 (nothing there)
    b"*1\r\n*3\r\n:0\r\n:16383\r\n*1\r\n$9\r\n127.0.0.1\r\n",       # a node without a port
    b"*1\r\n*3\r\n:5\r\n:16384\r\n*2\r\n$0\r\n\r\n:1\r\n",          # a slot past the last
    b"*1\r\n*2\r\n:0\r\n:16383\r\n", b"*1\r\n:5\r\n", b"*0\r\n", b"$3\r\nabc\r\n",
])
def test_bad_slot_maps_fail_the_batch_cleanly(slots, probes):
    node = FakeNode(b"-ERR nothing\r\n", slots=slots)
    try:
        ans = probes("redis://%s?connect_timeout_ms=500&timeout_ms=5000" % node.addr).run([["GET", "k"]])
    finally:
        node.close()
    assert ans["rc"] != 0 and ans["replies"] == [None] and ans["err"], ans
