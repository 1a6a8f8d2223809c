/* hooks.c - SQLite's hooks on a connection of the `redis` VFS (hooks.h):
 * the row changes capture publishes (docs/FORMAT.md, "The changes
 * stream"; docs/LIBRARY.md, "Change capture").
 *
 * Called by SQLite (the preupdate hook and the trace callback), by
 * client/extension.c (kvsql_hooks_attach, for each new connection) and by
 * client/hash/store_redis.c (begin, commit, end of a transaction).
 *
 * The entries are the module's (change_log.c): the preupdate hook records
 * each row change of the main database and names its values by column
 * there and then (SQLite's session extension reads the schema from its
 * hook the same way); the trace callback sees each statement start
 * (SQLITE_TRACE_STMT) and end (SQLITE_TRACE_PROFILE), and so follows
 * BEGIN, SAVEPOINT, RELEASE and ROLLBACK [TO], drops the entries of a
 * statement SQLite undid (a failed statement inside a transaction), and
 * adds a schema entry after DDL. A statement in autocommit commits before
 * its end is traced: its DDL entry is added at the commit. With capture
 * off the hook returns at once and the trace reads one word of each
 * statement's text. The trace also gives the store its write-intent
 * hint (hooks.h), and the VFS opener the statement running on this
 * thread (kvsql_hooks_running). */
/* Debian's libsqlite3 is built with it; the declarations need the macro. */
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include "client/hooks.h"
#include "sqlite.h"

#include "client/hash/store_redis.h"
#include "vfs.h"

#include <stdio.h>
#include <string.h>

struct kvsql_capture {
    sqlite3 *db;
    kvsql_store *store; /* the main database's (it owns this) */
    int on;          /* capture was on at the last begin */
    int busy;        /* kvsql's own query runs: the hooks ignore it */
    int hook_lost;   /* another preupdate hook replaced ours (in this transaction) */
    unsigned seen;   /* statements traced on the connection */
    unsigned seen_at_commit; /* seen at the last commit: a commit with no statement traced since means that
                              * the trace callback was replaced */
    change_log log;
    /* the statement running (traced at its start, not yet at its end) */
    sqlite3_stmt *stmt;
    int stmt_autocommit; /* the connection was in autocommit when it began */
    int stmt_ddl, stmt_dml;
    int schema_added;    /* its schema entry is in the log (autocommit DDL) */
    sqlite3_int64 schema_before;
    const char *refuse;  /* why this transaction may not be published, or NULL */
};

/* ---- kvsql's own queries -------------------------------------------------- */

