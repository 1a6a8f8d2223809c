/* fuzz_sql.c - libFuzzer target: any SQL through the VFS on the memory store.
 *
 * Built and run by `make fuzz` (and briefly by tests/test_fuzz.py). Each
 * input is SQL run on a fresh database; whatever it does, the process must
 * not crash or trip a sanitizer, and the database the VFS stored must pass
 * PRAGMA integrity_check afterwards (the oracle: no SQL corrupts storage).
 * Settings with which SQLite itself may corrupt a file (journal_mode=OFF,
 * writable_schema, ...) are refused, as the module refuses them. */
#include "kvsql_core.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int steps;

static int stop_long_runs(void *arg) {
    (void)arg;
    return ++steps > 3000; /* x 100 VM steps */
}

static int deny_risky(void *arg, int action, const char *a, const char *b, const char *c, const char *d) {
    (void)arg, (void)c, (void)d;
    if (action == SQLITE_ATTACH || action == SQLITE_DETACH) return SQLITE_DENY;
    if (action == SQLITE_PRAGMA && b &&
        (!strcmp(a, "journal_mode") || !strcmp(a, "writable_schema") || !strcmp(a, "locking_mode") ||
         !strcmp(a, "synchronous") || !strcmp(a, "cell_size_check") || !strcmp(a, "mmap_size")))
        return SQLITE_DENY;
    return SQLITE_OK;
}

static void check_integrity(sqlite3 *db) {
    sqlite3_progress_handler(db, 0, NULL, NULL);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, 0) != SQLITE_OK) abort();
    if (sqlite3_step(st) != SQLITE_ROW || strcmp((const char *)sqlite3_column_text(st, 0), "ok") != 0) abort();
    sqlite3_finalize(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0;
    char *sql = malloc(size + 1);
    memcpy(sql, data, size);
    sql[size] = 0;
    kvsql_store *st;
    sqlite3 *db;
    if (kvsql_memory_store_new(&st) != SQLITE_OK) abort();
    if (kvsql_open(st, &db) != SQLITE_OK) abort();
    sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)0);
    sqlite3_limit(db, SQLITE_LIMIT_LENGTH, 1000000);
    sqlite3_set_authorizer(db, deny_risky, NULL);
    steps = 0;
    sqlite3_progress_handler(db, 100, stop_long_runs, NULL);
    sqlite3_exec(db, sql, 0, 0, 0);
    if (sqlite3_get_autocommit(db) == 0) sqlite3_exec(db, "ROLLBACK", 0, 0, 0);
    sqlite3_close(db);
    /* Reopen: what reached the store must be a sound database. */
    if (kvsql_open(st, &db) != SQLITE_OK) abort();
    check_integrity(db);
    sqlite3_close(db);
    kvsql_store_free(st);
    free(sql);
    return 0;
}
