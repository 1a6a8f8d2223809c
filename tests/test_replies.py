"""test_replies.py - typed replies, parameters, error classes, INFO and
COMMAND DOCS of the module (docs/COMMANDS.md), through redis-py against a
real redis-server. RESP3 is spoken through a raw socket: redis-py 4.3 has
no RESP3."""
import socket

import pytest
import redis

from harness import Server, query, sql

MIXED = "SELECT 1 AS a UNION ALL SELECT 'x' UNION ALL SELECT 2.5 UNION ALL SELECT NULL UNION ALL SELECT x'ff'"


def test_default_reply_is_unchanged_in_resp2(r):
    assert sql(r, "db", MIXED) == [[[b"a", b"int"]], [1], [b"x"], [b"2.5"], [None], [b"\xff"]]


def test_typed_tells_every_value_type(r):
    assert sql(r, "db", "TYPED", MIXED) == [
        [[b"a", b"int"]], [[b"integer", b"1"]], [[b"text", b"x"]], [[b"real", b"2.5"]], [[b"null", None]],
        [[b"blob", b"\xff"]]]


def test_typed_sends_big_integers_as_exact_text(r):
    assert sql(r, "db", "TYPED", "SELECT 9007199254740993, -9223372036854775808")[1] == [
        [b"integer", b"9007199254740993"], [b"integer", b"-9223372036854775808"]]


def test_map_gives_rows_as_name_value(r):
    reply = sql(r, "db", "MAP", "SELECT 1 AS a, 'x' AS b")
    assert reply == [[[b"a", b"int"], [b"b", b"text"]], [b"a", 1, b"b", b"x"]]  # RESP2: a flat array
    assert sql(r, "db", "map", "typed", "SELECT 2.5 AS r")[1] == [b"r", [b"real", b"2.5"]]


def test_options_work_on_every_command(r):
    sql(r, "db", "CREATE TABLE t(a)")
    assert query(r, "db", "TYPED", "SELECT count(*) FROM t")[1] == [[b"integer", b"0"]]
    assert r.execute_command("SQL", "TYPED", "SELECT 'a'")[1] == [[b"text", b"a"]]


