/* fuzz_pages.c - libFuzzer target: damaged database pages read through the
 * VFS on the memory store.
 *
 * Built and run by `make fuzz` (and briefly by tests/test_fuzz.py). The
 * input is a database image (seeds: real databases); it is cut into pages
 * of the size its header names (4096 if none) and stored, then opened and
 * queried, written and checked. SQLite may answer "malformed": the process
 * must not crash or trip a sanitizer. */
#include "format.h"
#include "kvsql.h"
#include "store.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int steps;

static int stop_long_runs(void *arg) {
    (void)arg;
    return ++steps > 20000;
}

static uint32_t page_size_of(const uint8_t *data, size_t size) {
    if (size < 100) return 512;
    uint32_t p = kvsql_header_page_size(data);
    return p >= 512 && p <= 65536 && (p & (p - 1)) == 0 ? p : 4096;
}

/* Stores the image as whole pages (the last one padded with zeros). */
static int load(kvsql_store *st, const uint8_t *data, size_t size) {
    uint32_t psz = page_size_of(data, size);
    uint32_t n = (uint32_t)((size + psz - 1) / psz);
    uint8_t *buf = calloc(n ? n : 1, psz);
    kvsql_page_ref *refs = calloc(n ? n : 1, sizeof(*refs));
    memcpy(buf, data, size);
    for (uint32_t i = 0; i < n; i++) refs[i] = (kvsql_page_ref){i, buf + (size_t)i * psz};
    kvsql_batch b = {psz, n, n, refs};
    kvsql_txn t = {0};
    int rc = st->m->begin(st, &t);
    if (rc == SQLITE_OK) rc = st->m->lock(st, &t);
    if (rc == SQLITE_OK) rc = st->m->commit(st, &t, &b);
    st->m->unlock(st, &t, KVSQL_LOCK_NONE);
    free(refs);
    free(buf);
    return rc;
}

static const char *const probes[] = {
    "SELECT * FROM sqlite_master",
    "PRAGMA integrity_check",
    "SELECT * FROM t1 ORDER BY 1 LIMIT 50",
    "SELECT count(*) FROM t1 WHERE rowid > 3",
    "INSERT INTO t1 VALUES (1, 'x'), (2, randomblob(300))",
    "DELETE FROM t1 WHERE rowid % 2 = 0",
    "UPDATE t1 SET b = zeroblob(700) WHERE rowid < 10",
    "VACUUM",
    "CREATE TABLE IF NOT EXISTS z(a); INSERT INTO z SELECT b FROM t1",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 1 << 20) return 0;
    kvsql_store *st;
    sqlite3 *db;
    if (kvsql_memory_store_new(&st) != SQLITE_OK) abort();
    if (size && load(st, data, size) != SQLITE_OK) abort();
    if (kvsql_open(st, &db) == SQLITE_OK) {
        steps = 0;
        sqlite3_progress_handler(db, 100, stop_long_runs, NULL);
        for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) sqlite3_exec(db, probes[i], 0, 0, 0);
    }
    sqlite3_close(db);
    kvsql_store_free(st);
    return 0;
}
