"""test_abi.py - the binary interfaces kvsql offers and uses, checked
against what is built: libkvsql.so exports exactly what include/kvsql.h
declares, and a C program using every declared function links against it
and runs on a real redis-server; the module declares its COMMAND DOCS
arguments in the layout Redis 7.2 and later read (src/module/redis_api.h),
which Redis 7.0 reads too."""
import os
import re
import subprocess

import pytest

from harness import BUILD, ROOT
from libhelp import built, env

HEADER = os.path.join(ROOT, "include", "kvsql.h")
LIBDIR = os.path.join(ROOT, BUILD)

pytestmark = pytest.mark.skipif(not built(), reason="libkvsql.so is not built")


def declared():
    """Function names the public header declares, and whether each is exported (KVSQL_EXPORT)."""
    text = re.sub(r"/\*.*?\*/", "", open(HEADER).read(), flags=re.S)
    text = re.sub(r"^#.*$", "", text, flags=re.M)
    names = {}
    for decl in re.findall(r"[^;{}]*\([^;{}]*\)\s*;", text):
        m = re.search(r"(\w+)\s*\(", decl)
        if m and not decl.strip().startswith("typedef"):
            names[m.group(1)] = "KVSQL_EXPORT" in decl
    return names


def exported():
    out = subprocess.run(["nm", "-D", "--defined-only", os.path.join(LIBDIR, "libkvsql.so")],
                         capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.split()[1] == "T"}


# SQLite's own open routines, which sqlite3.h declares: libkvsql.so defines
# them for LD_PRELOAD and passes each call on (src/client/preload.c).
PRELOAD_ROUTINES = {"sqlite3_open", "sqlite3_open16", "sqlite3_open_v2"}


def test_the_public_header_declares_exactly_what_the_library_exports():
    names = declared()
    assert names and all(names.values()), names  # every function of the header is exported
    assert set(names) == exported() - PRELOAD_ROUTINES
    assert PRELOAD_ROUTINES <= exported()


PROGRAM = r"""
#include "kvsql.h"
#include <stdio.h>
#include <stdlib.h>

/* Every function of the public header, so that the link needs them all. */
static void *const everything[] = {%(table)s};

int main(int argc, char **argv) {
    (void)argc;
    sqlite3 *db = NULL;
    char uri[200];
    kvsql_redis_stats st;
    if (kvsql_register_redis(0) != SQLITE_OK) return 2;
    snprintf(uri, sizeof(uri), "file:c?vfs=redis&redis=127.0.0.1:%%s", argv[1]);
    if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL) != SQLITE_OK)
        return 3;
    if (sqlite3_exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES (1)", 0, 0, 0) != SQLITE_OK) {
        fprintf(stderr, "%%s\n", kvsql_errmsg(db));
        return 4;
    }
    if (kvsql_redis_stats_get(db, NULL, &st) != SQLITE_OK || st.commits < 1) return 5;
    printf("ok %%zu functions, %%lld commits, error '%%s'\n", sizeof(everything) / sizeof(everything[0]),
           (long long)st.commits, kvsql_errmsg(db));
    sqlite3_close(db);
    return 0;
}
"""


def test_a_program_using_every_declared_function_links_and_runs(servers, tmp_path):
    s = servers(module=False)
    names = sorted(declared())
    src = tmp_path / "prog.c"
    src.write_text(PROGRAM % {"table": ", ".join("(void *)%s" % n for n in names)})
    exe = str(tmp_path / "prog")
    cc = subprocess.run(["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-Wno-pedantic", "-I", os.path.dirname(HEADER),
                         str(src), "-o", exe, "-L" + LIBDIR, "-lkvsql", "-lsqlite3", "-Wl,-rpath," + LIBDIR],
                        capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr
    run = subprocess.run([exe, str(s.port)], capture_output=True, text=True, timeout=60, env=env())
    assert run.returncode == 0 and run.stdout.startswith("ok %d functions, 2 commits, error ''" % len(names)), \
        (run.returncode, run.stdout, run.stderr)
    assert s.client().hlen("c") == 2


LAYOUT = r"""
#include "module/redis_api.h"
#include <stddef.h>
#include <stdio.h>
int main(void) {
    printf("%zu %zu\n", offsetof(RedisModuleCommandArg, display_text), sizeof(RedisModuleCommandArg));
    return 0;
}
"""


def test_command_args_have_the_layout_redis_7_2_reads(tmp_path):
    """Redis 7.2 added display_text at the end of RedisModuleCommandArg and reads
    it from every argument, whatever size the module declares: with the 7.0
    layout, COMMAND DOCS labelled each argument with the next one's name."""
    src = tmp_path / "layout.c"
    src.write_text(LAYOUT)
    exe = str(tmp_path / "layout")
    cc = subprocess.run(["gcc", "-std=c11", "-I", os.path.join(ROOT, "src"), str(src), "-o", exe],
                        capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr
    offset, size = map(int, subprocess.run([exe], capture_output=True, text=True).stdout.split())
    # Redis 7.2's struct: name, type, key_spec_index, token, summary, since, flags,
    # deprecated_since, subargs, display_text (LP64: display_text at 64, 72 bytes;
    # the 7.0 struct ends at 64)
    assert (offset, size) == (64, 72)


def test_command_docs_of_sql_drop(server):
    r = server.client()
    conn = r.connection_pool.get_connection("COMMAND")
    try:
        conn.send_command("COMMAND", "DOCS", "sql.drop")
        flat = repr(conn.read_response())
    finally:
        r.connection_pool.release(conn)
    assert "Removes a database" in flat and "FORCE" in flat
    assert flat.index("b'key'") < flat.index("b'force'") < flat.index("b'FORCE'")
