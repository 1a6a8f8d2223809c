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
import time

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD", "build")
MODULE = os.environ.get("KVSQL_MODULE", os.path.join(ROOT, BUILD, "kvsql.so"))


def sql(r, *args):
    """SQL.EXEC key sql [arg ...] on client r."""
    return r.execute_command("SQL.EXEC", *args)


def query(r, *args):
    """SQL.QUERY key sql [arg ...] on client r."""
    return r.execute_command("SQL.QUERY", *args)


def wait_for(cond, timeout=15, what="condition", interval=0.05):
    """Polls cond() until it is true; fails after timeout seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise AssertionError("timed out waiting for " + what)


def free_port():
    """A free loopback port below 55535 (cluster bus ports are port + 10000)."""
    for _ in range(1000):
        port = random.randrange(20000, 50000)
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

    def start(self, timeout=10):
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
