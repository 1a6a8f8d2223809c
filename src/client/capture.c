/* capture.c - the row changes of a `redis` VFS connection's transaction,
 * as capture publishes them (capture.h; docs/FORMAT.md, "The changes
 * stream"; docs/LIBRARY.md, "Change capture").
 *
 * The entries are the module's (change_log.c): each row change of the
 * main database is recorded with its values named by column there and
 * then (SQLite's session extension reads the schema from its hook the
 * same way); each statement's start and end is followed, and so BEGIN,
 * SAVEPOINT, RELEASE and ROLLBACK [TO]: the entries of a statement SQLite
 * undid (a failed statement inside a transaction) are dropped, and a
 * schema entry is added after DDL. A statement in autocommit commits
 * before its end is seen: its DDL entry is added at the commit. With
 * capture off a row change returns at once. */
/* Debian's libsqlite3 is built with it; the declarations need the macro. */
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include "client/capture.h"
#include "client/net/conn.h"
#include "sqlite.h"

#include "vfs.h"

#include <stdio.h>
#include <string.h>

struct kvsql_capture {
    sqlite3 *db;
    kvsql_store *store;        /* the store that owns it: only handed back (kvsql_capture_store) */
    kvsql_capture_hook hook;   /* the preupdate hook that feeds it (installed by hooks.c) */
    void (*on_free)(sqlite3 *db); /* told when it is freed (hooks.c) */
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

/* ---- a row change (the preupdate hook) ------------------------------------------- */

/* Names the values of the entries from `from` on, now: a table that
 * cannot be read (it is being changed) fails the capture rather than
 * dropping the entry. */
static void resolve_now(kvsql_capture *c, size_t from) {
    size_t before = c->log.n;
    c->busy = 1;
    if (change_log_resolve_from(&c->log, from, c->db, NULL) != 0 || c->log.n != before) c->log.failed = 1;
    c->busy = 0;
}

void kvsql_capture_row(kvsql_capture *c, sqlite3 *db, int op, const char *dbname, const char *table,
                       sqlite3_int64 key1, sqlite3_int64 key2) {
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

static void stmt_begin(kvsql_capture *c, sqlite3_stmt *stmt) {
    const char *sql = sqlite3_sql(stmt);
    char first[32];
    change_sql_first_word(sql, first, sizeof(first));
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
    if (c->on && sqlite3_preupdate_hook(c->db, c->hook, c) != c) c->hook_lost = 1;
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

/* ---- making one ------------------------------------------------------------------------ */

kvsql_capture *kvsql_capture_new(sqlite3 *db, kvsql_store *store, kvsql_capture_hook hook,
                                 void (*on_free)(sqlite3 *db)) {
    kvsql_capture *c = sqlite3_malloc(sizeof(*c));
    if (!c) return NULL;
    memset(c, 0, sizeof(*c));
    c->db = db;
    c->store = store;
    c->hook = hook;
    c->on_free = on_free;
    return c;
}

kvsql_store *kvsql_capture_store(const kvsql_capture *c) {
    return c->store;
}

int kvsql_capture_busy(const kvsql_capture *c) {
    return c->busy;
}

void kvsql_capture_statement(kvsql_capture *c, sqlite3_stmt *stmt, int started) {
    if (c->busy) return;
    if (started) stmt_begin(c, stmt);
    else stmt_end(c, stmt);
}

/* ---- what the store asks ------------------------------------------------------------ */

void kvsql_capture_begin(kvsql_capture *c, int on) {
    c->on = on;
}

const change_log *kvsql_capture_commit(kvsql_capture *c, int again, char *err, size_t errlen) {
    const char *why = NULL;
    if (sqlite3_preupdate_hook(c->db, c->hook, c) != c) c->hook_lost = 1; /* ours again from now on */
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
    if (c->on_free) c->on_free(c->db);
    change_log_free(&c->log);
    sqlite3_free(c);
}


size_t kvsql_capture_strings(const change_log *log) {
    size_t n = 0;
    const char *fv[CHANGE_FIELDS_MAX];
    for (size_t i = 0; log && i < log->n; i++) n += 1 + (size_t)change_entry_fields(&log->e[i], fv);
    return n;
}

void kvsql_capture_add_args(struct kvsql_call *k, const change_log *log, char (*counts)[4]) {
    const char *fv[CHANGE_FIELDS_MAX];
    for (size_t i = 0; i < log->n; i++) {
        int n = change_entry_fields(&log->e[i], fv);
        snprintf(counts[i], 4, "%d", n);
        kvsql_call_str(k, counts[i]);
        for (int j = 0; j < n; j++) kvsql_call_str(k, fv[j]);
    }
}
