/* check.h - the small test framework of the C test programs in tests/:
 * CHECK macros, SQL helpers and a main loop that prints "ok NAME" or
 * "FAIL NAME: why" per test and ends with "N passed, N failed", the line
 * tests/run counts. Include it once per program. */
#ifndef KVSQL_TESTS_CHECK_H
#define KVSQL_TESTS_CHECK_H

#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

static char failure[512];

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            snprintf(failure, sizeof(failure), "%s:%d: %s", __FILE__, __LINE__, #cond); \
            return 1;                                                                 \
        }                                                                             \
    } while (0)

#define CHECK_OK(db, sql) CHECK(exec_ok(db, sql))

/* The rows 1..n as table s(value), to put in front of a statement. */
#define SERIES(n) "with recursive s(value) as (select 1 union all select value + 1 from s where value < " #n ") "

static inline int exec_ok(sqlite3 *db, const char *sql) {
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, 0, 0, &err);
    if (rc != SQLITE_OK) fprintf(stderr, "  sql error: %s in: %s\n", err ? err : "?", sql);
    sqlite3_free(err);
    return rc == SQLITE_OK;
}

/* The extended result code of running sql (errors are expected here). */
static inline int exec_rc(sqlite3 *db, const char *sql) {
    int rc = sqlite3_exec(db, sql, 0, 0, 0);
    return rc == SQLITE_OK ? rc : sqlite3_extended_errcode(db);
}

/* The first column of the first row as text, into out ("" when none). */
static inline const char *query_text(sqlite3 *db, const char *sql, char *out, size_t n) {
    sqlite3_stmt *st;
    out[0] = 0;
    if (sqlite3_prepare_v2(db, sql, -1, &st, 0) != SQLITE_OK) return out;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(out, n, "%s", sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return out;
}

static inline long long query_int(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st;
    long long v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, 0) != SQLITE_OK) return -1;
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

typedef struct test {
    const char *name;
    int (*fn)(void);
} test;

#define T(f) {#f, f}

static inline int run_tests(const test *tests, size_t n) {
    int passed = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        failure[0] = 0;
        if (tests[i].fn() == 0) {
            printf("ok %s\n", tests[i].name);
            passed++;
        } else {
            printf("FAIL %s: %s\n", tests[i].name, failure);
            failed++;
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#endif
