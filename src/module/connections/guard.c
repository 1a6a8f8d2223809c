/* guard.c - the SQLite authorizer, switches and per-call reset of module
 * connections. See guard.h; called by cache.c when a connection opens, by
 * exec.c around every call, and by the fuzz targets (tests/fuzz/). The
 * audit behind every list below is in docs/SECURITY.md. */
#include "module/connections/guard.h"

#include "kvsql_core.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- what is refused ---------------------------------------------------- */

/* Pragmas refused whether read or set: they name host paths or bypass the
 * VFS. */
static const char *const denied_pragmas[] = {
    "temp_store_directory", "data_store_directory", "mmap_size", NULL,
};

/* Pragmas that may be read but not set: kvsql's storage depends on them
 * (journal, locking, temp data in memory, page cache and spill bounded by
 * kvsql.page-cache-kb), they are process-wide (heap limits, worker
 * threads), or they would let SQL write the schema or file header. */
static const char *const fixed_pragmas[] = {
    "journal_mode",  "locking_mode",    "temp_store",     "cache_size",         "cache_spill",
    "default_cache_size", "soft_heap_limit", "hard_heap_limit", "threads",      "writable_schema",
    "schema_version", "journal_size_limit", "wal_autocheckpoint", NULL,
};

/* Pragmas whose argument names a table or an action and changes no
 * setting (user_version and application_id are data of the database). */
static const char *const argument_pragmas[] = {
    "application_id", "user_version", "foreign_key_check", "foreign_key_list", "incremental_vacuum",
    "index_info",     "index_list",   "index_xinfo",       "integrity_check",  "quick_check",
    "optimize",       "table_info",   "table_xinfo",       "table_list",       "wal_checkpoint",
    NULL,
};

/* Settings a call may make that only closing the connection undoes: they
 * wait for a later VACUUM or first write (page_size, auto_vacuum,
 * encoding) or cannot be set back below the database's size. */
static const char *const closing_pragmas[] = {
    "page_size", "auto_vacuum", "encoding", "max_page_count", NULL,
};

/* Settings a call may make for itself; set back to the default after the
 * call. The defaults are read from this libsqlite3 by guard_init(). */
static struct {
    const char *name;
    char dflt[24]; /* "": unknown to this libsqlite3, so refused */
} resettable[] = {
    {"analysis_limit", ""},     {"automatic_index", ""},        {"busy_timeout", ""},
    {"case_sensitive_like", ""}, {"cell_size_check", ""},       {"checkpoint_fullfsync", ""},
    {"count_changes", ""},      {"defer_foreign_keys", ""},     {"empty_result_callbacks", ""},
    {"foreign_keys", ""},       {"full_column_names", ""},      {"fullfsync", ""},
    {"ignore_check_constraints", ""}, {"legacy_alter_table", ""}, {"query_only", ""},
    {"read_uncommitted", ""},   {"recursive_triggers", ""},     {"reverse_unordered_selects", ""},
    {"secure_delete", ""},      {"short_column_names", ""},     {"synchronous", ""},
    {"trusted_schema", ""},
};
#define NRESETTABLE ((int)(sizeof(resettable) / sizeof(resettable[0])))

/* Functions refused: they load code, take or hand out addresses
 * (fts3_tokenizer), write to the process's SQLite log, or parse raw r-tree
 * node blobs (test helpers). */
static const char *const denied_functions[] = {
    "load_extension", "fts3_tokenizer", "sqlite_log", "rtreenode", "rtreedepth", NULL,
};

/* Virtual table modules kept; every other is dropped from each connection
 * (sqlite_stmt shows every cached statement of every client of the key). */
static const char *const kept_modules[] = {
    "dbstat", "fts3",      "fts3tokenize", "fts4",       "fts4aux",           "fts5",
    "fts5vocab", "json_each", "json_tree", "rtree", "rtree_i32", "pragma_module_list", NULL,
};

