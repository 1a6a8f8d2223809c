"""test_library_big.py - a database past 1 GiB through libkvsql.so keeps the
storage format (docs/FORMAT.md), and the library reads a hash an older
module left without its lock-byte field.

One database of about 1.1 GiB (4096-byte pages: the lock-byte page is field
262144) is written through the library (Python's sqlite3 in this process,
11 transactions of 100 x zeroblob(1000000)) on a redis-server without the
module, then checked in order: every field 0..HLEN-1 and the export; then
field L is deleted by hand (what the module before the lock-byte rule
left) and the library must read it as zeros, one page past HLEN, and its
next write must store the zero page. Skipped in sanitized builds (1.1 GiB
under AddressSanitizer takes minutes and GiBs of shadow memory); tests of
the same rules at small sizes cannot exist, the lock-byte page is at 1 GiB.
"""
import os
import struct
import subprocess
import tempfile
import time

import pytest

from harness import Server
from libhelp import SANITIZED, built, pydb

pytestmark = [pytest.mark.skipif(not built(), reason="libkvsql.so is not built"),
              pytest.mark.skipif(SANITIZED, reason="1.1 GiB databases: too slow and big under the sanitizer")]

KEY, PAGE = "big", 4096
LOCK_BYTE = (1 << 30) // PAGE
CALLS, ROWS, BLOB = 11, 100, 1000000


@pytest.fixture(scope="module")
def big():
    """A server without the module holding KEY, written through the library."""
    s = Server(module=False).start()
    db = pydb(s, KEY)
    t0 = time.time()
    db.execute("create table big(id integer primary key, b blob)")
    for _ in range(CALLS):
        db.execute("with recursive s(x) as (select 1 union all select x + 1 from s where x < ?)"
                   " insert into big(b) select zeroblob(?) from s", (ROWS, BLOB))
    r = s.client()
    print("\nwrote %d pages (%.2f GiB) through the library in %.1f s"
          % (r.hlen(KEY), r.hlen(KEY) * PAGE / 2**30, time.time() - t0))
    yield s, db
    db.close()
    problems = s.close()
    assert not problems, problems


def page_count(r):
    """The database's length in pages, from page 1's header (bytes 28-31)."""
    return struct.unpack(">I", r.hget(KEY, "0")[28:32])[0]


def export_passes_integrity_check(r):
    """FORMAT.md's export (a missing lock-byte field as zeros), then the sqlite3 shell."""
    n = page_count(r)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "big.sqlite")
        with open(path, "wb") as f:
            for start in range(0, n, 20000):
                for page in r.hmget(KEY, list(range(start, min(n, start + 20000)))):
                    f.write(page or bytes(PAGE))
        assert os.path.getsize(path) == n * PAGE
        out = subprocess.run(["sqlite3", path, "pragma integrity_check"], capture_output=True, text=True,
                             timeout=300)
        return out.stdout.strip() == "ok"


def test_a_database_crossing_1_gib_through_the_library_has_every_field_and_exports(big):
    s, _ = big
    r = s.client()
    n = r.hlen(KEY)
    assert n > LOCK_BYTE and n == page_count(r)
    assert r.hget(KEY, LOCK_BYTE) == bytes(PAGE)
    assert sorted(int(f) for f in r.hkeys(KEY)) == list(range(n))
    t0 = time.time()
    assert export_passes_integrity_check(r)
    print("\nexport and integrity_check: %.1f s" % (time.time() - t0))


def test_the_library_reads_a_hash_without_its_lock_byte_field_and_its_next_write_fills_it(big):
    s, db = big
    r = s.client()
    pages = page_count(r)
    r.hdel(KEY, LOCK_BYTE)  # what the module before the lock-byte rule left
    assert r.hlen(KEY) == pages - 1
    other = pydb(s, KEY)  # a fresh client: its begin meets the gap cold
    # a full scan reads ahead across field L: it reads as zeros, nothing is missing
    assert other.execute("select count(*), sum(length(b)) from big").fetchone() == (CALLS * ROWS, CALLS * ROWS * BLOB)
    assert other.execute("select max(id) from big").fetchone()[0] == CALLS * ROWS
    assert db.execute("select count(*) from big").fetchone()[0] == CALLS * ROWS  # the writer, warm before the HDEL
    other.execute("delete from big where id = 1")
    other.close()
    assert r.hget(KEY, LOCK_BYTE) == bytes(PAGE)
    assert r.hlen(KEY) == page_count(r)
    assert sorted(int(f) for f in r.hkeys(KEY)) == list(range(r.hlen(KEY)))
    assert export_passes_integrity_check(r)
