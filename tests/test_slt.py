"""test_slt.py - tests of kvsql-slt, the sqllogictest runner (tools/slt*.c),
and the conformance of kvsql to native SQLite on the shared test files.

Run by tests/run (make test). The runner tests run the scripts in
tests/slt/, most of whose records fail on purpose, through every engine,
and assert the exact counts and the first failing file:line: a runner that
passes everything, or fails everything, is caught. The conformance test
runs select1-3.test and evidence/*.test from ../shared/slt (beside the
repository, as in CI) through the module, the memory store and the redis
VFS, and
asserts that no record fails and that as many records ran as natively.
"""
import glob
import os
import re
import subprocess

import pytest

from harness import BUILD, ROOT, free_port

SLT = os.path.join(ROOT, BUILD, "kvsql-slt")
CASES = os.path.join("tests", "slt")  # relative to ROOT, as the runner prints it
SHARED_SLT = os.path.join(ROOT, "..", "shared", "slt")

FILE_LINE = re.compile(
    r"^(?P<path>.+?): (?P<passed>\d+) passed, (?P<failed>\d+) failed, (?P<skipped>\d+) skipped"
    r"(?:, halted at line (?P<halted>\d+))? \([\d.]+ s\)"
    r"(?:; first failure (?P<where>.+?:\d+): (?P<why>.*)|; error: (?P<error>.*))?$")
TOTALS = re.compile(r"^(\d+) passed, (\d+) failed$")


class Run:
    """One kvsql-slt run: its exit status, per-file results and totals."""

    def __init__(self, proc):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.files = {}
        self.totals = None
        for line in proc.stdout.splitlines():
            m = FILE_LINE.match(line)
            if m:
                self.files[m["path"]] = m
            elif TOTALS.match(line):
                self.totals = tuple(int(n) for n in TOTALS.match(line).groups())

    def __repr__(self):
        return "exit %s\n%s%s" % (self.returncode, self.stdout, self.stderr)


def run_slt(engine, files, port=None, extra=(), timeout=60):
    cmd = [SLT, "--engine", engine]
    if port is not None:
        cmd += ["--redis", "127.0.0.1:%d" % port]
    cmd += list(extra) + list(files)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return Run(proc)


def port_for(engine, request):
    """The port of a fresh server: with the module for the module engine,
    without it for the vfs engine (the redis VFS needs no module)."""
    if engine == "vfs":
        return request.getfixturevalue("servers")(module=False).port
    return request.getfixturevalue("server").port if engine == "module" else None


# file, passed, failed, skipped, line of the first failure, words of its report
RUNNER_CASES = [
    ("pass.test", 24, 0, 3, None, None),
    ("fail_value.test", 3, 3, 0, 20, "value 2 (line 24): expected '3', got '2'"),
    ("fail_hash.test", 1, 4, 0, 15, "expected '10 values hashing to 3b0332e02daabf31651a5a0d81ba830b', "
                                    "got '10 values hashing to 3b0332e02daabf31651a5a0d81ba830a'"),
    ("fail_count.test", 1, 2, 0, 13, "expected 1 values, got 2"),
    ("fail_statement.test", 3, 2, 0, 9, "statement ok: expected success, got error: "),
    ("fail_query.test", 1, 4, 0, 6, "no such table: nowhere"),
    ("fail_sort.test", 4, 2, 0, 12, "value 1 (line 15): expected '1', got '3'"),
    ("fail_label.test", 3, 1, 0, 11, "label label-x: got 1 values hashing to"),
    ("fail_format.test", 1, 4, 0, 6, "statement must be 'ok' or 'error', not 'maybe'"),
]

ENGINES = ["native", "memory", "module", "vfs"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name,passed,failed,skipped,line,words", RUNNER_CASES,
                         ids=[c[0] for c in RUNNER_CASES])
def test_runner_counts_and_reports_the_first_failure(engine, name, passed, failed, skipped, line, words, request):
    path = os.path.join(CASES, name)
    run = run_slt(engine, [path], port_for(engine, request))
    got = run.files.get(path)
    assert got, run
    assert (int(got["passed"]), int(got["failed"]), int(got["skipped"])) == (passed, failed, skipped), run
    assert run.totals == (passed, failed), run
    assert run.returncode == (1 if failed else 0), run
    if line is None:
        assert got["where"] is None, run
    else:
        assert got["where"] == "%s:%d" % (path, line), run
        assert words in got["why"], run