static int listed(const char *const *list, const char *name) {
    for (int i = 0; list[i]; i++)
        if (strcasecmp(list[i], name) == 0) return 1;
    return 0;
}

static int resettable_index(const char *name) {
    for (int i = 0; i < NRESETTABLE; i++)
        if (strcasecmp(resettable[i].name, name) == 0) return resettable[i].dflt[0] ? i : -1;
    return -1;
}

/* ---- the authorizer ----------------------------------------------------- */

static int note_close(guard *g) {
    g->notes++;
    g->must_close = 1;
    return SQLITE_OK;
}

/* PRAGMA name [= value] [on schema db]. */
static int authorize_pragma(guard *g, const char *name, const char *value, const char *db) {
    if (listed(denied_pragmas, name)) return SQLITE_DENY;
    if (!value) return SQLITE_OK; /* reading, or an action without argument */
    if (listed(fixed_pragmas, name)) return SQLITE_DENY;
    if (listed(argument_pragmas, name)) return SQLITE_OK;
    if (listed(closing_pragmas, name)) return note_close(g);
    int i = resettable_index(name);
    if (i < 0) return SQLITE_DENY; /* unknown: nothing unaudited is set */
    if (db && strcasecmp(db, "main") != 0) return note_close(g); /* temp or attached */
    g->notes++;
    g->reset |= 1u << i;
    return SQLITE_OK;
}

static int note_temp(guard *g, const char *db) {
    if (db && strcasecmp(db, "temp") == 0) {
        g->temp_written = 1;
        g->temp_notes++;
    }
    return SQLITE_OK;
}

/* PRAGMA case_sensitive_like=value would put SQLite's own LIKE back (it
 * registers it anew, in place of heavy.c's): the pragma is made a no-op
 * and heavy.c's LIKE follows the value instead. */
static int is_case_sensitive_like(int action, const char *name, const char *value) {
    return action == SQLITE_PRAGMA && value && name && strcasecmp(name, "case_sensitive_like") == 0;
}

static int authorize(void *arg, int action, const char *a, const char *b, const char *db, const char *trigger) {
    (void)trigger;
    guard *g = arg;
    if (is_case_sensitive_like(action, a, b)) {
        int rc = g->trusted ? SQLITE_OK : authorize_pragma(g, a, b, db); /* noted: reset after the call */
        if (rc == SQLITE_OK) g->heavy.case_sensitive_like = heavy_pragma_boolean(b);
        return rc == SQLITE_OK ? SQLITE_IGNORE : rc;
    }
    if (g->trusted) return SQLITE_OK;
    if (g->tick && g->tick()) return SQLITE_DENY; /* time is up: preparing stops here */
    switch (action) {
    case SQLITE_ATTACH:
        /* A file name would reach the host's filesystem; "" (VACUUM's
         * temporary database) and ":memory:" touch no file, and live
         * until the connection closes. */
        if (!a || (a[0] != 0 && strcmp(a, ":memory:") != 0)) return SQLITE_DENY;
        return note_close(g);
    case SQLITE_CREATE_TEMP_INDEX:
    case SQLITE_CREATE_TEMP_TABLE:
    case SQLITE_CREATE_TEMP_TRIGGER:
    case SQLITE_CREATE_TEMP_VIEW: return note_temp(g, "temp");
    case SQLITE_INSERT:
    case SQLITE_UPDATE:
    case SQLITE_CREATE_VTABLE: return note_temp(g, db);
    case SQLITE_PRAGMA: return authorize_pragma(g, a, b, db);
    case SQLITE_FUNCTION: return b && listed(denied_functions, b) ? SQLITE_DENY : SQLITE_OK;
    case SQLITE_READ: return a && strcasecmp(a, "sqlite_stmt") == 0 ? SQLITE_DENY : SQLITE_OK;
    default: return SQLITE_OK;
    }
}

/* ---- per-call counters -------------------------------------------------- */

