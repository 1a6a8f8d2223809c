"""test_fuzz.py - runs each libFuzzer target briefly (make fuzz runs longer).

The targets (tests/fuzz/) push SQL and damaged pages through the VFS on
the memory store under AddressSanitizer and UBSan; tools/fuzz.sh also
replays tests/fuzz/regressions/. KVSQL_FUZZ_SECONDS sets the time per
target (default 15). The sanitized test run skips this: it would repeat
the same sanitized fuzzing.
"""
import os
import subprocess

import pytest

from harness import ROOT

SECONDS = int(os.environ.get("KVSQL_FUZZ_SECONDS", "15"))


@pytest.fixture(scope="module")
def fuzz_build():
    if os.environ.get("BUILD", "build") != "build":
        pytest.skip("fuzzing runs once, in the plain test run")
    subprocess.run(["make", "-s", "fuzz-build"], cwd=ROOT, check=True, timeout=300,
                   stdout=subprocess.DEVNULL)


@pytest.mark.parametrize("target", ["fuzz_sql", "fuzz_pages"])
def test_fuzz_target_finds_no_crash(fuzz_build, target):
    run = subprocess.run(["tools/fuzz.sh", str(SECONDS), target], cwd=ROOT, capture_output=True,
                         text=True, timeout=SECONDS + 120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no crash" in run.stdout