@pytest.mark.parametrize("engine", ENGINES)
def test_halt_stops_the_file(engine, request):
    path = os.path.join(CASES, "pass.test")
    run = run_slt(engine, [path], port_for(engine, request))
    assert run.files[path]["halted"] == "192", run  # the record after it would fail


@pytest.mark.parametrize("engine", ["memory", "module"])
def test_engines_are_checked_against_native(engine, request):
    """journal_mode reads "memory" on kvsql and "delete" natively: the script
    leaves the value open, the native reference does not."""
    path = os.path.join(CASES, "reference.test")
    port = port_for(engine, request)
    run = run_slt(engine, [path], port)
    got = run.files[path]
    assert (got["passed"], got["failed"], got["where"]) == ("1", "1", path + ":14"), run
    assert "%s got 'memory', native 'delete'" % engine in got["why"], run
    alone = run_slt(engine, [path], port, extra=["--no-reference"])
    assert alone.totals == (2, 0) and alone.returncode == 0, alone
    native = run_slt("native", [path])
    assert native.totals == (2, 0) and native.returncode == 0, native


def test_totals_add_up_over_files():
    paths = sorted(glob.glob(os.path.join(CASES, "*.test")))
    run = run_slt("native", paths)
    assert sorted(run.files) == paths, run
    passed = sum(c[1] for c in RUNNER_CASES) + 2  # reference.test: 2 passed natively
    failed = sum(c[2] for c in RUNNER_CASES)
    assert run.totals == (passed, failed), run
    assert run.returncode == 1, run


def test_unreadable_file_counts_as_failed():
    path = os.path.join(CASES, "no-such-file.test")
    run = run_slt("native", [path, os.path.join(CASES, "pass.test")])
    assert "cannot open" in run.files[path]["error"], run
    assert run.totals == (24, 1) and run.returncode == 2, run


def test_vfs_engine_needs_a_server():
    run = run_slt("vfs", [os.path.join(CASES, "pass.test")], free_port())
    assert run.returncode == 2 and "cannot connect to redis" in run.stderr, run


@pytest.mark.parametrize("args", [
    ["--engine", "nonesuch", "x.test"],
    ["--engine", "native"],
    ["x.test"],
    ["--engine", "module", "--redis", "localhost", "x.test"],
])
def test_usage_errors(args):
    proc = subprocess.run([SLT] + args, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "usage: kvsql-slt" in proc.stderr, proc


def test_module_engine_needs_a_server():
    run = run_slt("module", [os.path.join(CASES, "pass.test")], free_port())
    assert run.returncode == 2 and "cannot connect to redis" in run.stderr, run


def test_module_engine_needs_the_module(servers):
    bare = servers(module=False)
    run = run_slt("module", [os.path.join(CASES, "pass.test")], bare.port)
    assert run.returncode == 2 and "no SQL.EXEC command" in run.stderr, run


def shared_files():
    root = os.path.normpath(SHARED_SLT)
    names = ["select1.test", "select2.test", "select3.test"]
    files = [os.path.join(root, n) for n in names] + sorted(glob.glob(os.path.join(root, "evidence", "*.test")))
    missing = [f for f in files if not os.path.exists(f)]
    if missing and not os.environ.get("CI"):
        # A fresh clone without ../shared beside it: say so, plainly. CI
        # (CI=true) has the corpus and must run these.
        pytest.skip("the sqllogictest corpus is not beside this clone (%s): conformance not checked" % root)
    assert not missing, "sqllogictest files missing under %s: %s" % (root, missing)
    return files


@pytest.mark.parametrize("engine", ["module", "memory", "vfs"])
def test_shared_sqllogictest_files_pass_as_natively(engine, request):
    files = shared_files()
    native = run_slt("native", files, timeout=300)
    assert native.returncode == 0 and sorted(native.files) == sorted(files), native
    run = run_slt(engine, files, port_for(engine, request), timeout=300)
    failures = ["%s: %s" % (m["where"] or m["path"], m["why"] or m["error"])
                for m in run.files.values() if m["failed"] != "0"]
    assert not failures, "\n".join(failures)
    assert sorted(run.files) == sorted(files), run
    for f in files:
        assert run.files[f]["passed"] == native.files[f]["passed"], (f, run)
        assert run.files[f]["skipped"] == native.files[f]["skipped"], (f, run)
    assert run.totals == native.totals and run.totals[0] > 5000, run
    assert run.returncode == 0, run
