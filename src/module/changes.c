/* changes.c - change data capture into the stream T:changes, and the
 * command SQL.CHANGES; see changes.h and docs/FORMAT.md ("The changes
 * stream"). Called by exec.c around each write call and statement, by
 * store_keyspace.c in the end-of-call write, and by module.c (SQL.CHANGES).
 * The entries' encoding (typed JSON values, stream fields) is
 * change_entry.c's.
 *
 * While a write call runs on a database whose capture is on, SQLite's
 * preupdate hook records each row change of the main database: its table,
 * operation, rowid, and old and new values. After each statement exec.c
 * calls changes_stmt_end, which names the values by column, follows
 * BEGIN/SAVEPOINT/RELEASE/ROLLBACK [TO] so that changes a rollback undid
 * are dropped, and adds a schema entry after DDL. At the end of a call
 * that wrote pages, store_keyspace.c calls changes_write: one XADD per
 * entry, each propagated (RedisModule_Call "!") in the MULTI/EXEC that
 * carries the pages, so the stream holds exactly the committed changes. A
 * call that fails writes nothing at all, pages or entries. */
/* Debian's libsqlite3 is built with it; the declarations need the macro. */
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include "changes.h"

#include "change_entry.h"
#include "format.h"
#include "protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct savepoint {
    char *name;
    size_t pos;
} savepoint;

static struct {
    int active;
    sqlite3 *db;
    guard *g;
    char maxlen[24]; /* "" (no trimming) or the count */
    char trim[2];    /* "~" or "=" */
    RedisModuleString *stream;
    change_entry *e;
    size_t n, cap;
    size_t stmt_start; /* entries before the running statement */
    int failed;        /* out of memory in the hook */
    int was_autocommit;
    int ddl;
    sqlite3_int64 schema_before;
    savepoint *sp;
    size_t nsp, capsp;
    size_t txn_start;
    change_tables tables; /* the columns entries were resolved against */
} cur;

/* ---- small helpers ------------------------------------------------------ */

static void truncate_entries(size_t n) {
    while (cur.n > n) change_entry_free(&cur.e[--cur.n]);
}

static change_entry *new_entry(void) {
    if (cur.n == cur.cap) {
        size_t cap = cur.cap ? cur.cap * 2 : 16;
        change_entry *e = sqlite3_realloc64(cur.e, cap * sizeof(*e));
        if (!e) return NULL;
        cur.e = e;
        cur.cap = cap;
    }
    change_entry *e = &cur.e[cur.n++];
    memset(e, 0, sizeof(*e));
    return e;
}

static void drop_savepoints(size_t keep) {
    while (cur.nsp > keep) sqlite3_free(cur.sp[--cur.nsp].name);
}

/* ---- the preupdate hook ---------------------------------------------------- */

static int record(sqlite3 *db, int op, const char *table, sqlite3_int64 rowid, int with_old, int with_new) {
    change_entry *e = new_entry();
    return e ? change_entry_from_hook(e, db, op, table, rowid, with_old, with_new) : -1;
}

static void on_preupdate(void *arg, sqlite3 *db, int op, const char *dbname, const char *table, sqlite3_int64 key1,
                         sqlite3_int64 key2) {
    (void)arg;
    if (!cur.active || cur.failed || strcmp(dbname, "main") != 0) return; /* TEMP tables are not stored */
    int rc;
    if (op == SQLITE_INSERT) rc = record(db, CHANGE_INSERT, table, key2, 0, 1);
    else if (op == SQLITE_DELETE) rc = record(db, CHANGE_DELETE, table, key1, 1, 0);
    else if (key1 == key2) rc = record(db, CHANGE_UPDATE, table, key1, 1, 1);
    else /* the rowid changed: a delete and an insert */
        rc = record(db, CHANGE_DELETE, table, key1, 1, 0) || record(db, CHANGE_INSERT, table, key2, 0, 1) ? -1 : 0;
    if (rc != 0) cur.failed = 1;
}

/* ---- resolving entries ------------------------------------------------------- */

/* Names the values of the entries the statement made. An entry of a table
 * that no longer exists (its DROP TABLE deleted the rows it cascaded
 * from) is dropped: the schema entry that follows removes it. */