/* PRAGMA main.schema_version, or -1. */
static sqlite3_int64 schema_version(kvsql_capture *c) {
    sqlite3_stmt *st;
    sqlite3_int64 v = -1;
    c->busy = 1;
    if (sqlite3_prepare_v2(c->db, "PRAGMA main.schema_version", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    c->busy = 0;
    return v;
}

/* ---- the preupdate hook --------------------------------------------------------- */

/* Names the values of the entries from `from` on, now: a table that
 * cannot be read (it is being changed) fails the capture rather than
 * dropping the entry. */
static void resolve_now(kvsql_capture *c, size_t from) {
    size_t before = c->log.n;
    c->busy = 1;
    if (change_log_resolve_from(&c->log, from, c->db, NULL) != 0 || c->log.n != before) c->log.failed = 1;
    c->busy = 0;
}

static void on_preupdate(void *arg, sqlite3 *db, int op, const char *dbname, const char *table, sqlite3_int64 key1,
                         sqlite3_int64 key2) {
    kvsql_capture *c = arg;
    if (!c->on || c->busy || c->log.failed || strcmp(dbname, "main") != 0) return; /* TEMP tables are not stored */
    size_t from = c->log.n;
    change_log_record(&c->log, db, op, table, key1, key2);
    if (!c->log.failed) resolve_now(c, from);
}

/* ---- statements ---------------------------------------------------------------- */

static const char vacuum_refused[] =
    "VACUUM is refused while capture is on: it renumbers the rowids the stream names. Run SQL.CHANGES key OFF, "
    "VACUUM, then SQL.CHANGES key ON (consumers see the restart)";
static const char create_as_refused[] =
    "CREATE TABLE ... AS SELECT is refused while capture is on (its rows would not be captured): create the "
    "table, then INSERT INTO ... SELECT";

static int is_dml(const char *first) {
    return change_sql_is(first, "INSERT") || change_sql_is(first, "UPDATE") || change_sql_is(first, "DELETE") ||
           change_sql_is(first, "REPLACE") || change_sql_is(first, "WITH");
}

/* BEGIN IMMEDIATE or BEGIN EXCLUSIVE. */
static int begins_writing(const char *first, const char *after) {
    char w[32];
    if (!change_sql_is(first, "BEGIN")) return 0;
    change_sql_first_word(after, w, sizeof(w));
    return change_sql_is(w, "IMMEDIATE") || change_sql_is(w, "EXCLUSIVE");
}

static void stmt_begin(kvsql_capture *c, sqlite3_stmt *stmt) {
    const char *sql = sqlite3_sql(stmt);
    char first[32];
    const char *after = change_sql_first_word(sql, first, sizeof(first));
    /* The write-intent hint: this statement will take the write lock of a
     * transaction not yet begun (docs/FORMAT.md, "Begin"). */
    if ((!sqlite3_stmt_readonly(stmt) && sqlite3_get_autocommit(c->db)) || begins_writing(first, after))
        kvsql_redis_store_intend_write(c->store);
    else if (sqlite3_get_autocommit(c->db))
        kvsql_redis_store_intend_read(c->store); /* not a retry of a refused write */
    c->stmt = stmt;
    c->seen++;
    c->stmt_autocommit = sqlite3_get_autocommit(c->db);
    c->stmt_ddl = change_sql_is_ddl(first);
    c->stmt_dml = is_dml(first);
    c->schema_added = 0;
    c->log.stmt_start = c->log.n;
    if (change_sql_is(first, "VACUUM")) c->refuse = vacuum_refused;
    else if (c->stmt_ddl && change_sql_creates_table_as(sql)) c->refuse = create_as_refused;
    /* Inside a transaction (whether capture is on may be known only once
     * it begins: read the version anyway, no round trip of its own). */
    c->schema_before = c->stmt_ddl && !c->stmt_autocommit ? schema_version(c) : -1;
    if (c->on && sqlite3_preupdate_hook(c->db, on_preupdate, c) != c) c->hook_lost = 1;
}

/* Whether the statement made a change itself (not through a trigger). */
static int made_direct_change(const kvsql_capture *c) {
    for (size_t i = c->log.stmt_start; i < c->log.n; i++)
        if (c->log.e[i].depth == 0) return 1;
    return 0;
}

/* Whether the statement writes to a view (its INSTEAD OF triggers make
 * the changes, and SQLite counts none). */
static int writes_a_view(kvsql_capture *c, sqlite3_stmt *stmt) {
    char name[256];
    sqlite3_stmt *st;
    int view = 0;
    if (!change_sql_dml_target(sqlite3_sql(stmt), name, sizeof(name))) return 0;
    c->busy = 1;
    if (sqlite3_prepare_v2(c->db, "SELECT 1 FROM main.sqlite_schema WHERE type = 'view' AND name = ?1", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        view = sqlite3_step(st) == SQLITE_ROW;
        sqlite3_finalize(st);
    }
    c->busy = 0;
    return view;
}

/* Whether SQLite undid the statement that just ended, entries and all: a
 * failed statement (ABORT, the default conflict rule) is rolled back and
 * counted as no change, so a statement that made entries yet counts none
 * failed, unless its changes came only from triggers on a view. */
static int undone(kvsql_capture *c, sqlite3_stmt *stmt) {
    if (!c->stmt_dml || c->log.n == c->log.stmt_start || sqlite3_changes64(c->db) != 0) return 0;
    return made_direct_change(c) || !writes_a_view(c, stmt);
}

/* A statement inside a transaction ended: the entries of one SQLite undid
 * go; a DDL statement that changed the schema adds its schema entry. */
static void stmt_end_in_transaction(kvsql_capture *c, sqlite3_stmt *stmt) {
    if (undone(c, stmt)) change_log_truncate(&c->log, c->log.stmt_start);
    if (c->stmt_ddl && c->schema_before >= 0) {
        sqlite3_int64 v = schema_version(c);
        if (v < 0) c->log.failed = 1;
        else if (v != c->schema_before) {
            change_tables_forget(&c->log.tables);
            if (change_log_add_schema(&c->log, sqlite3_sql(stmt)) != 0) c->log.failed = 1;
        }
    }
}

static void stmt_end(kvsql_capture *c, sqlite3_stmt *stmt) {
    if (stmt != c->stmt) return;
    c->stmt = NULL;
    if (sqlite3_stmt_readonly(stmt)) { /* transaction control: follow it (capture on or not: on is known later) */
        change_log_follow(&c->log, sqlite3_sql(stmt), c->stmt_autocommit); /* -1: SQLite failed it too */
        return;
    }
    if (c->on && !c->stmt_autocommit && !sqlite3_get_autocommit(c->db)) stmt_end_in_transaction(c, stmt);
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

static int on_trace(unsigned type, void *arg, void *p, void *x) {
    kvsql_capture *c = arg;
    if (type == SQLITE_TRACE_STMT && !(x && strncmp((const char *)x, "--", 2) == 0)) {
        running_db = c->db;
        running_stmt = p;
    } else if (type == SQLITE_TRACE_PROFILE && running_stmt == p) {
        running_db = NULL;
        running_stmt = NULL;
    }
    if (c->busy) return 0;
    if (type == SQLITE_TRACE_STMT && !(x && strncmp((const char *)x, "--", 2) == 0)) /* not a trigger's */
        stmt_begin(c, p);
    else if (type == SQLITE_TRACE_PROFILE)
        stmt_end(c, p);
    return 0;
}

/* ---- the store's side --------------------------------------------------------------- */

void kvsql_capture_begin(kvsql_capture *c, int on) {
    c->on = on;
}

const change_log *kvsql_capture_commit(kvsql_capture *c, int again, char *err, size_t errlen) {
    const char *why = NULL;
    if (sqlite3_preupdate_hook(c->db, on_preupdate, c) != c) c->hook_lost = 1; /* ours again from now on */
    if (!kvsql_preupdate_available())
        why = "capture needs SQLite's preupdate hook, which the SQLite kvsql was loaded into does not export";
    else if (c->hook_lost || (c->seen == c->seen_at_commit && !again))
        why = "capture needs the connection's preupdate hook and trace callback, which kvsql installed and the "
              "application replaced";
    else if (c->refuse) why = c->refuse;
    else if (c->log.failed) why = "out of memory, or a table that could not be read, while capturing the changes";
    else if (c->stmt && c->stmt_autocommit && c->stmt_ddl && !c->schema_added) {
        c->schema_added = 1;
        if (change_log_add_schema(&c->log, sqlite3_sql(c->stmt)) != 0) why = "out of memory";
    }
    if (!why) {
        c->seen_at_commit = c->seen;
        return &c->log;
    }
    snprintf(err, errlen, "kvsql changes: %s: nothing was written", why);
    return NULL;
}

void kvsql_capture_end(kvsql_capture *c) {
    change_log_reset(&c->log);
    c->refuse = NULL;
    c->hook_lost = 0;
    c->schema_added = 0;
}

void kvsql_capture_free(kvsql_capture *c) {
    if (!c) return;
    if (running_db == c->db) { /* closed with a statement not ended: forget it */
        running_db = NULL;
        running_stmt = NULL;
    }
    change_log_free(&c->log);
    sqlite3_free(c);
}

/* ---- attaching -------------------------------------------------------------------------- */

int kvsql_hooks_attach(sqlite3 *db) {
    sqlite3_vfs *vfs = NULL;
    kvsql_fcntl_store fs = {0, 0};
    if (sqlite3_file_control(db, "main", SQLITE_FCNTL_VFS_POINTER, &vfs) != SQLITE_OK || !vfs ||
        strcmp(vfs->zName, "redis") != 0 || sqlite3_file_control(db, "main", KVSQL_FCNTL_STORE, &fs) != SQLITE_OK)
        return SQLITE_OK;
    kvsql_capture *c = sqlite3_malloc(sizeof(*c));
    if (!c) return SQLITE_NOMEM;
    memset(c, 0, sizeof(*c));
    c->db = db;
    c->store = fs.store;
    if (kvsql_redis_store_set_capture(fs.store, c) != 0) { /* not a redis store, or it has one */
        sqlite3_free(c);
        return SQLITE_OK;
    }
    sqlite3_preupdate_hook(db, on_preupdate, c);
    sqlite3_trace_v2(db, SQLITE_TRACE_STMT | SQLITE_TRACE_PROFILE, on_trace, c);
    return SQLITE_OK;
}
