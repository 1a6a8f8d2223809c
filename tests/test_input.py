"""test_input.py - what a call receives and replies is exactly what was
sent or stored: no SQL silently skipped, doubles that read back bit for
bit, arguments typed as docs/COMMANDS.md says.
"""
import math
import random
import struct

import pytest
import redis

from harness import query, sql


# ---- SQL text ----------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    b"INSERT INTO t VALUES(2)\x00; DELETE FROM t",
    b"INSERT INTO t VALUES(2)\x00",
    b"\x00DELETE FROM t",
    b"SELECT '\x00'",
])
def test_sql_with_a_nul_byte_is_refused_and_runs_nothing(r, text):
    sql(r, "k", "create table t(a); insert into t values (1)")
    before = r.hgetall("k")
    with pytest.raises(redis.ResponseError, match="NUL byte"):
        sql(r, "k", text)
    with pytest.raises(redis.ResponseError, match="NUL byte"):
        query(r, "k", text)
    assert r.hgetall("k") == before
    assert query(r, "k", "select a from t")[1:] == [[1]]


# ---- doubles -----------------------------------------------------------------------

def bits(x):
    return struct.pack("<d", x)


def significant_digits(text):
    mantissa = text.lower().split("e")[0].lstrip("-").replace(".", "").lstrip("0").rstrip("0")
    return len(mantissa) or 1


def random_doubles(rng, n):
    """(m, e) pairs: m * 2^e is exact in SQL (CAST(m AS REAL) * power(2, e))
    and in Python, over the whole range, subnormals included."""
    out = [(9007199254740991, 971), (4503599627370496, -1074), (1, -1074), (3, -1)]
    while len(out) < n:
        m = rng.randrange(1, 1 << rng.randrange(1, 54))
        out.append((m, rng.randrange(-1074, 1025 - m.bit_length())))
    return out


def test_doubles_over_the_whole_range_read_back_bit_for_bit(r):
    rng = random.Random(20240611)
    pairs = random_doubles(rng, 2000)
    for start in range(0, len(pairs), 200):
        batch = pairs[start:start + 200]
        values = ", ".join("(CAST(?%d AS REAL) * power(2, ?%d))" % (2 * i + 1, 2 * i + 2) for i in range(len(batch)))
        args = [v for m, e in batch for v in (m, e)]
        rows = query(r, "k", "select column1 from (values %s)" % values, *args)[1:]
        for (m, e), (text,) in zip(batch, rows):
            expected = math.ldexp(m, e)
            got = float(text)
            assert bits(got) == bits(expected), (m, e, text, repr(expected))
            assert significant_digits(text.decode()) <= significant_digits(repr(expected)), (text, repr(expected))


def test_reals_keep_their_look(r):
    row = query(r, "k", "select 100.0, 1e300, -1e-300, 0.1, 1.5e-7, -0.0, 1e308 * 10, -1e308 * 10,"
                        " CAST(9007199254740991 AS REAL) * power(2, 971)")[1]
    assert row == [b"100.0", b"1.0e+300", b"-1.0e-300", b"0.1", b"1.5e-07", b"-0.0", b"Inf", b"-Inf",
                   b"1.7976931348623157e+308"]


# ---- arguments -------------------------------------------------------------------

@pytest.mark.parametrize("arg", [
    b"\xed\xa0\x80",          # a UTF-16 surrogate, U+D800
    b"\xed\xbf\xbf",          # U+DFFF
    b"\xf4\x90\x80\x80",      # U+110000, beyond Unicode
    b"\xf5\x80\x80\x80",
    b"\xc0\x80",              # overlong NUL
    b"\xc1\xbf",              # overlong
    b"\xe0\x80\x80",          # overlong 3 bytes
    b"\xf0\x80\x80\x80",      # overlong 4 bytes
    b"\xe2\x82",              # cut short
    b"a\x80",                 # a lone continuation byte
    b"\xff",
])
def test_invalid_utf8_binds_as_blob(r, arg):
    assert query(r, "k", "select typeof(?1), ?1", arg)[1] == [b"blob", arg]


@pytest.mark.parametrize("arg", ["é", "€", "😀", "\U0010ffff", "\ud7ff", "\ue000", "plain"])
def test_valid_utf8_binds_as_text(r, arg):
    data = arg.encode("utf-8")
    assert query(r, "k", "select typeof(?1), ?1", data)[1] == [b"text", data]
