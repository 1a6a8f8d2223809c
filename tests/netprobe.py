"""netprobe.py - build/net_probe (tests/net.c) as a Python object: one
kvsql_net (src/client/net/nodes.h) in its own process, fed batches.

Used by test_net.py and test_library_tls.py. Every answer is waited for
with a bound; close() fails when the process ended badly or a sanitizer
spoke.
"""
import json
import os
import selectors
import subprocess

from harness import BUILD, ROOT

PROBE = os.path.join(ROOT, BUILD, "net_probe")
PROBE_BUILT = os.path.exists(PROBE)


class Probe:
    """build/net_probe on seed `addr`: run() sends one batch and returns its answer."""

    def __init__(self, addr):
        self.p = subprocess.Popen([PROBE, addr], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.p.stdout, selectors.EVENT_READ)

    def send(self, cmds):
        """Sends a batch (a list of word lists) without waiting for its answer."""
        self.p.stdin.write("run " + " ; ".join(" ".join(c) for c in cmds) + "\n")
        self.p.stdin.flush()

    def answer(self, timeout=60):
        assert self.sel.select(timeout), "net_probe did not answer in %ss" % timeout
        line = self.p.stdout.readline()
        assert line, "net_probe ended: %s" % self.p.stderr.read()
        return json.loads(line)

    def run(self, cmds):
        self.send(cmds)
        return self.answer()

    def clear(self):
        self.p.stdin.write("clear\n")
        self.p.stdin.flush()
        assert self.answer()["rc"] == 0

    def close(self):
        self.p.stdin.close()
        err = self.p.stderr.read()
        assert self.p.wait(timeout=30) == 0 and "Sanitizer" not in err, err