def resp3(port, *args):
    """Sends HELLO 3 and one command on a raw socket; returns the command's raw reply."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    def encode(cmd):
        out = b"*%d\r\n" % len(cmd)
        for a in cmd:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        return out
    s.sendall(encode(["HELLO", "3"]) + encode(args) + encode(["PING"]))
    data = b""
    while not data.endswith(b"+PONG\r\n"):
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    s.close()
    hello_end = data.index(b"*", 1) if data.startswith(b"%") else 0
    return data[hello_end:-len(b"+PONG\r\n")]


def test_resp3_default_reply_has_doubles(server):
    raw = resp3(server.port, "SQL.EXEC", "db", "SELECT 2.5, 1, 'x', NULL")
    assert b",2.5\r\n" in raw and b":1\r\n" in raw and b"$1\r\nx\r\n" in raw and b"_\r\n" in raw


def test_resp3_map_is_a_map(server):
    raw = resp3(server.port, "SQL.EXEC", "db", "MAP", "SELECT 2.5 AS r")
    assert b"%1\r\n$1\r\nr\r\n,2.5\r\n" in raw


# ---- parameters ----------------------------------------------------------

def test_types_bind_null_blob_text_integer_real(r):
    reply = sql(r, "db", "TYPES", "ntbira", "SELECT typeof(?), ?2, typeof(?3), typeof(?4), ?5, typeof(?6), ?6",
                "", "42", "abc", "7", "1.5", "hello")
    assert reply[1] == [b"null", b"42", b"blob", b"integer", b"1.5", b"text", b"hello"]


def test_types_refuses_a_bad_number_and_a_wrong_count(r):
    with pytest.raises(redis.ResponseError, match="not a 64-bit integer"):
        sql(r, "db", "TYPES", "i", "SELECT ?", "x")
    with pytest.raises(redis.ResponseError, match="TYPES has 2 letters but 1 values"):
        sql(r, "db", "TYPES", "ii", "SELECT ?", "1")
    with pytest.raises(redis.ResponseError, match="one letter per argument"):
        sql(r, "db", "TYPES", "q", "SELECT ?", "1")


def test_named_binds_by_name(r):
    assert sql(r, "db", "NAMED", "SELECT :x, :y, :x, @y, $x", "y", "2", ":x", "1")[1] == [1, 2, 1, 2, 1]


def test_named_refuses_missing_unused_and_unnamed(r):
    with pytest.raises(redis.ResponseError, match="no argument gives :y"):
        sql(r, "db", "NAMED", "SELECT :x, :y", "x", "1")
    with pytest.raises(redis.ResponseError, match="argument z names no parameter"):
        sql(r, "db", "NAMED", "SELECT :x", "x", "1", "z", "2")
    with pytest.raises(redis.ResponseError, match="has no name"):
        sql(r, "db", "NAMED", "SELECT ?", "x", "1")
    with pytest.raises(redis.ResponseError, match="name value pairs"):
        sql(r, "db", "NAMED", "SELECT :x", "x")


def test_named_with_types_stores_null_and_blob(r):
    sql(r, "db", "CREATE TABLE t(a, b)")
    sql(r, "db", "NAMED", "TYPES", "nb", "INSERT INTO t VALUES (:a, :b)", "a", "", "b", "text")
    assert sql(r, "db", "TYPED", "SELECT a, b FROM t")[1] == [[b"null", None], [b"blob", b"text"]]


def raw(r, *args):
    """A command's reply as the server sent it, without redis-py's parsing."""
    conn = r.connection_pool.get_connection(args[0])
    try:
        conn.send_command(*args)
        return conn.read_response()
    finally:
        r.connection_pool.release(conn)


# ---- errors ----------------------------------------------------------------

def error_of(r, *args):
    with pytest.raises(redis.ResponseError) as e:
        sql(r, *args)
    return str(e.value)


def test_errors_name_their_class(r):
    sql(r, "db", "CREATE TABLE t(a UNIQUE, b NOT NULL)")
    assert error_of(r, "db", "INSERT INTO t VALUES (1, NULL)").startswith("SQLITE_CONSTRAINT NOT NULL constraint")
    assert error_of(r, "db", "SELEC 1").startswith("SQLITE_ERROR near \"SELEC\": syntax error")
    assert error_of(r, "db", "SELECT * FROM nope").startswith("SQLITE_ERROR no such table: nope")
    assert error_of(r, "db", "ATTACH 'x' AS y").startswith("SQLITE_AUTH ")


def test_errorstats_and_info_count_by_class(r):
    sql(r, "db", "CREATE TABLE t(a UNIQUE)")
    sql(r, "db", "INSERT INTO t VALUES (1)")
    for _ in range(2):
        error_of(r, "db", "INSERT INTO t VALUES (1)")
    assert "errorstat_SQLITE_CONSTRAINT:count=2\r\n" in raw(r, "INFO", "errorstats").decode()
    info = r.info("kvsql")
    assert info["kvsql_errors_sqlite_constraint"] == 2
    assert info["kvsql_errors"] >= 2


def test_timeout_is_an_interrupt_and_counted(r):
    r.config_set("kvsql.query-timeout-ms", 200)
    err = error_of(r, "db", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c")
    assert err.startswith("SQLITE_INTERRUPT SQL stopped after 200 ms")
    assert r.info("kvsql")["kvsql_timeouts"] == 1


# ---- INFO, version, COMMAND DOCS, load arguments -----------------------------

def test_info_shows_versions_and_memory(r):
    info = r.info("kvsql")
    assert str(info["kvsql_version"]) == "1.1.0"
    assert str(info["kvsql_sqlite_version"]).startswith("3.")
    for field in ("kvsql_sqlite_memory", "kvsql_kills", "kvsql_memory_stops", "kvsql_errors_err"):
        assert field in info


def test_module_version_is_mmmmpp(r):
    mods = {dict(zip(m[::2], m[1::2]))[b"name"]: dict(zip(m[::2], m[1::2]))[b"ver"]
            for m in raw(r, "MODULE", "LIST")}
    assert mods[b"kvsql"] == 10100


def test_command_docs_lists_the_arguments(r):
    docs = raw(r, "COMMAND", "DOCS", "sql.exec")
    flat = repr(docs)
    for word in ("key", "TYPED", "MAP", "NAMED", "TYPES", "sql", "arg"):
        assert word in flat, word


def test_unknown_load_argument_is_refused_with_a_log_line():
    s = Server(args=[])
    s.args = []
    cmd = s.command_line()
    i = cmd.index("--loadmodule")
    cmd.insert(i + 2, "bogus")
    s.command_line = lambda: cmd
    with pytest.raises(RuntimeError) as e:
        s.start()
    assert "unknown load argument 'bogus'" in str(e.value)
    s.close()