static int resolve_from(size_t from) {
    size_t w = from, i = from;
    int rc = 0;
    for (; i < cur.n && rc >= 0; i++) {
        rc = change_entry_resolve(&cur.e[i], &cur.tables, cur.db, cur.g);
        if (rc) cur.e[w++] = cur.e[i]; /* resolved, or (-1) still to free */
    }
    while (i < cur.n) cur.e[w++] = cur.e[i++]; /* out of memory: keep the rest for freeing */
    cur.n = w;
    return rc < 0 ? -1 : 0;
}

/* ---- statements: transactions, savepoints, DDL ------------------------------ */

/* The next token of SQL text at *p: a word or identifier (dequoted) in
 * out; returns 0 at the end. Comments and spaces are skipped. */
static int next_token(const char **p, char *out, size_t cap) {
    const char *s = *p;
    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f') s++;
        if (s[0] == '-' && s[1] == '-') {
            while (*s && *s != '\n') s++;
        } else if (s[0] == '/' && s[1] == '*') {
            const char *end = strstr(s + 2, "*/");
            s = end ? end + 2 : s + strlen(s);
        } else break;
    }
    size_t n = 0;
    if (*s == '"' || *s == '`' || *s == '\'' || *s == '[') {
        char close = *s == '[' ? ']' : *s;
        for (s++; *s; s++) {
            if (*s == close) {
                if (close != ']' && s[1] == close) s++; /* a doubled quote */
                else {
                    s++;
                    break;
                }
            }
            if (n + 1 < cap) out[n++] = *s;
        }
    } else {
        while (*s && (*s == '_' || (*s >= '0' && *s <= '9') || ((*s | 32) >= 'a' && (*s | 32) <= 'z') ||
                      (unsigned char)*s >= 0x80)) {
            if (n + 1 < cap) out[n++] = *s;
            s++;
        }
        if (n == 0 && *s && *s != ';') out[n++] = *s++; /* punctuation: one character */
    }
    out[n] = 0;
    *p = s;
    return n > 0;
}

static int is(const char *word, const char *kw) {
    return strcasecmp(word, kw) == 0;
}

/* The topmost savepoint named name (SQLite compares them case-blind). */
static long find_savepoint(const char *name) {
    for (size_t i = cur.nsp; i-- > 0;)
        if (strcasecmp(cur.sp[i].name, name) == 0) return (long)i;
    return -1;
}

static int push_savepoint(const char *name) {
    if (cur.nsp == cur.capsp) {
        size_t cap = cur.capsp ? cur.capsp * 2 : 8;
        savepoint *sp = sqlite3_realloc64(cur.sp, cap * sizeof(*sp));
        if (!sp) return -1;
        cur.sp = sp;
        cur.capsp = cap;
    }
    cur.sp[cur.nsp].name = sqlite3_mprintf("%s", name);
    cur.sp[cur.nsp].pos = cur.n;
    return cur.sp[cur.nsp++].name ? 0 : -1;
}

/* After a transaction control statement succeeded: keeps the entries in
 * step with what SQLite kept. p: the SQL after its first word, first.
 * Returns 0, or -1 when it cannot follow. */
static int follow_transaction(const char *p, const char *first) {
    char w[256];
    if (is(first, "BEGIN")) {
        cur.txn_start = cur.stmt_start;
        drop_savepoints(0);
    } else if (is(first, "COMMIT") || is(first, "END")) {
        drop_savepoints(0);
    } else if (is(first, "SAVEPOINT")) {
        if (!next_token(&p, w, sizeof(w))) return -1;
        if (cur.was_autocommit) {
            cur.txn_start = cur.stmt_start;
            drop_savepoints(0);
        }
        return push_savepoint(w);
    } else if (is(first, "RELEASE")) {
        if (!next_token(&p, w, sizeof(w))) return -1;
        if (is(w, "SAVEPOINT") && !next_token(&p, w, sizeof(w))) return -1;
        long i = find_savepoint(w);
        if (i < 0) return -1;
        drop_savepoints((size_t)i);
    } else if (is(first, "ROLLBACK")) {
        int more = next_token(&p, w, sizeof(w));
        if (more && is(w, "TRANSACTION")) more = next_token(&p, w, sizeof(w));
        change_tables_forget(&cur.tables); /* the rollback may have undone DDL */
        if (!more || !is(w, "TO")) { /* the whole transaction */
            truncate_entries(cur.txn_start);
            drop_savepoints(0);
            return 0;
        }
        if (!next_token(&p, w, sizeof(w))) return -1;
        if (is(w, "SAVEPOINT") && !next_token(&p, w, sizeof(w))) return -1;
        long i = find_savepoint(w);
        if (i < 0) return -1;
        truncate_entries(cur.sp[i].pos);
        drop_savepoints((size_t)i + 1);
    }
    return 0;
}

