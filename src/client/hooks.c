/* hooks.c - SQLite's hooks on a connection of the `redis` VFS (hooks.h).
 *
 * The preupdate hook and the trace callback feed the connection's
 * capture (client/capture.c: the row changes capture publishes); the
 * trace callback also gives the store its write-intent hint and the VFS
 * opener the statement running on this thread (kvsql_hooks_running).
 * The capture is handed to the store, which owns it from then on. */
/* Debian's libsqlite3 is built with it; the declarations need the macro. */
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include "client/hooks.h"
#include "sqlite.h"

#include "change_log.h"
#include "client/capture.h"
#include "client/hash/store_redis.h"
#include "client/spread/store_spread.h"
#include "vfs.h"

#include <string.h>

static void on_preupdate(void *arg, sqlite3 *db, int op, const char *dbname, const char *table, sqlite3_int64 key1,
                         sqlite3_int64 key2) {
    kvsql_capture_row(arg, db, op, dbname, table, key1, key2);
}

/* The statement of a redis connection running on this thread (traced at
 * its start, not yet at its end), for kvsql_hooks_running(). */
static _Thread_local sqlite3_stmt *running_stmt;
static _Thread_local sqlite3 *running_db;

int kvsql_hooks_running(sqlite3 **db, sqlite3_stmt **stmt) {
    *db = running_db;
    *stmt = running_stmt;
    return running_db != NULL;
}

static void forget_running(sqlite3 *db) {
    if (running_db == db) { /* closed with a statement not ended: forget it */
        running_db = NULL;
        running_stmt = NULL;
    }
}

/* BEGIN IMMEDIATE or BEGIN EXCLUSIVE. */
static int begins_writing(const char *first, const char *after) {
    char w[32];
    if (!change_sql_is(first, "BEGIN")) return 0;
    change_sql_first_word(after, w, sizeof(w));
    return change_sql_is(w, "IMMEDIATE") || change_sql_is(w, "EXCLUSIVE");
}

/* The write-intent hint: this statement will take the write lock of a
 * transaction not yet begun (docs/FORMAT.md, "Begin"). */
static void hint_intent(kvsql_store *store, sqlite3 *db, sqlite3_stmt *stmt) {
    if (!sqlite3_get_autocommit(db)) return;
    char first[32];
    const char *after = change_sql_first_word(sqlite3_sql(stmt), first, sizeof(first));
    if (!sqlite3_stmt_readonly(stmt) || begins_writing(first, after)) {
        kvsql_redis_store_intend_write(store);
        kvsql_spread_store_intend_write(store);
    } else {
        kvsql_redis_store_intend_read(store); /* not a retry of a refused write */
        kvsql_spread_store_intend_read(store);
    }
}

static int on_trace(unsigned type, void *arg, void *p, void *x) {
    kvsql_capture *c = arg;
    sqlite3 *db = sqlite3_db_handle(p);
    int started = type == SQLITE_TRACE_STMT && !(x && strncmp((const char *)x, "--", 2) == 0); /* not a trigger's */
    if (started) {
        running_db = db;
        running_stmt = p;
    } else if (type == SQLITE_TRACE_PROFILE && running_stmt == p) {
        running_db = NULL;
        running_stmt = NULL;
    }
    if (started && !kvsql_capture_busy(c)) hint_intent(kvsql_capture_store(c), db, p);
    if (started || type == SQLITE_TRACE_PROFILE) kvsql_capture_statement(c, p, started);
    return 0;
}


/* ---- attaching -------------------------------------------------------------------------- */

int kvsql_hooks_attach(sqlite3 *db) {
    sqlite3_vfs *vfs = NULL;
    kvsql_fcntl_store fs = {0, 0};
    if (sqlite3_file_control(db, "main", SQLITE_FCNTL_VFS_POINTER, &vfs) != SQLITE_OK || !vfs ||
        strcmp(vfs->zName, "redis") != 0 || sqlite3_file_control(db, "main", KVSQL_FCNTL_STORE, &fs) != SQLITE_OK)
        return SQLITE_OK;
    kvsql_capture *c = kvsql_capture_new(db, fs.store, on_preupdate, forget_running);
    if (!c) return SQLITE_NOMEM;
    if (kvsql_redis_store_set_capture(fs.store, c) != 0 &&
        kvsql_spread_store_set_capture(fs.store, c) != 0) { /* not a redis or spread store, or it has one */
        kvsql_capture_free(c);
        return SQLITE_OK;
    }
    sqlite3_preupdate_hook(db, on_preupdate, c);
    sqlite3_trace_v2(db, SQLITE_TRACE_STMT | SQLITE_TRACE_PROFILE, on_trace, c);
    return SQLITE_OK;
}
