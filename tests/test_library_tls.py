"""test_library_tls.py - libkvsql.so (the `redis` VFS) and the `kvsql`
command over TLS (tls=1, rediss://), as managed Redis services require.

Run by `make test` (tests/run, pytest). The servers are real redis-server
processes (Debian's is built with TLS) listening on a TLS port only
(--port 0 --tls-port), without the module, as on a managed service; the
certificates are made here with the `openssl` command: a CA, a server
certificate for 127.0.0.1 and localhost, a client certificate, an expired
server certificate, and another CA that signed nothing of these. The
library runs in the sqlite3 shell, a process of its own; errors are read
through kvsql_error() and the `kvsql` command's stderr. No assertion
depends on timing.
"""
import os
import subprocess

import pytest
import redis

from cluster import CLUSTER_ARGS, Cluster, redis_cli, slot_of
from harness import BUILD, ROOT, Server
from libhelp import LIB, built, env
from netprobe import PROBE_BUILT, Probe

KVSQL = os.path.join(ROOT, BUILD, "kvsql")

pytestmark = pytest.mark.skipif(not built(), reason="libkvsql.so is not built")


# ---- certificates ---------------------------------------------------------------


def openssl(*args, cwd):
    p = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, "openssl %s: %s" % (" ".join(args), p.stderr)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + ".key", "-out", name + ".crt", "-days", "30", "-subj", "/CN=kvsql test " + name, cwd=d)


def make_cert(d, name, ca, days="30", san="DNS:localhost,IP:127.0.0.1"):
    """A key and a certificate signed by ca; days="-1": expired already."""
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name, cwd=d)
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write("subjectAltName=%s\n" % san)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key", "-set_serial",
            str(abs(hash(name)) % 1000000 + 1), "-days", days, "-extfile", name + ".ext", "-out", name + ".crt", cwd=d)


class Certs:
    def __init__(self, d):
        self.dir = d
        make_ca(d, "ca")
        make_ca(d, "other-ca")
        make_cert(d, "server", "ca")
        make_cert(d, "expired", "ca", days="-1")
        make_cert(d, "client", "ca", san="DNS:client")

    def path(self, name):
        return os.path.join(self.dir, name)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(str(tmp_path_factory.mktemp("tls")))


# ---- servers on a TLS port only --------------------------------------------------


class TlsServer(Server):
    """redis-server with --port 0 and --tls-port; its harness client (start,
    stop, checks) speaks TLS without verifying: it is not what is tested."""

    def __init__(self, certs, cert="server", auth_clients="no", args=()):
        self.certs, self.cert, self.auth_clients = certs, cert, auth_clients
        super().__init__(module=False, args=args)

    def command_line(self):
        cmd = super().command_line()
        cmd[cmd.index("--port") + 1] = "0"
        c = self.certs
        return cmd + ["--tls-port", str(self.port), "--tls-cert-file", c.path(self.cert + ".crt"),
                      "--tls-key-file", c.path(self.cert + ".key"), "--tls-ca-cert-file", c.path("ca.crt"),
                      "--tls-auth-clients", self.auth_clients]

    def client(self, **kw):
        c = self.certs
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=30, ssl=True, ssl_cert_reqs="none",
                           ssl_check_hostname=False, ssl_certfile=c.path("client.crt"),
                           ssl_keyfile=c.path("client.key"), **kw)


@pytest.fixture
def tls_servers(certs):
    started = []

    def start(**kw):
        s = TlsServer(certs, **kw).start()
        started.append(s)
        return s

    yield start
    problems = [s.close() for s in reversed(started)]
    assert not any(problems), "\n".join(problems)


# ---- the library through the sqlite3 shell ----------------------------------------


def uri(addr, key, **params):
    q = "".join("&%s=%s" % kv for kv in params.items())
    return "file:%s?vfs=redis&redis=%s%s" % (key, addr, q)


def shell(addr, key, sql, **params):
    """The sqlite3 shell on key (not stopping at an error): (stdout, stderr)."""
    p = subprocess.run(["sqlite3", "-cmd", ".load " + LIB, "-cmd", ".open " + uri(addr, key, **params)],
                       input=sql, capture_output=True, text=True, timeout=120, env=env())
    return p.stdout, p.stderr


def shell_ok(addr, key, sql, **params):
    out, err = shell(addr, key, sql, **params)
    assert err == "", err
    return out