/* PRAGMA main.schema_version, read past the guard; -1 on failure. */
static sqlite3_int64 schema_version(void) {
    return guard_read_pragma(cur.db, cur.g, "PRAGMA main.schema_version");
}

/* CREATE [TEMP] TABLE [IF NOT EXISTS] [schema.]name AS ... */
static int creates_table_as(const char *sql) {
    char w[256];
    const char *p = sql;
    next_token(&p, w, sizeof(w));
    if (!next_token(&p, w, sizeof(w))) return 0;
    if ((is(w, "TEMP") || is(w, "TEMPORARY")) && !next_token(&p, w, sizeof(w))) return 0;
    if (!is(w, "TABLE") || !next_token(&p, w, sizeof(w))) return 0;
    if (is(w, "IF")) {
        next_token(&p, w, sizeof(w));
        next_token(&p, w, sizeof(w));
        if (!next_token(&p, w, sizeof(w))) return 0;
    }
    if (!next_token(&p, w, sizeof(w))) return 0; /* after the name */
    if (is(w, ".")) {
        next_token(&p, w, sizeof(w));
        if (!next_token(&p, w, sizeof(w))) return 0;
    }
    return is(w, "AS");
}

static int fail(char *err, size_t errlen, const char *msg) {
    snprintf(err, errlen, "ERR kvsql changes: %s", msg);
    return SQLITE_ERROR;
}

int changes_stmt_begin(sqlite3_stmt *stmt, char *err, size_t errlen) {
    if (!cur.active) return SQLITE_OK;
    char first[32];
    const char *p = sqlite3_sql(stmt);
    if (!p) return SQLITE_OK;
    next_token(&p, first, sizeof(first));
    if (is(first, "VACUUM"))
        return fail(err, errlen,
                    "VACUUM is refused while capture is on: it renumbers the rowids the stream names. Run "
                    "SQL.CHANGES key OFF, VACUUM, then SQL.CHANGES key ON (consumers see the restart)");
    cur.stmt_start = cur.n;
    cur.was_autocommit = sqlite3_get_autocommit(cur.db);
    cur.ddl = is(first, "CREATE") || is(first, "DROP") || is(first, "ALTER");
    if (cur.ddl && (cur.schema_before = schema_version()) < 0) return fail(err, errlen, "cannot read the schema");
    return SQLITE_OK;
}

static int add_schema_entry(const char *sql) {
    change_entry *e = new_entry();
    return e ? change_entry_schema(e, sql) : -1;
}

int changes_stmt_end(sqlite3_stmt *stmt, char *err, size_t errlen) {
    if (!cur.active) return SQLITE_OK;
    if (cur.failed) return fail(err, errlen, "out of memory while capturing the changes");
    const char *sql = sqlite3_sql(stmt);
    char first[32];
    const char *p = sql ? sql : "";
    next_token(&p, first, sizeof(first));
    if (resolve_from(cur.stmt_start) != 0) return fail(err, errlen, "out of memory while capturing the changes");
    if (sqlite3_stmt_readonly(stmt) && follow_transaction(p, first) != 0)
        return fail(err, errlen, "cannot follow this transaction statement");
    if (cur.ddl) {
        sqlite3_int64 v = schema_version();
        if (v < 0) return fail(err, errlen, "cannot read the schema");
        if (v != cur.schema_before) {
            change_tables_forget(&cur.tables);
            if (creates_table_as(sql))
                return fail(err, errlen,
                            "CREATE TABLE ... AS SELECT is refused while capture is on (its rows would not be "
                            "captured): create the table, then INSERT INTO ... SELECT");
            if (add_schema_entry(sql) != 0) return fail(err, errlen, "out of memory");
        }
    }
    return SQLITE_OK;
}

