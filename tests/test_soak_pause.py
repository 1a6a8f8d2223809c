"""test_soak_pause.py - a short run of tools/soak_pause.py (issue #22).

Offloaded writes (one step and staged) from several clients while writes
are paused again and again: CLIENT PAUSE ... WRITE, FAILOVER to a stopped
replica, a FAILOVER that completes, SHUTDOWN with a lagging replica. The
soak exits non-zero if a server aborted, the replica differs from the
master (DEBUG DIGEST-VALUE of every database), an acknowledged write is
missing after a restart, a refused write is present, or a big write is
half there. `make soak` runs it longer (SOAK_SECONDS)."""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SECONDS = 40  # plus setup and checks: about a minute


def test_soak_of_offloaded_writes_with_pauses_failovers_and_shutdowns():
    env = dict(os.environ, SOAK_SECONDS=str(SECONDS))
    run = subprocess.run([sys.executable, os.path.join(HERE, "..", "tools", "soak_pause.py")], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=SECONDS + 300)
    out = run.stdout.decode(errors="replace")
    assert run.returncode == 0, out
    assert "checks: ok" in out and "no abort" in out, out
    # The run did what it is for: writes landed, and every kind of pause happened.
    for what in ("acked long", "acked big", "client_pause", "failover_to_stopped_replica",
                 "shutdown_with_lagging_replica"):
        assert what in out, "no %s in the run:\n%s" % (what, out)
    assert re.search(r"\bfailover \d", out), "no completed FAILOVER in the run:\n" + out
    waited = re.search(r"waited out a pause for (\d+) ms", out)
    assert waited and int(waited.group(1)) > 0, "no write met a pause:\n" + out
