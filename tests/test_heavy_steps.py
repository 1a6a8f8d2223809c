"""test_heavy_steps.py - built-in functions whose work grows faster than
their input run inside one virtual machine step, where the progress
handler never looks; kvsql replaces them (src/module/connections/heavy.c) by versions
the time limit, -BUSY and SQL.KILL reach, with the same results.

Each heavy call below runs for minutes to hours with SQLite's own
function; timings are generous on purpose: the tests assert how a call
ended, not how fast.
"""
import random
import sqlite3
import time

import pytest
import redis

from harness import kill_when_busy, query, sql

A16M = "replace(hex(zeroblob(8000000)),'0','a')"  # 16 MB of 'a'


SHOW = "select typeof(v) || ':' || hex(v) from (select %s as v)"  # any bytes, and the type


def native(expr):
    """expr's type and bytes by Python's sqlite3 (the same libsqlite3), or the error."""
    try:
        return sqlite3.connect(":memory:").execute(SHOW % expr).fetchone()[0]
    except sqlite3.Error as e:
        return "error: %s" % e


def kvsql(r, expr, key="db"):
    try:
        return query(r, key, SHOW % expr)[1][0].decode()
    except redis.ResponseError as e:
        return "error: %s" % e


def same_as_native(r, exprs):
    wrong = []
    for e in exprs:
        want, got = native(e), kvsql(r, e)
        if want.startswith("error: "):
            ok = got.startswith("error: ") and want[7:] in got
        else:
            ok = want == got
        if not ok:
            wrong.append((e, want, got))
    assert not wrong, "\n".join("%s: sqlite3 %r, kvsql %r" % w for w in wrong[:20])


def assert_alive(server):
    assert server.client().ping()
    assert not server.problems()


def t(s):
    """s as an SQL text literal, any bytes (not valid UTF-8 too)."""
    return "cast(x'%s' as text)" % s.encode("utf-8", "surrogateescape").hex()


# ---- the same results as SQLite's own functions ------------------------------------

STRINGS = ["", "a", "abc", "aBc", "ABC", "é", "éa", "aé", "ÉÈ", "日本語", "a日b本c", "%", "_", "a%b", "a_b",
           "[", "]", "a[b", "-", "^", "x\\y", "ab*c?d", "\udc80", "a\udcc3", "\udcc3\udca9\udca9", "\udcff"]


def test_instr_and_replace_match_sqlite(r):
    exprs = []
    for h in STRINGS:
        for n in STRINGS[:14]:
            exprs.append("instr(%s, %s)" % (t(h), t(n)))
            exprs.append("replace(%s, %s, 'XY')" % (t(h), t(n)))
    exprs += ["instr(NULL, 'a')", "instr('a', NULL)", "instr(x'', x'')", "instr(x'010203', x'0203')",
              "instr(x'616263', 'b')", "instr('abc', x'63')", "instr(12345, 34)", "instr(1.5, '.')",
              "instr('aaa', '')", "instr('', 'a')", "instr(x'00610062', x'0062')",
              "instr('é' || char(0) || 'x', 'x')", "instr(%s, %s)" % (t("\udc80\udc80b"), t("\udc80b")),
              "replace(NULL, 'a', 'b')", "replace('a', NULL, 'b')", "replace('a', 'a', NULL)",
              "replace(123, '', 'x')", "replace(123, '2', 9)", "replace(x'6100', 'a', 'b')",
              "replace('aaaa', 'aa', 'b')", "replace('aaa', 'a', '')", "replace('abc', 'abcd', 'x')",
              "replace('', 'a', 'b')", "replace('abc', x'00', 'z')", "typeof(replace(1, '', 'x'))",
              "typeof(replace(1, 'z', 'x'))", "replace('éé', 'é', 'e')", "replace(1.25, '2', '')"]
    same_as_native(r, exprs)


