/* txn.c - transactions between connections, through the VFS: several
 * kvsql_open connections on one shared memory store behave as SQLite
 * connections on one database in WAL mode do (snapshot reads, one writer,
 * SQLITE_BUSY_SNAPSHOT for a stale writer), and each sees the others'
 * commits. Built as build/test_txn, run by tests/run. The same rules hold
 * for every store: tests/contract.c checks them at the store level. */
#include "check.h"
#include "kvsql.h"
#include "store.h"

#include <stdlib.h>

/* Two connections on one new memory store. */
static int open_pair(kvsql_store **st, sqlite3 **a, sqlite3 **b) {
    *a = *b = NULL;
    if (kvsql_memory_store_new(st) != SQLITE_OK) return 0;
    return kvsql_open(*st, a) == SQLITE_OK && kvsql_open(*st, b) == SQLITE_OK;
}

static void close_pair(kvsql_store *st, sqlite3 *a, sqlite3 *b) {
    sqlite3_close(a);
    sqlite3_close(b);
    kvsql_store_free(st);
}

static int a_second_writer_is_busy_and_no_update_is_lost(void) {
    kvsql_store *st;
    sqlite3 *a, *b;
    CHECK(open_pair(&st, &a, &b));
    CHECK_OK(a, "create table c(n); insert into c values (0)");
    CHECK_OK(a, "begin immediate");
    CHECK(exec_rc(b, "begin immediate") == SQLITE_BUSY);
    CHECK_OK(a, "update c set n = n + 1; commit");
    CHECK_OK(b, "begin immediate; update c set n = n + 1; commit");
    CHECK(query_int(a, "select n from c") == 2);
    close_pair(st, a, b);
    return 0;
}

static int a_read_transaction_keeps_its_snapshot(void) {
    kvsql_store *st;
    sqlite3 *a, *b;
    CHECK(open_pair(&st, &a, &b));
    CHECK_OK(a, "create table acct(id integer primary key, bal);" SERIES(2000)
                "insert into acct select value, 100 from s");
    CHECK_OK(a, "begin");
    CHECK(query_int(a, "select sum(bal) from acct") == 200000);
    for (int i = 0; i < 20; i++)
        CHECK_OK(b, "update acct set bal = bal + 1 where id % 7 = 0; delete from acct where id > 1990");
    CHECK(query_int(a, "select sum(bal) from acct") == 200000);
    CHECK(query_int(a, "select count(*) from acct") == 2000);
    CHECK_OK(a, "commit");
    CHECK(query_int(a, "select count(*) from acct") == 1990);
    close_pair(st, a, b);
    return 0;
}

static int a_writer_with_a_stale_snapshot_gets_busy_snapshot(void) {
    kvsql_store *st;
    sqlite3 *a, *b;
    CHECK(open_pair(&st, &a, &b));
    CHECK_OK(a, "create table c(n); insert into c values (0)");
    CHECK_OK(a, "begin");
    CHECK(query_int(a, "select n from c") == 0);
    CHECK_OK(b, "update c set n = 5");
    CHECK(exec_rc(a, "update c set n = n + 1") == SQLITE_BUSY_SNAPSHOT);
    CHECK_OK(a, "rollback");
    CHECK(query_int(a, "select n from c") == 5);
    close_pair(st, a, b);
    return 0;
}

/* In exclusive locking mode SQLite bumps the file change counter only at
 * its first commit; the module runs so. Readers must see every later
 * commit all the same: the VFS shows them a counter of its own. */
static int commits_that_leave_the_change_counter_are_seen(void) {
    kvsql_store *st;
    sqlite3 *a, *b;
    CHECK(open_pair(&st, &a, &b));
    CHECK_OK(b, "pragma locking_mode=exclusive; create table t(x); insert into t values (1)");
    CHECK(query_int(a, "select sum(x) from t") == 1); /* a's cache now holds the table */
    for (int i = 2; i <= 5; i++) {
        CHECK_OK(b, "insert into t values (1)");
        CHECK(query_int(a, "select sum(x) from t") == i);
    }
    close_pair(st, a, b);
    return 0;
}