/* ---- the call ---------------------------------------------------------------- */


/* A field of the open configuration hash into out ("" when missing). */
static void config_field(RedisModuleKey *key, const char *field, char *out, size_t cap) {
    RedisModuleString *v = NULL;
    out[0] = 0;
    RedisModule_HashGet(key, REDISMODULE_HASH_CFIELDS, field, &v, NULL);
    if (!v) return;
    size_t len;
    const char *p = RedisModule_StringPtrLen(v, &len);
    snprintf(out, cap, "%.*s", (int)(len < cap ? len : cap - 1), p);
    RedisModule_FreeString(NULL, v);
}

/* Reads T:changes:cfg: non-zero when capture is on (maxlen/trim filled). */
static int read_config(RedisModuleCtx *ctx, RedisModuleString *keyname, char *maxlen, char *trim) {
    RedisModuleString *name = aux_key_name(ctx, keyname, KVSQL_AUX_CHANGES_CONFIG);
    RedisModuleKey *key = RedisModule_OpenKey(ctx, name, REDISMODULE_READ | REDISMODULE_OPEN_KEY_NOTOUCH);
    int on = key && RedisModule_KeyType(key) == REDISMODULE_KEYTYPE_HASH;
    if (on) {
        config_field(key, "maxlen", maxlen, 24);
        config_field(key, "trim", trim, 2);
        if (strcmp(maxlen, "0") == 0) maxlen[0] = 0;
        if (strcmp(trim, "=") != 0) strcpy(trim, "~");
    }
    if (key) RedisModule_CloseKey(key);
    RedisModule_FreeString(ctx, name);
    return on;
}

void changes_call_begin(RedisModuleCtx *ctx, RedisModuleString *keyname, sqlite3 *db, guard *g) {
    if (!read_config(ctx, keyname, cur.maxlen, cur.trim)) return;
    cur.active = 1;
    cur.db = db;
    cur.g = g;
    cur.stream = aux_key_name(ctx, keyname, KVSQL_AUX_CHANGES);
    cur.n = cur.txn_start = cur.stmt_start = 0;
    cur.failed = 0;
    sqlite3_preupdate_hook(db, on_preupdate, NULL);
}

void changes_call_end(void) {
    if (!cur.active) return;
    sqlite3_preupdate_hook(cur.db, NULL, NULL);
    truncate_entries(0);
    sqlite3_free(cur.e);
    cur.e = NULL;
    cur.cap = 0;
    drop_savepoints(0);
    sqlite3_free(cur.sp);
    cur.sp = NULL;
    cur.capsp = 0;
    change_tables_forget(&cur.tables);
    RedisModule_FreeString(NULL, cur.stream);
    cur.stream = NULL;
    cur.active = 0;
}

/* ---- the write: XADD, propagated with the pages ---------------------------- */

static int stream_usable(RedisModuleCtx *ctx, RedisModuleString *stream) {
    RedisModuleKey *key = RedisModule_OpenKey(ctx, stream, REDISMODULE_READ | REDISMODULE_OPEN_KEY_NOTOUCH);
    int type = key ? RedisModule_KeyType(key) : REDISMODULE_KEYTYPE_EMPTY;
    if (key) RedisModule_CloseKey(key);
    return type == REDISMODULE_KEYTYPE_EMPTY || type == REDISMODULE_KEYTYPE_STREAM;
}

int changes_check_write(RedisModuleCtx *ctx, char *err, size_t errlen) {
    if (!cur.active || stream_usable(ctx, cur.stream)) return 0;
    size_t len;
    const char *s = RedisModule_StringPtrLen(cur.stream, &len);
    snprintf(err, errlen, "ERR kvsql changes: '%.*s' holds another type than a stream: nothing was written",
             (int)(len > 200 ? 200 : len), s);
    return -1;
}