def test_trim_with_character_sets_matches_sqlite(r):
    sets = ["", "a", "ab", "ba", "é", "éa", "ê" * 3 + "é", "\udcc3", "\udcc3\udca9", "\udca9", "\udca9\udcc3\udca9",
            "\udcc3" + "é", "é\udcc3", "x" + "\udcc3\udca9\udca9", " "]
    exprs = []
    for s in STRINGS + ["aaéaa", "ééxéé", "\udcc3\udca9\udca9x\udcc3\udca9", "  a  ", "ébab"]:
        for cs in sets:
            for f in ("trim", "ltrim", "rtrim"):
                exprs.append("%s(%s, %s)" % (f, t(s), t(cs)))
    exprs += ["trim(NULL, 'a')", "trim('a', NULL)", "ltrim(123, '1')", "rtrim(1.50, '0')", "trim(x'616200', 'a')",
              "trim('aba', 'a' || char(0) || 'b')", "typeof(trim(5, ''))", "trim('  x  ')", "ltrim('  x  ')"]
    same_as_native(r, exprs)


LIKE_ALPHABET = ["a", "A", "b", "é", "É", "%", "_", "*", "?", "[", "]", "^", "-", "\\", "x"]


def random_text(rng, n):
    return "".join(rng.choice(LIKE_ALPHABET) for _ in range(rng.randint(0, n)))


def test_like_and_glob_match_sqlite(r):
    exprs = ["'abc' like 'ABC'", "'abc' like 'a%'", "'ABC' like 'a_c'", "'éa' like 'Éa'", "'éa' like 'é%'",
             "'a%c' like 'a\\%c' escape '\\'", "'abc' like 'a\\%c' escape '\\'", "'a_c' like 'a^_c' escape '^'",
             "'abc' like 'a%' escape '%'", "'a%' like 'a%%' escape '%'", "'a_' like 'a__' escape '_'",
             "'abc' like 'ab\\' escape '\\'", "'abc' like 'a%\\' escape '\\'",
             "'abc' like 'abc' escape NULL", "NULL like 'a'", "'a' like NULL",
             "'aéb' like 'a_b'", "'aé' like 'a' escape 'é'", "'aé' like 'aéé' escape 'é'",
             "x'616263' like 'a%'", "'abc' like x'6125'", "x'61' like 'a' escape NULL", "x'61' glob 'a'", "123 like '1%'", "1.5 like '1._'", "'' like ''", "'' like '%'", "'a' like ''",
             "'abc' glob 'a*'", "'abc' glob 'A*'", "'abc' glob '?b?'", "'abc' glob '[a-c]bc'", "'abc' glob '[^a]bc'",
             "'abc' glob '[]a]bc'", "']bc' glob '[]a]bc'", "'-bc' glob '[a-]bc'", "'abc' glob '[a'",
             "'abc' glob '*[c]'", "'abc' glob '*[b]'", "'a-c' glob 'a[x-]c'", "'éa' glob '[é]a'",
             "'éa' glob '[a-ê]a'", "'b' glob '[c-a]'", "'ab' glob '*[a-b][a-b]'", "'abc' glob '*'",
             "'a*c' glob 'a[*]c'", "'a?c' glob 'a[?]c'", "'abc' glob 'a[?]c'", "like('a%', 'abc')",
             "glob('a*', 'abc')", "like('a', 'a', 'x')", "'ab' like 'a' || char(0) || 'x'",
             "%s like %s" % (t("\udcc3\udca9"), t("é")), "%s like %s" % (t("a\udc80b"), t("a_b")),
             "%s glob %s" % (t("\udcff"), t("?")), "%s like %s" % (t("\udcc3"), t("%\udcc3"))]
    rng = random.Random(7)
    for _ in range(3000):
        pat, s = random_text(rng, 7), random_text(rng, 9)
        if rng.random() < 0.5:  # strings that may match
            s = "".join(rng.choice(LIKE_ALPHABET[:5]) if c in "%_*?[]^-" else c for c in pat)
        exprs.append("%s like %s" % (t(s), t(pat)))
        exprs.append("%s glob %s" % (t(s), t(pat)))
        if rng.random() < 0.3:
            exprs.append("%s like %s escape %s" % (t(s), t(pat), t(rng.choice("\\%_xé^"))))
    # one query per batch (none of these can fail)
    batch = 200
    for i in range(0, len(exprs), batch):
        part = exprs[i:i + batch]
        cols = ", ".join("%s" % e for e in part)
        want = list(sqlite3.connect(":memory:").execute("select " + cols).fetchone())
        got = query(r, "db", "select " + cols)[1]
        wrong = [(e, w, g) for e, w, g in zip(part, want, got) if w != g]
        assert not wrong, wrong[:10]