/* changes(): rows changed by the call's most recent INSERT, UPDATE or
 * DELETE; 0 before its first, whatever earlier calls did. */
static void call_changes(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    (void)argc, (void)argv;
    guard *g = sqlite3_user_data(ctx);
    sqlite3 *db = sqlite3_context_db_handle(ctx);
    sqlite3_result_int64(ctx, sqlite3_total_changes64(db) == g->changes_at_begin ? 0 : sqlite3_changes64(db));
}

/* total_changes(): rows changed by this call so far. */
static void call_total_changes(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    (void)argc, (void)argv;
    guard *g = sqlite3_user_data(ctx);
    sqlite3_result_int64(ctx, sqlite3_total_changes64(sqlite3_context_db_handle(ctx)) - g->changes_at_begin);
}

void guard_call_begin(sqlite3 *db, guard *g) {
    g->changes_at_begin = sqlite3_total_changes64(db);
    if (sqlite3_last_insert_rowid(db)) sqlite3_set_last_insert_rowid(db, 0);
}

int guard_exec_trusted(sqlite3 *db, guard *g, const char *sql) {
    g->trusted = 1;
    int rc = sqlite3_exec(db, sql, 0, 0, 0);
    g->trusted = 0;
    return rc;
}

sqlite3_int64 guard_read_pragma(sqlite3 *db, guard *g, const char *sql) {
    sqlite3_stmt *st;
    sqlite3_int64 v = -1;
    g->trusted = 1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, 0) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    g->trusted = 0;
    return v;
}

/* ---- TEMP objects and SQL text ---------------------------------------- */

/* A character of a word as SQLite's tokenizer reads identifiers. */
static int word_char(unsigned char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
           ch == '$' || ch >= 0x80;
}

static int same_word(const char *a, size_t alen, const char *b) {
    return strlen(b) == alen && strncasecmp(a, b, alen) == 0;
}

typedef struct temp_names {
    int n, triggers, unreadable;
    char *name[GUARD_TEMP_NAMES_MAX];
} temp_names;

/* Whether name is one word (as word_char reads it). */
static int plain_word(const char *name) {
    if (!*name) return 0;
    for (const char *p = name; *p; p++)
        if (!word_char((unsigned char)*p)) return 0;
    return 1;
}

/* Reads the TEMP schema's names into t (up to the limit; past it, or on
 * an error or a name that is no plain word, t->unreadable). */
static void read_temp_names(sqlite3 *db, guard *g, temp_names *t) {
    sqlite3_stmt *st;
    memset(t, 0, sizeof(*t));
    g->trusted = 1;
    if (sqlite3_prepare_v2(db, "SELECT type, name FROM temp.sqlite_schema", -1, &st, 0) != SQLITE_OK) {
        t->unreadable = 1;
    } else {
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW && !t->unreadable) {
            const char *type = (const char *)sqlite3_column_text(st, 0), *name = (const char *)sqlite3_column_text(st, 1);
            if (type && strcmp(type, "trigger") == 0) t->triggers = 1;
            if (!name || !plain_word(name) || t->n == GUARD_TEMP_NAMES_MAX || !(t->name[t->n] = sqlite3_mprintf("%s", name)))
                t->unreadable = 1;
            else
                t->n++;
        }
        if (rc != SQLITE_DONE && rc != SQLITE_ROW) t->unreadable = 1;
        sqlite3_finalize(st);
    }
    g->trusted = 0;
}

/* Whether the word w[0..n) names a TEMP object, or the TEMP schema or
 * every schema. */
static int word_touches_temp(const char *w, size_t n, const temp_names *t) {
    if (same_word(w, n, "temp") || same_word(w, n, "temporary") || same_word(w, n, "pragma") ||
        (n >= 7 && strncasecmp(w, "pragma_", 7) == 0))
        return 1;
    for (int i = 0; i < t->n; i++)
        if (same_word(w, n, t->name[i])) return 1;
    return 0;
}