/* The decimal value of a string key ("0" when missing). */
static void read_counter(RedisModuleCtx *ctx, RedisModuleString *key, char out[24]) {
    RedisModuleCallReply *r = RedisModule_Call(ctx, "GET", "s", key);
    size_t len = 0;
    const char *p = r && RedisModule_CallReplyType(r) == REDISMODULE_REPLY_STRING ? RedisModule_CallReplyStringPtr(r, &len)
                                                                                  : NULL;
    snprintf(out, 24, "%.*s", p ? (int)(len < 23 ? len : 23) : 1, p ? p : "0");
    if (r) RedisModule_FreeCallReply(r);
}

void changes_write(RedisModuleCtx *ctx, RedisModuleString *version_key) {
    if (!cur.active) return;
    char version[24];
    read_counter(ctx, version_key, version);
    if (cur.n == 0) { /* pages changed, no row did (PRAGMA user_version, ANALYZE, ...) */
        change_xadd_marker(ctx, cur.stream, cur.maxlen, cur.trim, version, "commit");
        return;
    }
    for (size_t i = 0; i < cur.n; i++) change_xadd_entry(ctx, cur.stream, cur.maxlen, cur.trim, version, &cur.e[i]);
}

/* ---- SQL.CHANGES ---------------------------------------------------------------- */

static int is_arg(RedisModuleString *s, const char *word) {
    size_t len;
    const char *p = RedisModule_StringPtrLen(s, &len);
    return len == strlen(word) && strncasecmp(p, word, len) == 0;
}

/* ON [MAXLEN [=|~] n]: the count in maxlen and the trim; 0, or -1. */
static int parse_on(RedisModuleString **argv, int argc, char *maxlen, char *trim) {
    strcpy(maxlen, "0");
    strcpy(trim, "~");
    if (argc == 0) return 0;
    if (!is_arg(argv[0], "MAXLEN") || argc < 2 || argc > 3) return -1;
    if (argc == 3) {
        if (!is_arg(argv[1], "=") && !is_arg(argv[1], "~")) return -1;
        trim[0] = RedisModule_StringPtrLen(argv[1], NULL)[0];
    }
    size_t len;
    const char *p = RedisModule_StringPtrLen(argv[argc - 1], &len);
    if (len == 0 || len > 18) return -1;
    for (size_t i = 0; i < len; i++)
        if (p[i] < '0' || p[i] > '9') return -1;
    snprintf(maxlen, 24, "%.*s", (int)len, p);
    snprintf(maxlen, 24, "%lld", strtoll(maxlen, NULL, 10)); /* no leading zeros */
    return 0;
}

/* The database's version T:v as it stands. */
static void read_version(RedisModuleCtx *ctx, RedisModuleString *keyname, char out[24]) {
    RedisModuleString *vkey = aux_key_name(ctx, keyname, KVSQL_AUX_VERSION);
    read_counter(ctx, vkey, out);
    RedisModule_FreeString(ctx, vkey);
}

static int reply_status(RedisModuleCtx *ctx, RedisModuleString *keyname, RedisModuleString *stream) {
    char maxlen[24] = "", trim[2] = "", version[24];
    int on = read_config(ctx, keyname, maxlen, trim);
    read_version(ctx, keyname, version);
    RedisModuleCallReply *r = RedisModule_Call(ctx, "XLEN", "s", stream);
    long long xlen = r && RedisModule_CallReplyType(r) == REDISMODULE_REPLY_INTEGER ? RedisModule_CallReplyInteger(r) : 0;
    if (r) RedisModule_FreeCallReply(r);
    size_t len;
    const char *s = RedisModule_StringPtrLen(stream, &len);
    RedisModule_ReplyWithArray(ctx, 10);
    RedisModule_ReplyWithSimpleString(ctx, "capture");
    RedisModule_ReplyWithSimpleString(ctx, on ? "on" : "off");
    RedisModule_ReplyWithSimpleString(ctx, "maxlen");
    if (on && maxlen[0]) {
        char text[28];
        snprintf(text, sizeof(text), "%s %s", trim, maxlen);
        RedisModule_ReplyWithSimpleString(ctx, text);
    } else RedisModule_ReplyWithNull(ctx);
    RedisModule_ReplyWithSimpleString(ctx, "stream");
    RedisModule_ReplyWithStringBuffer(ctx, s, len);
    RedisModule_ReplyWithSimpleString(ctx, "length");
    RedisModule_ReplyWithLongLong(ctx, xlen);
    RedisModule_ReplyWithSimpleString(ctx, "version");
    RedisModule_ReplyWithLongLong(ctx, strtoll(version, NULL, 10));
    return REDISMODULE_OK;
}