def test_like_errors_match_sqlite(r):
    same_as_native(r, ["'a' like 'a' escape 'ab'", "'a' like 'a' escape ''",
                       "'a' like replace(hex(zeroblob(25001)), '0', 'a')",
                       "'a' like replace(hex(zeroblob(25000)), '0', '%')"])


def test_case_sensitive_like_still_works_and_is_reset(r):
    assert query(r, "db", "select 'a' like 'A', 'é' like 'É'")[1] == [1, 0]
    assert query(r, "db", "pragma case_sensitive_like=1; select 'a' like 'A', 'a' like 'a', 'a' glob 'A'")[1] == [0, 1, 0]
    assert query(r, "db", "pragma case_sensitive_like=on; select 'a' like 'A'")[1] == [0]
    assert query(r, "db", "pragma case_sensitive_like=true; pragma case_sensitive_like=no; select 'a' like 'A'")[1] == [1]
    assert query(r, "db", "pragma case_sensitive_like=yes; select 'ab' like 'A%' escape '!'")[1] == [0]
    # the next call finds the default again
    assert query(r, "db", "select 'a' like 'A'")[1] == [1]
    r.execute_command("SQL.EXEC", "db", "pragma case_sensitive_like=1")
    assert query(r, "db", "select 'a' like 'A'")[1] == [1]


def test_functions_work_in_the_schema(r):
    sql(r, "db", "create table t(x text check (x like 'k%' and instr(x, '-') > 0),"
                 " y as (replace(trim(x, 'k'), '-', '+')))")
    sql(r, "db", "create index t_y on t(glob('*+*', y))")
    sql(r, "db", "insert into t(x) values ('k-1'), ('kk-2k')")
    with pytest.raises(redis.ResponseError, match="CHECK constraint"):
        sql(r, "db", "insert into t(x) values ('z-1')")
    assert query(r, "db", "select y from t order by 1")[1:] == [[b"+1"], [b"+2"]]


def test_json_patch_matches_sqlite_and_refuses_too_much_work(r):
    same_as_native(r, ["json_patch('{\"a\":1,\"b\":{\"c\":2}}', '{\"b\":{\"c\":null,\"d\":[1, 2]},\"e\":\"x\"}')",
                       "json_patch('[1,2]', '{\"a\":1}')", "json_patch('{\"a\":1}', '[3]')",
                       "json_patch('{\"a\" : 1 }', ' {\"a\":null}')", "json_patch(NULL, '{}')",
                       "json_patch('{}', NULL)", "json_patch('{', '{}')", "json_patch('{}', '{')",
                       "json_object('k', json_patch('{}', '{\"a\":1}'))", "json_patch(1, 2)",
                       "json_array(json_patch('{\"a\":[1]}', '{\"b\":2}'))"])
    members = "'{' || replace(substr(hex(zeroblob(%d)), 1, %d), '00', '\"a\":1,') || '\"z\":0}'"
    same_as_native(r, ["json_patch(%s, %s)" % (members % (2000, 4000), members % (100, 200))])
    err = kvsql(r, "json_patch(%s, %s)" % (members % (40000, 80000), members % (40000, 80000)))
    assert "json_patch: target and patch too large" in err