static int a_connection_keeps_its_cache_while_nothing_changed(void) {
    kvsql_store *st;
    sqlite3 *a, *b;
    CHECK(open_pair(&st, &a, &b));
    CHECK_OK(a, "create table t(x);" SERIES(500) "insert into t select randomblob(200) from s");
    CHECK(query_int(a, "select count(*) from t") == 500);
    int hits = 0, misses = 0, unused = 0;
    sqlite3_db_status(a, SQLITE_DBSTATUS_CACHE_MISS, &misses, &unused, 1); /* reset */
    CHECK(query_int(a, "select count(*) from t") == 500);
    sqlite3_db_status(a, SQLITE_DBSTATUS_CACHE_MISS, &misses, &unused, 0);
    CHECK(misses == 0);
    CHECK_OK(b, "insert into t values (1)");
    sqlite3_db_status(a, SQLITE_DBSTATUS_CACHE_HIT, &hits, &unused, 1);
    CHECK(query_int(a, "select count(*) from t") == 501);
    sqlite3_db_status(a, SQLITE_DBSTATUS_CACHE_MISS, &misses, &unused, 0);
    CHECK(misses > 0); /* the change was seen: the cache was dropped */
    close_pair(st, a, b);
    return 0;
}

static int a_rolled_back_writer_leaves_the_others_snapshot_alone(void) {
    kvsql_store *st;
    sqlite3 *a, *b;
    CHECK(open_pair(&st, &a, &b));
    CHECK_OK(a, "create table t(x); insert into t values (1)");
    CHECK_OK(b, "begin; insert into t values (2); rollback");
    CHECK(query_int(a, "select count(*) from t") == 1);
    CHECK_OK(b, "begin immediate; commit"); /* the write lock was given back */
    close_pair(st, a, b);
    return 0;
}

/* A store that shows every snapshot as version 0, as a failover that lost
 * commits can make a version number repeat with other content; only its
 * generation (a reconnection) tells the VFS that it lost track. */
typedef struct forgetful_store {
    kvsql_store base;
    kvsql_store *inner;
    uint32_t generation;
} forgetful_store;

#define FORGETFUL(s) ((forgetful_store *)(s))
static int f_begin(kvsql_store *s, kvsql_txn *t) {
    int rc = FORGETFUL(s)->inner->m->begin(FORGETFUL(s)->inner, t);
    t->version = 0;
    t->generation = FORGETFUL(s)->generation;
    return rc;
}
static int f_read(kvsql_store *s, kvsql_txn *t, uint32_t first, uint32_t n, void *b) {
    return FORGETFUL(s)->inner->m->read(FORGETFUL(s)->inner, t, first, n, b);
}
static int f_lock(kvsql_store *s, kvsql_txn *t) {
    (void)s, (void)t;
    return SQLITE_READONLY;
}
static int f_commit(kvsql_store *s, kvsql_txn *t, const kvsql_batch *b) {
    (void)s, (void)t, (void)b;
    return SQLITE_READONLY;
}
static void f_unlock(kvsql_store *s, kvsql_txn *t, int level) {
    FORGETFUL(s)->inner->m->unlock(FORGETFUL(s)->inner, t, level);
}
static const char *f_errmsg(kvsql_store *s) {
    (void)s;
    return "";
}
static void f_destroy(kvsql_store *s) {
    (void)s; /* lives on the test's stack; the inner store is the test's */
}
static const kvsql_store_methods forgetful_methods = {f_begin, f_read, f_lock, f_commit, f_unlock, f_errmsg, f_destroy};

static int a_reconnection_drops_the_cache_even_when_the_version_repeats(void) {
    kvsql_store *st;
    sqlite3 *a, *b;
    CHECK(open_pair(&st, &a, &b));
    sqlite3_close(a);
    forgetful_store fs = {{&forgetful_methods, ""}, st, 1};
    CHECK(kvsql_open(&fs.base, &a) == SQLITE_OK);
    CHECK_OK(b, "create table t(x); insert into t values (1)");
    CHECK(query_int(a, "select sum(x) from t") == 1);
    CHECK_OK(b, "insert into t values (1)");
    CHECK(query_int(a, "select sum(x) from t") == 1); /* same version, same generation: cache kept */
    fs.generation++;
    CHECK(query_int(a, "select sum(x) from t") == 2);
    close_pair(st, a, b);
    return 0;
}

static const test tests[] = {
    T(a_second_writer_is_busy_and_no_update_is_lost),
    T(a_read_transaction_keeps_its_snapshot),
    T(a_writer_with_a_stale_snapshot_gets_busy_snapshot),
    T(commits_that_leave_the_change_counter_are_seen),
    T(a_connection_keeps_its_cache_while_nothing_changed),
    T(a_rolled_back_writer_leaves_the_others_snapshot_alone),
    T(a_reconnection_drops_the_cache_even_when_the_version_repeats),
};

int main(void) {
    return run_tests(tests, sizeof(tests) / sizeof(tests[0]));
}