def refusal(addr, **params):
    """Why a first statement fails: kvsql_error() after it, and the shell's stderr."""
    out, err = shell(addr, "k", "create table t(a);\nselect 'why: ' || kvsql_error();\n", **params)
    assert err != "", "the statement should have failed: " + out
    return out, err


def addr_of(server):
    return "127.0.0.1:%d" % server.port


def trusted(certs, **extra):
    return dict({"tls": "1", "tls_ca": certs.path("ca.crt")}, **extra)


def mutual(certs, **extra):
    return trusted(certs, tls_cert=certs.path("client.crt"), tls_key=certs.path("client.key"), **extra)


TXN = ("create table t(id integer primary key, v text);\n"
       "begin; insert into t(v) values ('a'), ('b'), ('c'); update t set v = v || v where id = 2; commit;\n"
       "select group_concat(v, ',') from t;\n")


# ---- a good certificate -----------------------------------------------------------


def test_a_good_certificate_carries_transactions_and_reads(tls_servers, certs):
    s = tls_servers()
    assert shell_ok(addr_of(s), "db", TXN, **trusted(certs)).strip() == "a,bb,c"
    # a fresh connection reads what the first wrote; the name checked is localhost
    out = shell_ok("localhost:%d" % s.port, "db", "select count(*), sum(length(v)) from t;\n", **trusted(certs))
    assert out.strip() == "3|4"
    assert s.client().hlen("db") > 0  # pages live in Redis, as without TLS


def test_big_commits_and_scans_over_tls(tls_servers, certs):
    """A commit of 6 MB (staged, in steps) and a cold scan (read-ahead,
    replies of many TLS records) carry every byte."""
    s = tls_servers()
    check = "select count(*), sum(length(v)), sum(cast(v as integer)) from b;\n"
    sql = ("create table b(id integer primary key, v text);\n"
           "with recursive c(x) as (select 1 union all select x + 1 from c where x < 1500)"
           " insert into b select x, printf('%04000d', x) from c;\n" + check)
    assert shell_ok(addr_of(s), "big", sql, **trusted(certs)).strip() == "1500|6000000|1125750"
    assert shell_ok(addr_of(s), "big", check, **trusted(certs)).strip() == "1500|6000000|1125750"
    assert s.client().hlen("big") > 1400


def test_a_plain_connection_to_a_tls_port_fails(tls_servers, certs):
    s = tls_servers()
    out, err = refusal(addr_of(s))
    assert "why: redis at %s" % addr_of(s) in out and "tls=1 or rediss://" in out, out


def test_mutual_tls_needs_the_client_certificate(tls_servers, certs):
    s = tls_servers(auth_clients="yes")
    assert shell_ok(addr_of(s), "db", TXN, **mutual(certs)).strip() == "a,bb,c"
    out, err = refusal(addr_of(s), **trusted(certs))
    assert "client certificate" in out and "tls_cert=" in out, out


def test_a_server_certificate_from_another_ca_is_refused(tls_servers, certs):
    s = tls_servers()
    out, err = refusal(addr_of(s), **trusted(certs, tls_ca=certs.path("other-ca.crt")))
    assert "certificate is not trusted" in out and "no CA of tls_ca= signed it" in out, out


def test_the_system_ca_store_does_not_trust_a_private_ca(tls_servers, certs):
    s = tls_servers()
    out, err = refusal(addr_of(s), tls="1")
    assert "certificate is not trusted" in out and "system" in out, out


def test_an_expired_server_certificate_is_refused(tls_servers, certs):
    s = tls_servers(cert="expired")
    out, err = refusal(addr_of(s), **trusted(certs))
    assert "certificate is not trusted" in out and "certificate has expired" in out, out


def test_a_wrong_host_name_is_refused(tls_servers, certs):
    s = tls_servers()
    out, err = refusal(addr_of(s), **trusted(certs, tls_server_name="wrong.example"))
    assert "expected name wrong.example" in out and "mismatch" in out and "tls_server_name=" in out, out
    # the same certificate, named right, works
    assert shell_ok(addr_of(s), "db", "select 1;\n", **trusted(certs, tls_server_name="localhost")).strip() == "1"