PRINTF_FORMATS = ["%d", "%5d|", "%-5d|", "%05d", "%+d", "% d", "%,d", "%x", "%X", "%#x", "%o", "%u", "%i",
                  "%lld", "%ld", "%l", "%ll", "%f", "%.2f", "%10.3f", "%e", "%E", "%g", "%G", "%!.3g", "%#g",
                  "%s", "%.2s", "%10s|", "%-10s|", "%!.2s", "%q", "%Q", "%w", "%c", "%5c|", "%.3c|", "%-5.3c|",
                  "%!.3c", "%*c|", "%-*c|", "%.*c|", "%*.*c|", "%.*d", "%*d", "%ll.*c|", "%5l.3c|", "%.3*c|",
                  "%*5c|", "%.-3c|", "%%", "%n%c", "%T%c", "%S", "%p", "%r", "%z", "%", "a%", "%5", "%.", "%*",
                  "%.*", "%l.3c", "%0*.*c", "%,.*c", "%.0c|", "%.1c|", "%.*c%.*c", "%#.3c", "%y%c"]
PRINTF_ARGS = ["", ", 7", ", 3, 'é'", ", -4, 'ab'", ", 2, 3, 'x'", ", NULL, 'x'", ", 'z', 5", ", 1.5, 2, 'q'",
               ", x'41', 2", ", -2147483648, 'x'", ", 4294967299, 'y'", ", 70000, 'w'"]
# Formats kvsql formats without SQLite's printf statement (heavy.c printf_direct), and
# arguments of every type, long results (past its 256-byte buffer) and a %c after them.
PRINTF_DIRECT_FORMATS = ["", "abc", "x%%y", "%5%|", "%-5%|", "%032d", "%d-%s", "%s%d%s", "%i%u%o%x%X",
                         "%,d", "%+,015d", "% 9.3d", "%#o", "%#X", "%llu", "%lu", "%li", "%ld%lld", "%.0d",
                         "%300d|", "%-300s|", "%.500f", "%!.500f", "%!.200g", "%.70d", "%,.70d", "%.3q", "%+.3e", "%#.0f", "%!.20g", "%!f", "%10.4G", "%.2s|",
                         "%!5.3s|", "%-20q|", "%20Q|", "%.3w", "%w%q%Q", "%z|%z", "%!z", "%300d%c", "%d%c",
                         "%0000000000000000000000000000000000000000000000000000000005d",
                         "%.0000000000000000000000000000000000000000000000000000000003s",
                         "%" + "1" * 10 + "d", "%.4294967299s", "%d%d%d%d%d%d", "%s %s %s", "%lf", "%llx",
                         "%l5d", "%5-d", "%-", "%+", "%.", "%.l"]
PRINTF_DIRECT_ARGS = ["", ", 7", ", -7, 'é'", ", 9223372036854775807, -9223372036854775808", ", 2.5, 'a''b'",
                      ", -0.0, x'00414243'", ", NULL, NULL, NULL", ", 'x', '12abc', 3.99", ", 1e300, -1e-300, 5",
                      ", replace(hex(zeroblob(200)), '0', 'é'), 1", ", 1234567, 2, 3, 4, 5, 6",
                      ", x'e9', 'ab''c'"]


