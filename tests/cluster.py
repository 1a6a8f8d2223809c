"""cluster.py - a real Redis Cluster of redis-server processes with kvsql.

Cluster starts N nodes (harness.Server, each on a free loopback port in its
own temporary directory, cluster mode on, a small node timeout so that a
replica takes over a dead master within seconds), joins them with
`redis-cli --cluster create`, and waits until every node agrees. Used by
tests/test_cluster.py; close() stops every node and reports crashes.
"""
import logging
import subprocess

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from harness import Server, wait_for  # noqa: F401 (wait_for: for the tests too)

# redis-py logs every MOVED/ASK it follows as an exception with a traceback:
# thousands of lines in a failure report during resharding. Errors still
# reach the caller.
logging.getLogger("redis.cluster").setLevel(logging.CRITICAL)

NODE_TIMEOUT_MS = 1000
CLUSTER_ARGS = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS)]


def slot_of(key):
    """The cluster slot of a key (CRC16 of the key or of its {hash tag})."""
    return key_slot(key.encode() if isinstance(key, str) else key)


def redis_cli(*args, timeout=120):
    """Runs redis-cli; returns its output, raising with it when it failed."""
    p = subprocess.run(["redis-cli"] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    out = p.stdout.decode(errors="replace")
    if p.returncode != 0:
        raise AssertionError("redis-cli %s failed (%d):\n%s" % (" ".join(map(str, args)), p.returncode, out))
    return out


class Cluster:
    def __init__(self, masters=3, replicas=0, args=()):
        self.replicas = replicas
        self.args = CLUSTER_ARGS + list(args)
        self.nodes = []  # every Server ever started, in order
        try:
            for _ in range(masters * (1 + replicas)):
                self.start_node()
            redis_cli("--cluster", "create", *[n.addr for n in self.nodes],
                      "--cluster-replicas", replicas, "--cluster-yes")
            self.wait_stable()
        except BaseException:
            self.close()
            raise

    # ---- nodes ----------------------------------------------------------------

    def start_node(self):
        s = Server(args=self.args)
        self.nodes.append(s)
        s.start()
        s.addr = "127.0.0.1:%d" % s.port  # after start: a taken port is replaced there
        return s

    def alive(self):
        return [n for n in self.nodes if n.alive()]

    def node_id(self, node):
        return node.client().execute_command("CLUSTER", "MYID").decode()

    def view(self, node=None):
        """CLUSTER NODES as seen by node (default: the first one alive), as
        {node id: {"port", "flags", "master", "connected", "slots", "open"}}."""
        node = node or self.alive()[0]
        raw = node.client().execute_command("CLUSTER", "NODES")
        out = {}
        for line in raw.decode().splitlines():
            f = line.split()
            slots, open_slots = set(), []
            for part in f[8:]:
                if part.startswith("["):  # a slot being migrated or imported
                    open_slots.append(part)
                    continue
                lo, _, hi = part.partition("-")
                slots.update(range(int(lo), int(hi or lo) + 1))
            out[f[0]] = {"port": int(f[1].split("@")[0].split(":")[1]), "flags": set(f[2].split(",")),
                         "master": f[3], "connected": f[7] == "connected", "slots": slots,
                         "open": open_slots}
        return out

    def by_port(self, port):
        return next(n for n in self.nodes if n.port == port)

    def masters(self):
        """The Servers that are masters with slots, by their own account."""
        out = []
        for n in self.alive():
            me = next(v for v in self.view(n).values() if "myself" in v["flags"])
            if "master" in me["flags"] and me["slots"]:
                out.append(n)
        return out

    def replicas_of(self, master):
        mid = self.node_id(master)
        return [self.by_port(v["port"]) for v in self.view(master).values()
                if v["master"] == mid and self.by_port(v["port"]).alive()]

    def owner(self, key_or_slot):
        """The Server that owns the slot (of the key), by CLUSTER SLOTS of a live node."""
        slot = key_or_slot if isinstance(key_or_slot, int) else slot_of(key_or_slot)
        for lo, hi, master, *_ in self.alive()[0].client().execute_command("CLUSTER", "SLOTS"):
            if lo <= slot <= hi:
                return self.by_port(master[1])
        raise AssertionError("slot %d has no owner" % slot)

    def not_owner(self, key):
        return next(n for n in self.masters() if n is not self.owner(key))

    # ---- state -------------------------------------------------------------------

    def stable(self):
        """Every live node answers cluster_state:ok and sees the same slot map,
        with no slot migrating and every live node connected."""
        views = []
        for n in self.alive():
            try:
                if n.client().cluster("info")["cluster_state"] != "ok":
                    return False
                v = self.view(n)
            except redis.RedisError:
                return False
            views.append({k: (frozenset(x["slots"]), "master" in x["flags"]) for k, x in v.items()
                          if "fail" not in x["flags"] and "fail?" not in x["flags"]})
            if any(x["open"] or (not x["connected"] and "myself" not in x["flags"] and "fail" not in x["flags"])
                   for x in v.values()):
                return False
        covered = set()
        for slots, _ in views[0].values():
            covered |= slots
        return len(covered) == 16384 and all(v == views[0] for v in views)

    def wait_stable(self, timeout=30):
        wait_for(self.stable, timeout=timeout, what="a stable cluster", interval=0.1)

    def check(self):
        """redis-cli --cluster check: slots covered, nodes agree, nothing open."""
        return redis_cli("--cluster", "check", self.alive()[0].addr)

    # ---- clients -----------------------------------------------------------------

    def client(self, **kw):
        """A cluster client (follows MOVED and ASK) started from a live node."""
        n = self.alive()[0]
        return RedisCluster(host="127.0.0.1", port=n.port, socket_timeout=30, **kw)

    # ---- growth and resharding --------------------------------------------------

    def add_master(self):
        """Starts an empty node and adds it as a master without slots."""
        s = self.start_node()
        redis_cli("--cluster", "add-node", s.addr, self.alive()[0].addr)
        wait_for(lambda: all(self.node_id(s) in self.view(n) for n in self.alive()),
                 what="the new node known everywhere")
        self.wait_stable()  # it answers CLUSTERDOWN until it has learned every slot
        return s

    def reshard(self, source, target, slots, pipeline=10):
        return redis_cli("--cluster", "reshard", source.addr, "--cluster-from", self.node_id(source),
                         "--cluster-to", self.node_id(target), "--cluster-slots", slots,
                         "--cluster-pipeline", pipeline, "--cluster-yes")

    def rebalance(self, *options):
        return redis_cli("--cluster", "rebalance", self.alive()[0].addr, *options)

    # ---- end ---------------------------------------------------------------------

    def close(self):
        """Stops every node; returns their problems ('' when none)."""
        return "\n".join(p for p in (n.close() for n in reversed(self.nodes)) if p)


def move_slot(cluster, slot, source, target, finish=True):
    """Moves one slot by hand, as redis-cli does: IMPORTING on the target,
    MIGRATING on the source, MIGRATE of every key, then (finish=True) the
    new owner announced to every master. Returns the keys moved."""
    s, t = source.client(), target.client()
    sid, tid = cluster.node_id(source), cluster.node_id(target)
    t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", sid)
    s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", tid)
    moved = []
    for _ in range(1000):
        keys = s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
        if not keys:
            break
        assert s.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 10000, "KEYS", *keys) == b"OK"
        moved += keys
    if finish:
        finish_slot(cluster, slot, target)
    return moved


def finish_slot(cluster, slot, target):
    tid = cluster.node_id(target)
    target.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", tid)
    for n in cluster.masters():
        if n is not target:
            n.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", tid)
    cluster.wait_stable()
