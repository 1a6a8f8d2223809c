"""test_contract.py - the store contract (tests/contract.c) on a real
redis-server: build/test_contract runs every case on the memory store and,
with KVSQL_TEST_REDIS set, on the redis store and the spread store of the
library."""
import os
import subprocess

import pytest

from harness import BUILD, ROOT

CONTRACT = os.path.join(ROOT, BUILD, "test_contract")


@pytest.mark.skipif(not os.path.exists(CONTRACT), reason="test_contract is not built")
def test_every_store_keeps_the_contract(servers):
    s = servers(module=False)
    env = dict(os.environ, KVSQL_TEST_REDIS="127.0.0.1:%d" % s.port)
    p = subprocess.run([CONTRACT], capture_output=True, text=True, timeout=300, env=env)
    failed = [line for line in p.stdout.splitlines() if line.startswith("FAIL")]
    assert p.returncode == 0 and not failed, p.stdout + p.stderr
    assert any(line.startswith("ok redis/") for line in p.stdout.splitlines())
    assert any(line.startswith("ok spread/") for line in p.stdout.splitlines())