def test_printf_and_format_match_sqlite(r):
    """kvsql reads printf's format itself (src/module/connections/heavy.c) to refuse
    %c repeats past the length limit, then runs SQLite's own."""
    db = sqlite3.connect(":memory:")
    db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 131072 * 1024 // 4)  # kvsql's, from kvsql.call-memory-kb
    db.text_factory = lambda b: b.decode("utf-8", "surrogateescape")  # results that are not UTF-8 compared as bytes
    exprs = []
    for f in PRINTF_FORMATS:
        for a in PRINTF_ARGS:
            exprs.append("printf('%s'%s)" % (f, a))
            exprs.append("format('%s|%s'%s)" % (f, f, a))
    for f in PRINTF_DIRECT_FORMATS:
        for a in PRINTF_DIRECT_ARGS:
            exprs.append("printf('%s'%s)" % (f, a))
    exprs += ["printf('%%.*c', 300, 'x', '%%d')", "printf('%s%%c', 'y')" % ("a" * 400)]
    exprs += ["printf('%.40000000c', 'x')", "printf()", "printf(NULL, 1)", "printf(5)", "printf(x'25642e', 7)", "format('%s %s', 'a')"]
    wrong = []
    for i in range(0, len(exprs), 100):
        part = exprs[i:i + 100]
        q = "select " + ", ".join("quote(%s)" % e for e in part)
        want = list(db.execute(q).fetchone())
        got = [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v for v in query(r, "db", q)[1]]
        wrong += [(e, w, g) for e, w, g in zip(part, want, got) if w != g]
    assert not wrong, wrong[:10]
    r.config_set("kvsql.call-memory-kb", 32768)  # SQLITE_LIMIT_LENGTH 8 MiB
    db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 32768 * 1024 // 4)
    a3m = "replace(hex(zeroblob(1500000)), '0', 'a')"
    for e in ["length(printf('%%s%%s%%s', %s, %s, %s))" % (a3m, a3m, a3m),  # past the length limit: NULL
              "length(printf('%%s%%.3s', %s, %s))" % (a3m, a3m), "length(printf('%.3000000d|%.2000000f', 1, 2))",
              "length(printf('%.9000000d', 1))"]:
        q = "select quote(%s)" % e
        assert query(r, "db", q)[1][0] == db.execute(q).fetchone()[0].encode(), e


# ---- heavy calls are stopped ------------------------------------------------------

# Each runs for minutes (or much longer) with SQLite's own function.
HEAVY_CALLS = {
    "like": "select %s like '%%' || substr(%s, 1, 40000) || 'b'" % (A16M, A16M),
    "like_escape": "select %s like '%%' || replace(hex(zeroblob(6000)), '0', 'a^') || 'b' escape '^'" % A16M,
    "glob": "select %s glob '*' || substr(%s, 1, 40000) || 'b'" % (A16M, A16M),
    "glob_set": "select %s glob '*[' || replace(hex(zeroblob(20000)), '0', 'c') || 'b]b'" % A16M,
    "ltrim": "select length(ltrim(replace(hex(zeroblob(1000000)), '0', 'é'),"
             " replace(hex(zeroblob(1000000)), '0', 'ê') || 'é'))",
    "rtrim": "select length(rtrim(replace(hex(zeroblob(1000000)), '0', 'é'),"
             " replace(hex(zeroblob(1000000)), '0', 'ũ') || 'é'))",  # same last byte as 'é'
    "trim": "select length(trim(replace(hex(zeroblob(1000000)), '0', 'é'),"
            " replace(hex(zeroblob(1000000)), '0', 'ê') || 'é'))",
}


@pytest.mark.parametrize("name", sorted(HEAVY_CALLS))
def test_heavy_call_stops_at_the_time_limit(server, name):
    r = server.client()
    r.config_set("kvsql.query-timeout-ms", 300)
    start = time.time()
    with pytest.raises(redis.ResponseError, match="stopped after 300 ms"):
        query(r, "db", HEAVY_CALLS[name])
    assert time.time() - start < 60
    assert_alive(server)
    assert query(r, "db", "select instr('abc', 'c')")[1] == [3]


@pytest.mark.parametrize("name", ["like", "ltrim", "glob_set"])
def test_heavy_call_gives_busy_replies_and_sql_kill_stops_it(server, name):
    r = server.client()
    r.config_set("kvsql.query-timeout-ms", 0)
    r.config_set("busy-reply-threshold", 100)
    r.config_set("kvsql.worker-threads", 0)  # kept on the main thread: -BUSY (test_offload.py: workers)
    _, error = kill_when_busy(server, lambda c: query(c, "db", HEAVY_CALLS[name]), busy_within=60, join_within=60,
                              what="the call ran")
    assert "stopped by SQL.KILL" in error
    assert_alive(server)


