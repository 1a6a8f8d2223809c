"""harness.py - real redis-server processes for the tests and tools.

Each Server runs `redis-server` on a free loopback port in its own
temporary directory, with build/kvsql.so loaded (unless module=False),
and is stopped by the test that started it. Used by conftest.py, the
replication/persistence tests and bench/run.
"""
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD", "build")
MODULE = os.environ.get("KVSQL_MODULE", os.path.join(ROOT, BUILD, "kvsql.so"))
# The servers run with the sanitizer runtime preloaded (make test SANITIZE=1).
SANITIZED = bool(os.environ.get("KVSQL_PRELOAD"))


def sql(r, *args):
    """SQL.EXEC key sql [arg ...] on client r."""
    return r.execute_command("SQL.EXEC", *args)


def query(r, *args):
    """SQL.QUERY key sql [arg ...] on client r."""
    return r.execute_command("SQL.QUERY", *args)


def run_threads_for(seconds, targets, stop, join_s=120):
    """Runs each function of targets on a thread of its own for seconds,
    then sets stop (a threading.Event they watch) and waits up to join_s
    seconds for each to end. The soaks' load loop."""
    threads = [threading.Thread(target=t) for t in targets]
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=join_s)


def wait_for(cond, timeout=15, what="condition", interval=0.05):
    """Polls cond() until it is true; fails after timeout seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise AssertionError("timed out waiting for " + what)


def kill_when_busy(server, call, busy_within, join_within, poll=0.02, what="the call ran"):
    """Runs call(client) on a client of its own in a thread; waits up to
    busy_within seconds for kvsql's -BUSY reply to another client's PING,
    stops the call with SQL.KILL from that client and waits up to
    join_within seconds for the thread. Returns (the other client, the
    call's error text or "")."""
    outcome = {}

    def long_call():
        try:
            call(server.client())
        except redis.ResponseError as e:
            outcome["error"] = str(e)

    t = threading.Thread(target=long_call)
    t.start()
    other = server.client()
    busy = False
    deadline = time.time() + busy_within
    while time.time() < deadline and not busy:
        try:
            other.ping()
            time.sleep(poll)
        except redis.ResponseError as e:
            busy = "kvsql is running SQL" in str(e)
    assert busy, "no -BUSY reply while " + what
    assert other.execute_command("SQL.KILL") == b"OK"
    t.join(timeout=join_within)
    return other, outcome.get("error", "")


def run_in_thread(fn):
    """Runs fn() in a thread; returns (thread, outcome dict: value or error)."""
    out = {}

    def body():
        try:
            out["value"] = fn()
        except (redis.ResponseError, redis.ConnectionError) as e:
            out["error"] = str(e)

    t = threading.Thread(target=body)
    t.start()
    return t, out


def attach_replica(servers, master, **kw):
    """A new server (servers(**kw)) replicating master, once its link is up."""
    rep = servers(**kw)
    c = rep.client()
    c.replicaof("127.0.0.1", master.port)
    wait_for(lambda: c.info("replication").get("master_link_status") == "up", what="replica link")
    return rep


def monitored_commands(rep, action, until):
    """Commands the replica (a client of it) executes while `action` runs
    on the master, up to the first one starting with `until` (5 s at most)."""
    seen = []
    with rep.monitor() as stream:
        action()
        deadline = time.time() + 5
        while time.time() < deadline:
            cmd = stream.next_command()["command"]
            seen.append(cmd)
            if cmd.startswith(until):
                break
    return seen


def write_until_killed(r, key, acked, stop, wait_replicas=0):
    """Inserts rows 1, 2, ... into key's table t(id); records the ids whose
    reply arrived (and, with wait_replicas, whose WAIT confirmed that many
    replicas)."""
    for i in range(1, 20001):
        if stop.is_set():
            return
        try:
            sql(r, key, "insert into t(id) values (?)", str(i))
            if wait_replicas and r.execute_command("WAIT", wait_replicas, 2000) < wait_replicas:
                continue
            acked.append(i)
        except (redis.ConnectionError, redis.TimeoutError):
            return


def kill_9_while_writing(server, key, count, what, wait_replicas=0):
    """SIGKILLs server once a writer thread (write_until_killed, on its own
    client) has count acknowledged writes; returns the acknowledged ids."""
    acked, stop = [], threading.Event()
    writer = threading.Thread(target=write_until_killed, args=(server.client(), key, acked, stop, wait_replicas))
    writer.start()
    wait_for(lambda: len(acked) >= count, timeout=30, what=what)
    server.kill()
    stop.set()
    writer.join(timeout=10)
    return acked


def port_range():
    """Where free_port() looks: below the kernel's range of ephemeral ports
    (the local ports of outgoing connections, which could take a chosen
    port before redis-server binds it), the cluster bus (port + 10000)
    too, when that leaves room enough; else 20000-50000."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            first = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32768
    top = min(50000, first - 10000)
    return (20000, top) if top - 20000 >= 1000 else (20000, 50000)


def free_port():
    """A free loopback port below 55535 (cluster bus ports are port + 10000)."""
    lo, hi = port_range()
    for _ in range(1000):
        port = random.randrange(lo, hi)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


class Server:
    def __init__(self, module=True, args=(), dir=None):
        self.module = module
        self.args = list(args)
        self.owns_dir = dir is None
        self.dir = dir or tempfile.mkdtemp(prefix="kvsql-test-")
        self.port = free_port()
        self.proc = None

    def command_line(self):
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
               "--dir", self.dir, "--logfile", "redis.log", "--save", "",
               "--enable-debug-command", "yes", "--repl-diskless-sync-delay", "0"]
        if self.module:
            cmd += ["--loadmodule", MODULE]
        return cmd + self.args

    def start(self, timeout=10, tries=5):
        """Starts redis-server. If its port was taken meanwhile (another
        process bound it after free_port() looked), a first start moves to
        another port; a restart, which others may know by its port (a
        replica, a cluster), tries the same port again a little later."""
        first = self.proc is None
        for attempt in range(tries):
            try:
                return self.start_once(timeout)
            except RuntimeError as e:
                if "Address already in use" not in str(e) or attempt == tries - 1:
                    raise
                if first:
                    self.port = free_port()
                else:
                    time.sleep(0.5)
        raise AssertionError("not reached")

    def start_once(self, timeout):
        env = dict(os.environ)
        if os.environ.get("KVSQL_PRELOAD"):  # a sanitized module: runtime first, reports to files
            env["LD_PRELOAD"] = os.environ["KVSQL_PRELOAD"]
            env["ASAN_OPTIONS"] = "log_path=%s/sanitizer:detect_leaks=1" % self.dir
            env["UBSAN_OPTIONS"] = "log_path=%s/sanitizer:print_stacktrace=1" % self.dir
        self.proc = subprocess.Popen(self.command_line(), cwd=self.dir, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited at start:\n" + self.log())
            try:
                if self.client().ping():
                    return self
            except (redis.ConnectionError, redis.BusyLoadingError):
                time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING in %ss:\n%s" % (timeout, self.log()))

    def client(self, **kw):
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=30, **kw)

    def log(self):
        try:
            with open(os.path.join(self.dir, "redis.log")) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def sanitizer_reports(self):
        """What AddressSanitizer, LeakSanitizer or UBSan reported, if anything."""
        out = []
        for name in sorted(os.listdir(self.dir)):
            if name.startswith("sanitizer"):
                with open(os.path.join(self.dir, name)) as f:
                    out.append(f.read())
        return "\n".join(out)

    def problems(self):
        """A crash in the log or a sanitizer report: '' when there is none."""
        log = self.log()
        crashed = "crashed by signal" in log or "ASSERTION FAILED" in log
        return (log if crashed else "") + self.sanitizer_reports()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def fork_children(self):
        """(pid, seconds alive) of each fork child of this server (BGSAVE,
        AOF rewrite, a diskless sync's RDB)."""
        if not self.alive():
            return []
        out = []
        ticks, uptime = os.sysconf("SC_CLK_TCK"), float(open("/proc/uptime").read().split()[0])
        for name in os.listdir("/proc"):
            try:
                with open("/proc/%s/stat" % name) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # not a process, or gone meanwhile
            # fields[0] is the state (Z: gone, not yet reaped), [1] the parent's pid, [19] the start time
            if int(fields[1]) == self.proc.pid and fields[0] != "Z":
                out.append((int(name), uptime - int(fields[19]) / ticks))
        return out

    def unstick_fork_child(self, after_s=20):
        """Under the sanitizer only: kills a fork child of this server alive
        for more than after_s seconds, and returns its stack ('' when there
        was none). GCC 12's AddressSanitizer takes no lock around fork(), so
        a child forked while a module worker thread held the sanitizer
        allocator's lock waits for it forever (LLVM added the missing
        pthread_atfork handler in December 2023): seen in the soak of
        offloaded writes, a diskless sync's child stopped in zmalloc ->
        SizeClassAllocator64::GetFromAllocator -> Mutex::Lock. A production
        build, on jemalloc or glibc malloc, has those handlers. Killed, the
        child is forked again by Redis (a replica's sync) or the next
        rewrite."""
        if not SANITIZED:
            return ""
        for pid, age in self.fork_children():
            if age < after_s:
                continue
            try:
                stack = subprocess.run(["gdb", "-batch", "-p", str(pid), "-ex", "bt"], stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, timeout=30).stdout.decode(errors="replace")
            except (OSError, subprocess.TimeoutExpired) as e:
                stack = "(no stack: %s)" % e
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return "fork child %d, %.0f s old:\n%s" % (pid, age, stack[-3000:])
        return ""

    def stop(self, save=False):
        """Shut down cleanly; with save=True as a `SHUTDOWN SAVE`."""
        if not self.alive():
            return
        try:
            self.client().shutdown(save=save, nosave=not save)
        except redis.ConnectionError:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart(self, save=False):
        self.stop(save=save)
        return self.start()

    def close(self):
        """Stops the server; returns its problems() ('' when none). The
        directory is kept for a look when there were some."""
        self.stop()
        problems = self.problems()
        if self.owns_dir and not problems:
            shutil.rmtree(self.dir, ignore_errors=True)
        return problems