def test_a_renewed_ca_file_is_read_again(tls_servers, certs, tmp_path):
    """Contexts are shared within a process: one whose file changed is not."""
    s = tls_servers()
    ca = str(tmp_path / "ca.pem")
    with open(certs.path("other-ca.crt")) as f, open(ca, "w") as g:
        g.write(f.read())
    u = uri(addr_of(s), "db", tls="1", tls_ca=ca)
    sql = ("create table t(a);\nselect 'first: ' || kvsql_error();\n"
           ".shell cp %s %s\n.open %s\n" % (certs.path("ca.crt"), ca, u) +
           "create table t(a);\ninsert into t values ('ok');\nselect 'second: ' || a from t;\n")
    p = subprocess.run(["sqlite3", "-cmd", ".load " + LIB, "-cmd", ".open " + u], input=sql, capture_output=True,
                       text=True, timeout=120, env=env())
    assert "first: cannot connect" in p.stdout and "no CA of tls_ca= signed it" in p.stdout, p.stdout
    assert "second: ok" in p.stdout, p.stdout + p.stderr


def test_tls_verify_0_connects_to_what_verification_refuses(tls_servers, certs):
    s = tls_servers(cert="expired")
    assert shell_ok(addr_of(s), "db", TXN, tls="1", tls_verify="0").strip() == "a,bb,c"


def test_timeout_ms_holds_over_tls(tls_servers, certs):
    s = tls_servers()
    shell_ok(addr_of(s), "db", "create table t(a);\n", **trusted(certs))
    r = s.client()
    r.execute_command("CLIENT", "PAUSE", "60000", "WRITE")  # scripts wait; the handshake and UNPAUSE do not
    try:
        out, err = refusal(addr_of(s), **trusted(certs, timeout_ms="300"))
    finally:
        r.execute_command("CLIENT", "UNPAUSE")
    assert "connection lost during begin" in out and "Resource temporarily unavailable" in out, out


@pytest.mark.parametrize("params,words", [
    ({"tls_ca": "/nonexistent/ca.crt"}, "tls_ca=/nonexistent/ca.crt: No such file"),
    ({"tls": "1", "tls_cert": "/x.crt"}, "tls_cert= and tls_key= go together"),
    ({"tls": "2"}, "tls=2"),
    ({"tls": "1", "tls_verify": "no"}, "tls_verify=no"),
])
def test_tls_parameters_are_checked(tls_servers, certs, params, words):
    s = tls_servers()
    if "tls_ca" in params:
        params = dict(params, tls="1")
    out, err = refusal(addr_of(s), **params)
    assert words in out + err, out + err


def test_tls_parameters_without_tls_are_refused(tls_servers, certs):
    s = tls_servers()
    out, err = refusal(addr_of(s), tls_ca=certs.path("ca.crt"))
    assert "TLS is off" in out + err, out + err


# ---- the kvsql command and KVSQL_DEFAULT ------------------------------------------


def kvsql(*args):
    return subprocess.run([KVSQL, *args], capture_output=True, text=True, timeout=60, env=env())


def tool_url(server, key, certs, scheme="rediss", **extra):
    q = "&".join("%s=%s" % kv for kv in dict({"tls_ca": certs.path("ca.crt")}, **extra).items())
    return "%s://127.0.0.1:%d/%s?%s" % (scheme, server.port, key, q)


def test_the_kvsql_command_imports_and_exports_over_tls(tls_servers, certs, tmp_path):
    s = tls_servers(auth_clients="yes")
    src, out = str(tmp_path / "src.db"), str(tmp_path / "out.db")
    subprocess.run(["sqlite3", src, "create table t(a); insert into t values (1), (2), (3);"], check=True)
    ident = {"tls_cert": certs.path("client.crt"), "tls_key": certs.path("client.key")}
    res = kvsql("import", src, tool_url(s, "shop", certs, **ident))
    assert res.returncode == 0, res.stderr
    res = kvsql("export", tool_url(s, "shop", certs, scheme="redis", tls="1", **ident), out)
    assert res.returncode == 0, res.stderr
    dump = subprocess.run(["sqlite3", out, "select group_concat(a) from t"], capture_output=True, text=True)
    assert dump.stdout.strip() == "1,2,3"
    res = kvsql("check", tool_url(s, "shop", certs, **ident))
    assert res.returncode == 0, res.stderr