def test_quadratic_inputs_of_instr_and_replace_now_take_linear_time(server):
    """SQLite's own instr and replace compare the needle at every place:
    these took hours. The replacements find each place in linear time."""
    r = server.client()
    r.config_set("kvsql.query-timeout-ms", 20000)
    needle = "replace(hex(zeroblob(4000000)), '0', 'a') || 'b'"
    assert query(r, "db", "select instr(%s, %s)" % (A16M, needle))[1] == [0]
    assert query(r, "db", "select instr(%s || 'b', %s)" % (A16M, needle))[1] == [16000000 - 8000000 + 1]
    assert query(r, "db", "select length(replace(%s, %s, 'x'))" % (A16M, needle))[1] == [16000000]
    # needles that could only match inside a character (SQLite skips those places)
    x80 = "replace(hex(zeroblob(4000000)), '0', cast(x'80' as text))"
    assert query(r, "db", "select instr('b' || %s || %s, %s || 'z')" % (x80, x80, x80))[1] == [0]
    c380 = "replace(hex(zeroblob(4000000)), '00', cast(x'c380' as text))"
    assert query(r, "db", "select instr(%s, cast(x'80' as text) || substr(%s, 1, 1000000))" % (c380, c380))[1] == [0]
    assert_alive(server)


# ---- FTS5 snippet() ---------------------------------------------------------------------

SNIPPET_WORDS = "a b c d e f g h alpha beta".split()
SNIPPET_GAPS = [" ", " ", " ", "  ", ". ", ": ", ", ", "\n", ".", ":", " .  ", "!? ", "\t"]
SNIPPET_MARKS = [("'['", "']'", "'...'"), ("'<b>'", "'</b>'", "''"), ("NULL", "NULL", "NULL"),
                 ("''", "''", "'…'"), ("x'5b00'", "']'", "'..'")]


def snippet_doc(rng, n):
    out = rng.choice(["", " ", ".", "  "])
    for _ in range(n):
        out += rng.choice(SNIPPET_WORDS) + rng.choice(SNIPPET_GAPS)
    return out[:-1] if out and rng.random() < .5 else out


def sql_literal(s):
    return "NULL" if s is None else "'%s'" % s.replace("'", "''")


def snippet_match(rng, trigram, ncol):
    w = lambda: rng.choice(SNIPPET_WORDS)  # noqa: E731
    if trigram:
        return rng.choice(["alp", "bet", "lph", "eta", "alpha", "beta"])
    return rng.choice([w(), w(), " OR ".join(rng.sample(SNIPPET_WORDS, rng.randint(2, 4))), '"%s %s"' % (w(), w()),
                       "NEAR(%s %s, %d)" % (w(), w(), rng.randint(0, 5)), rng.choice(["a*", "al*", "b*", "be*"]),
                       "c%d : %s" % (rng.randrange(ncol), w()), "%s AND %s NOT %s" % (w(), w(), w())])