int guard_may_use_temp(sqlite3 *db, guard *g, const char *text, size_t len, int readonly) {
    temp_names t;
    read_temp_names(db, g, &t);
    int uses = t.unreadable || (t.triggers && !readonly);
    if (!uses && t.n > 0) {
        for (size_t i = 0; i < len && !uses;) {
            if (!word_char((unsigned char)text[i])) {
                i++;
                continue;
            }
            size_t start = i;
            while (i < len && word_char((unsigned char)text[i])) i++;
            uses = word_touches_temp(text + start, i - start, &t);
        }
    }
    for (int i = 0; i < t.n; i++) sqlite3_free(t.name[i]);
    return uses;
}

/* Whether the TEMP database holds more than max bytes (or cannot say). */
static int temp_too_big(sqlite3 *db, guard *g, long long max) {
    sqlite3_int64 pages = guard_read_pragma(db, g, "PRAGMA temp.page_count");
    sqlite3_int64 size = guard_read_pragma(db, g, "PRAGMA temp.page_size");
    return pages < 0 || size < 0 || pages * size > max;
}

int guard_call_end(sqlite3 *db, guard *g, long long max_temp_bytes) {
    if (g->must_close) return 1;
    if (g->temp_written) {
        g->temp_written = 0;
        if (temp_too_big(db, g, max_temp_bytes)) return 1;
    }
    if (!g->reset) return 0;
    int failed = 0;
    for (int i = 0; i < NRESETTABLE; i++) {
        if (!(g->reset & (1u << i))) continue;
        char sql[96];
        snprintf(sql, sizeof(sql), "PRAGMA %s=%s", resettable[i].name, resettable[i].dflt);
        if (guard_exec_trusted(db, g, sql) != SQLITE_OK) failed = 1;
    }
    g->reset = 0;
    return failed;
}

/* ---- installing --------------------------------------------------------- */

static int read_default(sqlite3 *db, int i) {
    if (strcmp(resettable[i].name, "case_sensitive_like") == 0) { /* cannot be read */
        strcpy(resettable[i].dflt, sqlite3_compileoption_used("CASE_SENSITIVE_LIKE") ? "1" : "0");
        return SQLITE_OK;
    }
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA %s", resettable[i].name);
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, 0);
    if (rc != SQLITE_OK) return rc;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_INTEGER)
        snprintf(resettable[i].dflt, sizeof(resettable[i].dflt), "%lld", sqlite3_column_int64(st, 0));
    return sqlite3_finalize(st);
}

int guard_init(void) {
    kvsql_store *st;
    sqlite3 *db = NULL;
    int rc = kvsql_memory_store_new(&st);
    if (rc != SQLITE_OK) return rc;
    rc = kvsql_open(st, &db);
    for (int i = 0; rc == SQLITE_OK && i < NRESETTABLE; i++) rc = read_default(db, i);
    sqlite3_close(db);
    kvsql_store_free(st);
    return rc;
}

int guard_install(sqlite3 *db, guard *g) {
    int rc = sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, (int *)0);
    if (rc == SQLITE_OK) rc = sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, 0, (int *)0);
    if (rc == SQLITE_OK) rc = sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)0);
    if (rc == SQLITE_OK) rc = sqlite3_drop_modules(db, (const char **)kept_modules);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_function(db, "changes", 0, SQLITE_UTF8, g, call_changes, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_function(db, "total_changes", 0, SQLITE_UTF8, g, call_total_changes, NULL, NULL);
    g->heavy.tick = g->tick;
    g->heavy.case_sensitive_like = sqlite3_compileoption_used("CASE_SENSITIVE_LIKE");
    if (rc == SQLITE_OK) rc = heavy_install(db, &g->heavy); /* work a step's check cannot see */
    sqlite3_limit(db, SQLITE_LIMIT_WORKER_THREADS, 0); /* no threads in redis-server */
    if (rc == SQLITE_OK) rc = sqlite3_set_authorizer(db, authorize, g);
    return rc;
}
