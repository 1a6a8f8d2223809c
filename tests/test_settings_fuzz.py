"""test_settings_fuzz.py - seeded random pragmas and function calls through
the real module: the server survives every call, and after each call the
next one sees the default settings (src/module/connections/guard.c).

Bounded: FUZZ_CALLS calls (default 400) or FUZZ_SECONDS (default 60),
whichever ends first; the seed is printed on failure.
"""
import os
import random
import time

import redis

from harness import query, sql
from test_guard import probe

CALLS = int(os.environ.get("FUZZ_CALLS", "400"))
SECONDS = float(os.environ.get("FUZZ_SECONDS", "60"))
SEED = int(os.environ.get("FUZZ_SEED", "1234"))

VALUES = ["0", "1", "-1", "2", "on", "off", "full", "normal", "exclusive", "memory", "wal", "delete",
          "100", "-100", "4096", "1024", "65536", "9223372036854775807", "-9223372036854775808",
          "'/tmp'", "'x'", "''", "t", "main", "temp", "incremental", "utf16"]
ARGS = ["1", "-1", "0", "NULL", "'simple'", "'x'", "X'4141414141414141'", "X''", "?1", "1e308",
        "9223372036854775807", "randomblob(8)", "'%p'", "zeroblob(100)"]


def pragma_names(r):
    return [row[0].decode() for row in query(r, "k", "select name from pragma_pragma_list")[1:]]


def function_names(r):
    return sorted({row[0].decode() for row in query(r, "k", "select name from pragma_function_list")[1:]})


def random_statement(rng, pragmas, functions):
    kind = rng.random()
    if kind < 0.6:
        name = rng.choice(pragmas + ["no_such_pragma", "FOREIGN_KEYS", "Query_Only"])
        schema = rng.choice(["", "", "", "main.", "temp."])
        form = rng.random()
        if form < 0.2:
            return "pragma %s%s" % (schema, name)
        if form < 0.4:
            return "select * from pragma_%s" % name
        value = rng.choice(VALUES)
        return "pragma %s%s = %s" % (schema, name, value) if form < 0.8 else "pragma %s%s(%s)" % (schema, name, value)
    if kind < 0.9:
        name = rng.choice(functions)
        args = ", ".join(rng.choice(ARGS) for _ in range(rng.randrange(0, 4)))
        return "select %s(%s)" % (name, args)
    return rng.choice(["create temp table x(a)", "attach ':memory:' as m", "insert into t(a) values (1)",
                       "begin", "commit", "savepoint s", "create virtual table temp.v using fts5(a)",
                       "select * from dbstat", "select * from sqlite_stmt"])


def test_random_settings_never_crash_and_never_reach_the_next_call(server):
    r = server.client()
    sql(r, "k", "create table t(a check (a < 100), b)")
    default = probe(r)
    pragmas, functions = pragma_names(r), function_names(r)
    rng = random.Random(SEED)
    deadline = time.time() + SECONDS
    calls = 0
    for calls in range(1, CALLS + 1):
        if time.time() > deadline:
            break
        text = "; ".join(random_statement(rng, pragmas, functions) for _ in range(rng.randrange(1, 4)))
        command = rng.choice([query, sql])
        try:
            command(r, "k", text, b"\x00\x01\x02\x03\x04\x05\x06\x07") if "?1" in text else command(r, "k", text)
        except redis.ResponseError:
            pass
        assert server.alive(), "seed %d, call %d: %r" % (SEED, calls, text)
        if calls % 10 == 0 or "pragma" in text:
            assert probe(r) == default, "seed %d, call %d: %r" % (SEED, calls, text)
    assert calls > 50
    assert not server.problems()