def snippet_case(rng, n):
    """An FTS5 table (SQL statements) and queries of snippet() on it."""
    ncol = rng.randint(1, 3)
    tokenizer = rng.choice(["unicode61", "porter", "ascii", "trigram", "unicode61 remove_diacritics 0"])
    detail = rng.choice(["full"] * 4 + ["column", "none"])
    setup = ["create virtual table s%d using fts5(%s, tokenize='%s', detail=%s)"
             % (n, ",".join("c%d" % i for i in range(ncol)), tokenizer, detail)]
    for _ in range(rng.randint(1, 6)):
        docs = [None if rng.random() < .05 else snippet_doc(rng, rng.choice([0, 1, 3, 8, 20, 60, 200, 1000]))
                for _ in range(ncol)]
        setup.append("insert into s%d values(%s)" % (n, ",".join(sql_literal(d) for d in docs)))
    queries = []
    for _ in range(25):
        marks = rng.choice(SNIPPET_MARKS)
        col = rng.choice([-1, -1, 0, 1, 2, 3, -5])
        fn = rng.choice(["snippet(s%d, %d, %s, %s, %s, %d)" % (n, col, *marks, rng.choice(
            [1, 2, 3, 5, 7, 8, 10, 16, 32, 64, 100, 0, -1])), "highlight(s%d, %d, %s, %s)" % (n, col, *marks[:2])])
        queries.append("select %s from s%d where s%d match ? order by rowid" % (fn, n, n))
        queries[-1] = (queries[-1], snippet_match(rng, tokenizer == "trigram", ncol))
    queries.append(("select snippet(s%d, 0, 'a', 'b') from s%d where s%d match ?" % (n, n, n), "a"))
    queries.append(("select highlight(s%d, 0, 'a') from s%d where s%d match ?" % (n, n, n), "a"))
    return setup, queries


def test_fts5_snippet_and_highlight_match_sqlite(r):
    """kvsql's snippet() and highlight() (src/module/connections/fts5_snippet.c) choose
    the same column, window and marks as SQLite's own, errors included."""
    rng = random.Random(5)
    db = sqlite3.connect(":memory:")
    wrong, compared = [], 0
    for n in range(16):
        setup, queries = snippet_case(rng, n)
        for stmt in setup:
            db.execute(stmt)
            sql(r, "db", stmt)
        for stmt, m in queries:
            try:
                want = [row[0] for row in db.execute(stmt, [m])]
            except sqlite3.Error as e:
                want = "error: %s" % e
            try:
                got = [None if v is None else v.decode() for (v,) in query(r, "db", stmt, m)[1:]]
            except redis.ResponseError as e:
                got = "error: %s" % e
            ok = want == got or (isinstance(want, str) and isinstance(got, str) and want[7:] in got)
            compared += 1
            if not ok:
                wrong.append((stmt, m, want, got))
    assert compared > 400
    assert not wrong, "\n".join("%s [%s]: sqlite3 %r, kvsql %r" % w for w in wrong[:10])


def test_fts5_snippet_and_highlight_of_many_matches_are_fast_and_stoppable(server):
    """SQLite's snippet() scores every window against every match of the
    row, and both it and highlight() copy their whole result once per
    match: on 2 M matches that step runs for days. kvsql's take n log n and
    linear time, and stop at the time limit."""
    r = server.client()
    r.config_set("kvsql.query-timeout-ms", 60000)
    sql(r, "db", "create virtual table big using fts5(body)")
    sql(r, "db", "insert into big values(replace(hex(zeroblob(1000000)), '00', 'a b. '))")  # 1 M 'a', 1 M 'b'
    start = time.time()
    got = query(r, "db", "select snippet(big, 0, '[', ']', '...', 5) from big where big match 'a OR b'")
    assert got[1] == [b"[a] [b]. [a] [b]. [a]..."]
    got = query(r, "db", "select length(highlight(big, 0, '[', ']')) from big where big match 'a OR b'")
    assert got[1] == [5000000 + 2 * 2000000]  # "[" and "]" around each of 2 M matches
    assert time.time() - start < 30
    r.config_set("kvsql.query-timeout-ms", 100)
    with pytest.raises(redis.ResponseError, match="stopped after 100 ms"):
        query(r, "db", "select snippet(big, 0, '[', ']', '...', 5), snippet(big, 0, '[', ']', '...', 6),"
                       " snippet(big, 0, '<', '>', '', 7) from big where big match 'a OR b'")
    with pytest.raises(redis.ResponseError, match="stopped after 100 ms"):
        query(r, "db", "select length(highlight(big, 0, '[', ']')) + length(highlight(big, 0, '<', '>'))"
                       " + length(highlight(big, 0, '', '')) from big where big match 'a OR b'")
    assert_alive(server)