/* A marker entry: op on/off, with the version as it stands. */
static void add_marker(RedisModuleCtx *ctx, RedisModuleString *keyname, RedisModuleString *stream, const char *op,
                       const char *maxlen, const char *trim) {
    char version[24];
    read_version(ctx, keyname, version);
    change_xadd_marker(ctx, stream, strcmp(maxlen, "0") == 0 ? "" : maxlen, trim, version, op);
}

static int set_capture(RedisModuleCtx *ctx, RedisModuleString *keyname, RedisModuleString *stream,
                       RedisModuleString *cfg, int on, const char *maxlen, const char *trim) {
    char old_max[24] = "", old_trim[2] = "";
    int was_on = read_config(ctx, keyname, old_max, old_trim);
    RedisModuleKey *k = RedisModule_OpenKey(ctx, cfg, REDISMODULE_READ | REDISMODULE_OPEN_KEY_NOTOUCH);
    int type = k ? RedisModule_KeyType(k) : REDISMODULE_KEYTYPE_EMPTY;
    if (k) RedisModule_CloseKey(k);
    if ((type != REDISMODULE_KEYTYPE_EMPTY && type != REDISMODULE_KEYTYPE_HASH) || !stream_usable(ctx, stream))
        return RedisModule_ReplyWithError(ctx, "WRONGTYPE kvsql changes: T:changes must be a stream and "
                                               "T:changes:cfg a hash (docs/FORMAT.md)");
    if (on) {
        RedisModuleCallReply *r = RedisModule_Call(ctx, "HSET", "!scccc", cfg, "maxlen", maxlen, "trim", trim);
        if (r) RedisModule_FreeCallReply(r);
        if (!was_on) add_marker(ctx, keyname, stream, "on", maxlen, trim);
    } else if (was_on) {
        add_marker(ctx, keyname, stream, "off", old_max[0] ? old_max : "0", old_trim);
        RedisModuleCallReply *r = RedisModule_Call(ctx, "DEL", "!s", cfg);
        if (r) RedisModule_FreeCallReply(r);
    }
    return RedisModule_ReplyWithSimpleString(ctx, "OK");
}

int cmd_sql_changes(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (argc < 2) return RedisModule_WrongArity(ctx);
    char maxlen[24], trim[2];
    int on = argc >= 3 && is_arg(argv[2], "ON"), off = argc == 3 && is_arg(argv[2], "OFF");
    int status = argc == 2 || (argc == 3 && is_arg(argv[2], "STATUS"));
    if (on && parse_on(argv + 3, argc - 3, maxlen, trim) != 0)
        return RedisModule_ReplyWithError(ctx, "ERR SQL.CHANGES key ON [MAXLEN [=|~] n]: n a whole number "
                                               "(0: no limit)");
    if (!on && !off && !status)
        return RedisModule_ReplyWithError(ctx, "ERR SQL.CHANGES key [ON [MAXLEN [=|~] n] | OFF | STATUS]");
    RedisModuleString *stream = aux_key_name(ctx, argv[1], KVSQL_AUX_CHANGES);
    RedisModuleString *cfg = aux_key_name(ctx, argv[1], KVSQL_AUX_CHANGES_CONFIG);
    int rc = status ? reply_status(ctx, argv[1], stream) : set_capture(ctx, argv[1], stream, cfg, on, maxlen, trim);
    RedisModule_FreeString(ctx, stream);
    RedisModule_FreeString(ctx, cfg);
    return rc;
}