def test_the_kvsql_command_says_why_tls_failed(tls_servers, certs, tmp_path):
    s = tls_servers()
    res = kvsql("check", tool_url(s, "shop", certs, tls_server_name="wrong.example"))
    assert res.returncode != 0 and "mismatch" in res.stderr and "tls_server_name=" in res.stderr, res.stderr
    res = kvsql("check", tool_url(s, "shop", certs, tls_cA="x"))
    assert res.returncode != 0 and "tls_cA" in res.stderr, res.stderr


def test_kvsql_default_takes_tls_as_a_query_string(tls_servers, certs):
    s = tls_servers()
    default = "rediss://127.0.0.1:%d?tls_ca=%s" % (s.port, certs.path("ca.crt"))
    p = subprocess.run(["sqlite3", "-cmd", ".load " + LIB, "-cmd", ".open file:plain?vfs=redis"],
                       input=TXN, capture_output=True, text=True, timeout=120, env=env(KVSQL_DEFAULT=default))
    assert p.stderr == "" and p.stdout.strip() == "a,bb,c", p.stderr
    assert s.client().exists("plain")


# ---- a TLS cluster ------------------------------------------------------------------


class TlsCluster(Cluster):
    """A Redis Cluster whose nodes speak TLS only, the bus and replication too."""

    def __init__(self, certs, masters=3):
        self.certs = certs
        self.replicas = 0
        self.args = CLUSTER_ARGS + ["--tls-cluster", "yes", "--tls-replication", "yes"]
        self.nodes = []
        try:
            for _ in range(masters):
                self.start_node()
            redis_cli("--tls", "--cacert", certs.path("ca.crt"), "--cert", certs.path("client.crt"),
                      "--key", certs.path("client.key"), "--cluster", "create", *[n.addr for n in self.nodes],
                      "--cluster-replicas", 0, "--cluster-yes")
            self.wait_stable()
        except BaseException:
            self.close()
            raise

    def start_node(self):
        s = TlsServer(self.certs, args=self.args)
        self.nodes.append(s)
        s.start()
        s.addr = "127.0.0.1:%d" % s.port
        return s


def test_a_tls_cluster_routes_every_key_to_its_owner(certs):
    c = TlsCluster(certs)
    try:
        seed = c.nodes[0]
        keys = ["k%d" % i for i in range(12)]
        owners = {c.owner(k).port for k in keys}
        assert len(owners) > 1  # some keys live away from the seed: MOVED is followed over TLS
        for k in keys:
            out = shell_ok(seed.addr, k, "create table t(a); insert into t values ('%s'); select a from t;\n" % k,
                           **trusted(certs))
            assert out.strip() == k
        for k in keys:
            assert c.owner(k).client().hlen(k) > 0, "key %s (slot %d) not on its owner" % (k, slot_of(k))
            assert shell_ok(seed.addr, k, "select a from t;\n", **trusted(certs)).strip() == k
    finally:
        assert not c.close()


def test_a_batch_of_the_network_layer_reaches_every_tls_node_verified(certs):
    """kvsql_net (src/client/net/nodes.h, through build/net_probe) takes TLS
    from the configuration for every node's link: a batch over keys of all
    three masters lands on each; unverifiable or plain, it names the node."""
    if not PROBE_BUILT:
        pytest.skip("net_probe is not built")
    c = TlsCluster(certs)
    probes = []
    try:
        seed = c.nodes[0]
        keys = ["k%d" % i for i in range(300)]
        p = Probe("rediss://%s?tls_ca=%s" % (seed.addr, certs.path("ca.crt")))
        probes.append(p)
        ans = p.run([["SET", k, "v" + k] for k in keys])
        assert ans["rc"] == 0 and ans["replies"] == ["OK"] * len(keys), ans
        assert ans["max_in_flight"] == 3, ans
        for k in keys[:30]:
            assert c.owner(k).client().get(k) == ("v" + k).encode()
        for url, words in [("rediss://%s?tls_ca=%s" % (seed.addr, certs.path("other-ca.crt")), "not trusted"),
                           ("redis://%s" % seed.addr, "if the server speaks only TLS")]:
            q = Probe(url)
            probes.append(q)
            bad = q.run([["GET", "k1"]])
            assert bad["rc"] != 0 and seed.addr in bad["err"] and words in bad["err"], bad
    finally:
        for p in probes:
            p.close()
        assert not c.close()
