/* changes.c - change data capture into the stream T:changes, and the
 * command SQL.CHANGES; see changes.h and docs/FORMAT.md ("The changes
 * stream"). Called by exec.c around each write call and statement, by
 * store_keyspace.c in the end-of-call write, by offload.c and stage.c for
 * a write moved to a worker thread (which captures on that thread and
 * writes the entries in its landing), and by module.c (SQL.CHANGES).
 * The entries, their encoding and the following of savepoints are the
 * core's (change_log.c, change_entry.c: the library captures the same way);
 * what is here reads the configuration and writes the stream.
 *
 * While a write call runs on a database whose capture is on, SQLite's
 * preupdate hook records each row change of the main database: its table,
 * operation, rowid, and old and new values. After each statement exec.c
 * calls changes_stmt_end, which names the values by column, follows
 * BEGIN/SAVEPOINT/RELEASE/ROLLBACK [TO] so that changes a rollback undid
 * are dropped, and adds a schema entry after DDL. At the end of a call
 * that wrote pages, store_keyspace.c calls changes_write: one XADD per
 * entry, each propagated (RedisModule_Call "!") in the MULTI/EXEC that
 * carries the pages (a staged write's: stage_publish, after its swap), so
 * the stream holds exactly the committed changes. A
 * call that fails writes nothing at all, pages or entries. */
/* Debian's libsqlite3 is built with it; the declarations need the macro. */
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include "module/store/changes.h"
#include "module/settings.h"

#include "module/commands/acl.h"
#include "module/connections/budget.h"
#include "change_log.h"
#include "format.h"
#include "module/store/protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The capture of the call running on this thread: Redis's main thread,
 * or a worker thread that runs a moved write and then lands it (offload.c)
 * while this state holds its entries. */
static _Thread_local struct {
    int active;
    sqlite3 *db;
    guard *g;
    char maxlen[24]; /* "" (no trimming) or the count */
    char trim[2];    /* "~" or "=" */
    char bad[512];   /* why T:changes:cfg is not a configuration ("" when it is): no write may go out */
    RedisModuleString *stream;
    change_log log;
    int was_autocommit;
    int ddl;
    sqlite3_int64 schema_before;
} cur;

/* ---- the preupdate hook ---------------------------------------------------- */

static void on_preupdate(void *arg, sqlite3 *db, int op, const char *dbname, const char *table, sqlite3_int64 key1,
                         sqlite3_int64 key2) {
    (void)arg;
    if (!cur.active || strcmp(dbname, "main") != 0) return; /* TEMP tables are not stored */
    budget_hook(1);
    change_log_record(&cur.log, db, op, table, key1, key2);
    budget_hook(0);
}

/* ---- statements: transactions, savepoints, DDL ------------------------------ */

/* PRAGMA main.schema_version, read past the guard; -1 on failure. */
static sqlite3_int64 schema_version(void) {
    return guard_read_pragma(cur.db, cur.g, "PRAGMA main.schema_version");
}

static int fail(char *err, size_t errlen, const char *msg) {
    snprintf(err, errlen, "ERR kvsql changes: %s", msg);
    return SQLITE_ERROR;
}

int changes_stmt_begin(sqlite3_stmt *stmt, char *err, size_t errlen) {
    if (!cur.active) return SQLITE_OK;
    char first[32];
    if (!sqlite3_sql(stmt)) return SQLITE_OK;
    change_sql_first_word(sqlite3_sql(stmt), first, sizeof(first));
    if (change_sql_is(first, "VACUUM"))
        return fail(err, errlen,
                    "VACUUM is refused while capture is on: it renumbers the rowids the stream names. Run "
                    "SQL.CHANGES key OFF, VACUUM, then SQL.CHANGES key ON (consumers see the restart)");
    cur.log.stmt_start = cur.log.n;
    cur.was_autocommit = sqlite3_get_autocommit(cur.db);
    cur.ddl = change_sql_is_ddl(first);
    if (cur.ddl && (cur.schema_before = schema_version()) < 0) return fail(err, errlen, "cannot read the schema");
    return SQLITE_OK;
}

int changes_stmt_end(sqlite3_stmt *stmt, char *err, size_t errlen) {
    if (!cur.active) return SQLITE_OK;
    if (cur.log.failed) return fail(err, errlen, "out of memory while capturing the changes");
    const char *sql = sqlite3_sql(stmt);
    if (change_log_resolve_from(&cur.log, cur.log.stmt_start, cur.db, &cur.g->trusted) != 0)
        return fail(err, errlen, "could not read the columns of a changed table (out of memory, or the call was "
                                 "stopped): nothing was written");
    if (sqlite3_stmt_readonly(stmt) && change_log_follow(&cur.log, sql ? sql : "", cur.was_autocommit) != 0)
        return fail(err, errlen, "cannot follow this transaction statement");
    if (cur.ddl) {
        sqlite3_int64 v = schema_version();
        if (v < 0) return fail(err, errlen, "cannot read the schema");
        if (v != cur.schema_before) {
            change_tables_forget(&cur.log.tables);
            if (change_sql_creates_table_as(sql))
                return fail(err, errlen,
                            "CREATE TABLE ... AS SELECT is refused while capture is on (its rows would not be "
                            "captured): create the table, then INSERT INTO ... SELECT");
            if (change_log_add_schema(&cur.log, sql) != 0) return fail(err, errlen, "out of memory");
        }
    }
    return SQLITE_OK;
}

/* ---- the call ---------------------------------------------------------------- */


/* Whether capture is on for the database at keyname, and with what
 * configuration (read_config). */
typedef enum { CAPTURE_OFF, CAPTURE_ON, CAPTURE_BAD } capture_state;

/* Field `field` of the open configuration hash: valid by `valid` (format.h)
 * copied into out (cap bytes), or "" when missing. Returns 0, or -1 with
 * why set when the value is not valid. */
static int config_field(RedisModuleKey *key, const char *field, int (*valid)(const char *, size_t), char *out,
                        size_t cap, char *why, size_t whylen) {
    RedisModuleString *v = NULL;
    out[0] = 0;
    RedisModule_HashGet(key, REDISMODULE_HASH_CFIELDS, field, &v, NULL);
    if (!v) return 0;
    size_t len;
    const char *p = RedisModule_StringPtrLen(v, &len);
    int ok = valid(p, len) && len < cap;
    if (ok) snprintf(out, cap, "%.*s", (int)len, p);
    else
        snprintf(why, whylen, "the %s '%.*s'%s of its configuration is not valid", field, (int)(len > 40 ? 40 : len), p,
                 len > 40 ? "..." : "");
    RedisModule_FreeString(NULL, v);
    return ok ? 0 : -1;
}

/* Reads T:changes:cfg. CAPTURE_ON: maxlen ("" for no limit) and trim
 * filled; CAPTURE_BAD: it exists but is no configuration (another type, a
 * field that format.h's rule refuses), why says which. The rule is checked
 * here, where every reader reads it, before any write. */
static capture_state read_config(RedisModuleCtx *ctx, RedisModuleString *keyname, char maxlen[24], char trim[2],
                                 char *why, size_t whylen) {
    RedisModuleString *name = aux_key_name(ctx, keyname, KVSQL_AUX_CHANGES_CONFIG);
    RedisModuleKey *key = RedisModule_OpenKey(ctx, name, REDISMODULE_READ | REDISMODULE_OPEN_KEY_NOTOUCH);
    int type = key ? RedisModule_KeyType(key) : REDISMODULE_KEYTYPE_EMPTY;
    capture_state st = type == REDISMODULE_KEYTYPE_EMPTY ? CAPTURE_OFF : CAPTURE_ON;
    maxlen[0] = trim[0] = 0;
    if (st == CAPTURE_ON && type != REDISMODULE_KEYTYPE_HASH) {
        snprintf(why, whylen, "it holds another type than a hash");
        st = CAPTURE_BAD;
    } else if (st == CAPTURE_ON &&
               (config_field(key, "maxlen", kvsql_changes_maxlen_valid, maxlen, 24, why, whylen) != 0 ||
                config_field(key, "trim", kvsql_changes_trim_valid, trim, 2, why, whylen) != 0)) {
        st = CAPTURE_BAD;
    }
    if (st != CAPTURE_ON) maxlen[0] = trim[0] = 0;
    if (strcmp(maxlen, "0") == 0) maxlen[0] = 0;
    if (!trim[0]) strcpy(trim, "~");
    if (key) RedisModule_CloseKey(key);
    RedisModule_FreeString(ctx, name);
    return st;
}

/* The error text of a configuration that is not one, into err. */
static void bad_config_error(RedisModuleString *keyname, const char *why, const char *then, char *err, size_t errlen) {
    size_t len;
    const char *k = RedisModule_StringPtrLen(keyname, &len);
    char cfg[256];
    kvsql_aux_key(cfg, sizeof(cfg), k, len > 200 ? 200 : len, KVSQL_AUX_CHANGES_CONFIG);
    snprintf(err, errlen,
             "ERR kvsql changes: capture is on for this database ('%s' exists) but %s (docs/FORMAT.md, \"The "
             "changes stream\"): %s. Set it with SQL.CHANGES key ON [MAXLEN [=|~] n] or turn it OFF",
             cfg, why, then);
}

int changes_on(RedisModuleCtx *ctx, RedisModuleString *keyname) {
    RedisModuleString *name = aux_key_name(ctx, keyname, KVSQL_AUX_CHANGES_CONFIG);
    int on = RedisModule_KeyExists(ctx, name); /* a configuration or not: the write stays where it is checked */
    RedisModule_FreeString(ctx, name);
    return on;
}

/* Reads the configuration into cur (maxlen, trim, bad): whether capture
 * is on (a valid configuration or not). */
static int load_config(RedisModuleCtx *ctx, RedisModuleString *keyname) {
    char why[160] = "";
    capture_state st = read_config(ctx, keyname, cur.maxlen, cur.trim, why, sizeof(why));
    cur.bad[0] = 0;
    if (st == CAPTURE_BAD) bad_config_error(keyname, why, "nothing was written", cur.bad, sizeof(cur.bad));
    return st != CAPTURE_OFF;
}

void changes_capture_begin(RedisModuleString *keyname, sqlite3 *db, guard *g) {
    changes_call_end(); /* a worker's earlier run of the same call: its entries go */
    cur.active = 1;
    cur.db = db;
    cur.g = g;
    cur.stream = aux_key_name(NULL, keyname, KVSQL_AUX_CHANGES);
    change_log_reset(&cur.log);
    sqlite3_preupdate_hook(db, on_preupdate, NULL);
}

void changes_call_begin(RedisModuleCtx *ctx, RedisModuleString *keyname, sqlite3 *db, guard *g) {
    if (!load_config(ctx, keyname)) return;
    char maxlen[24], trim[2], bad[512];
    memcpy(maxlen, cur.maxlen, sizeof(maxlen));
    memcpy(trim, cur.trim, sizeof(trim));
    memcpy(bad, cur.bad, sizeof(bad));
    changes_capture_begin(keyname, db, g);
    memcpy(cur.maxlen, maxlen, sizeof(maxlen));
    memcpy(cur.trim, trim, sizeof(trim));
    memcpy(cur.bad, bad, sizeof(bad));
}

void changes_capture_detach(void) {
    if (!cur.active || !cur.db) return;
    sqlite3_preupdate_hook(cur.db, NULL, NULL);
    cur.db = NULL;
    cur.g = NULL;
}

int changes_land_begin(RedisModuleCtx *ctx, RedisModuleString *keyname, char *err, size_t errlen) {
    int captured = cur.active, on = changes_on(ctx, keyname);
    if (on && !captured) {
        snprintf(err, errlen, "SQLITE_BUSY kvsql: change capture was turned on while the write ran on a worker "
                              "thread: nothing was written (retry)");
        return -1;
    }
    if (!on && captured) {
        snprintf(err, errlen, "SQLITE_BUSY kvsql: change capture was turned off while the write ran on a worker "
                              "thread: nothing was written (retry)");
        return -1;
    }
    if (on) load_config(ctx, keyname); /* the configuration of this moment: a bad one fails the write */
    return 0;
}

void changes_call_end(void) {
    if (!cur.active) return;
    changes_capture_detach();
    change_log_free(&cur.log);
    RedisModule_FreeString(NULL, cur.stream);
    cur.stream = NULL;
    cur.active = 0;
}

/* ---- the write: XADD, propagated with the pages ---------------------------- */

/* XADD stream [MAXLEN ~|= n] * version v field value ...; propagated.
 * Returns 0, or -1 when Redis refused it (the checks before the write
 * leave no reason it should). */
static int xadd(RedisModuleCtx *ctx, RedisModuleString *stream, const char *maxlen, const char *trim,
                 const char *version, const char *const *fv, int nfv) {
    RedisModuleString *argv[8 + CHANGE_FIELDS_MAX];
    int n = 0;
    argv[n++] = stream;
    if (maxlen[0]) {
        argv[n++] = RedisModule_CreateString(ctx, "MAXLEN", 6);
        argv[n++] = RedisModule_CreateString(ctx, trim, 1);
        argv[n++] = RedisModule_CreateString(ctx, maxlen, strlen(maxlen));
    }
    argv[n++] = RedisModule_CreateString(ctx, "*", 1);
    argv[n++] = RedisModule_CreateString(ctx, "version", 7);
    argv[n++] = RedisModule_CreateString(ctx, version, strlen(version));
    for (int i = 0; i < nfv && i < CHANGE_FIELDS_MAX; i++)
        argv[n++] = RedisModule_CreateString(ctx, fv[i], strlen(fv[i]));
    RedisModuleCallReply *r = RedisModule_Call(ctx, "XADD", "!v", argv, (size_t)n);
    int ok = r && RedisModule_CallReplyType(r) != REDISMODULE_REPLY_ERROR;
    if (!ok) {
        size_t len = 0;
        const char *msg = r ? RedisModule_CallReplyStringPtr(r, &len) : NULL;
        RedisModule_Log(ctx, "warning", "kvsql changes: XADD refused after the checks: %.*s", msg ? (int)len : 7,
                        msg ? msg : "no reply");
    }
    if (r) RedisModule_FreeCallReply(r);
    for (int i = 1; i < n; i++) RedisModule_FreeString(ctx, argv[i]);
    return ok ? 0 : -1;
}

/* A marker entry: version, op (on, off, commit). */
static int change_xadd_marker(RedisModuleCtx *ctx, RedisModuleString *stream, const char *maxlen, const char *trim,
                              const char *version, const char *op) {
    const char *fv[] = {"op", op};
    return xadd(ctx, stream, maxlen, trim, version, fv, 2);
}

static int change_xadd_entry(RedisModuleCtx *ctx, RedisModuleString *stream, const char *maxlen, const char *trim,
                             const char *version, const change_entry *e) {
    const char *fv[CHANGE_FIELDS_MAX];
    return xadd(ctx, stream, maxlen, trim, version, fv, change_entry_fields(e, fv));
}

static int stream_usable(RedisModuleCtx *ctx, RedisModuleString *stream) {
    RedisModuleKey *key = RedisModule_OpenKey(ctx, stream, REDISMODULE_READ | REDISMODULE_OPEN_KEY_NOTOUCH);
    int type = key ? RedisModule_KeyType(key) : REDISMODULE_KEYTYPE_EMPTY;
    if (key) RedisModule_CloseKey(key);
    return type == REDISMODULE_KEYTYPE_EMPTY || type == REDISMODULE_KEYTYPE_STREAM;
}

/* ---- streams known to have room -------------------------------------------- */

/* XINFO STREAM (about 35,000 instructions with its reply, a fifth of a
 * capture-on insert) is asked once per stream, not at every write: a
 * stream whose last ID has a ms part of at most 18 digits (below 2^63)
 * keeps room for any number of entries that XADD * adds (their ms part is
 * the clock's, or the last one's), until another write sets its last ID
 * (XADD with an ID, XSETID) or replaces the key (DEL, RENAME, RESTORE,
 * COPY, MOVE, expiry, eviction). module.c reports every keyspace event of
 * those classes (changes_key_event; those of kvsql's own XADDs, which
 * keep the room, are not reported) and flushes, SWAPDB and reloads
 * (changes_streams_forget). A stream Redis drops without an event (a
 * cluster slot it lost) is missing, and so has room. A small table by
 * hash of the name: a collision forgets the other stream, which is then
 * asked again. Read and written only under Redis's lock (the main
 * thread, or a worker thread landing its write), so one table serves all
 * threads. */
#define ROOMY_SLOTS 256
static struct {
    int db;
    size_t len;
    char *name; /* NULL: free slot */
} roomy[ROOMY_SLOTS];
static unsigned roomy_used;

static unsigned roomy_slot(int db, const char *k, size_t len) {
    uint32_t h = 2166136261u ^ (uint32_t)db;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)k[i]) * 16777619u;
    return h & (ROOMY_SLOTS - 1);
}

static int roomy_known(int db, const char *k, size_t len) {
    if (!roomy_used) return 0;
    unsigned s = roomy_slot(db, k, len);
    return roomy[s].name && roomy[s].db == db && roomy[s].len == len && memcmp(roomy[s].name, k, len) == 0;
}

static void roomy_clear(unsigned s) {
    if (!roomy[s].name) return;
    RedisModule_Free(roomy[s].name);
    roomy[s].name = NULL;
    roomy_used--;
}

static void roomy_add(int db, const char *k, size_t len) {
    unsigned s = roomy_slot(db, k, len);
    roomy_clear(s);
    roomy[s].name = RedisModule_Alloc(len ? len : 1);
    memcpy(roomy[s].name, k, len);
    roomy[s].db = db;
    roomy[s].len = len;
    roomy_used++;
}

void changes_key_event(int db, const char *key, size_t len) {
    if (roomy_known(db, key, len)) roomy_clear(roomy_slot(db, key, len));
}

void changes_streams_forget(void) {
    for (unsigned s = 0; s < ROOMY_SLOTS && roomy_used; s++) roomy_clear(s);
}

/* Whether the last ID's ms part has at most 18 digits (so is below 2^63). */
static int far_from_the_end(const char *id, size_t len) {
    size_t digits = 0;
    while (digits < len && id[digits] >= '0' && id[digits] <= '9') digits++;
    return digits > 0 && digits <= 18 && digits < len && id[digits] == '-';
}

/* Whether the stream (a stream or missing) can take `need` more entries:
 * XADD's IDs end at 18446744073709551615-18446744073709551615, and a
 * stream's last ID can be set anywhere (XADD with an ID, XSETID). */
static int stream_has_room(RedisModuleCtx *ctx, RedisModuleString *stream, uint64_t need) {
    if (!RedisModule_KeyExists(ctx, stream)) return 1;
    size_t klen;
    const char *k = RedisModule_StringPtrLen(stream, &klen);
    int db = RedisModule_GetSelectedDb(ctx);
    if (roomy_known(db, k, klen)) return 1;
    RedisModuleCallReply *r = RedisModule_Call(ctx, "XINFO", "cs", "STREAM", stream);
    int room = 0;
    size_t n = r && RedisModule_CallReplyType(r) == REDISMODULE_REPLY_ARRAY ? RedisModule_CallReplyLength(r) : 0;
    for (size_t i = 0; i + 1 < n; i += 2) {
        size_t len;
        const char *name = RedisModule_CallReplyStringPtr(RedisModule_CallReplyArrayElement(r, i), &len);
        if (!name || len != 17 || memcmp(name, "last-generated-id", 17) != 0) continue;
        const char *id = RedisModule_CallReplyStringPtr(RedisModule_CallReplyArrayElement(r, i + 1), &len);
        room = id && kvsql_stream_has_room(id, len, need);
        if (room && far_from_the_end(id, len)) roomy_add(db, k, klen);
        break;
    }
    if (r) RedisModule_FreeCallReply(r);
    return room;
}

/* Checks, before anything is written, that `need` entries can go to the
 * stream: 0, or -1 with err set. */
static int check_stream(RedisModuleCtx *ctx, RedisModuleString *stream, uint64_t need, char *err, size_t errlen) {
    size_t len;
    const char *s = RedisModule_StringPtrLen(stream, &len);
    if (!stream_usable(ctx, stream)) {
        snprintf(err, errlen, "ERR kvsql changes: '%.*s' holds another type than a stream: nothing was written",
                 (int)(len > 200 ? 200 : len), s);
        return -1;
    }
    if (!stream_has_room(ctx, stream, need)) {
        snprintf(err, errlen,
                 "ERR kvsql changes: the stream '%.*s' has no room for %llu more entries (its IDs are used up to "
                 "18446744073709551615-18446744073709551615): nothing was written. Consume it, then delete it: the "
                 "next entry starts a new stream",
                 (int)(len > 200 ? 200 : len), s, (unsigned long long)need);
        return -1;
    }
    return 0;
}

size_t changes_bytes(void) {
    if (!cur.active) return 0;
    size_t key;
    RedisModule_StringPtrLen(cur.stream, &key);
    size_t bytes = 96 + key; /* a commit entry */
    for (size_t i = 0; i < cur.log.n; i++) {
        const char *fv[CHANGE_FIELDS_MAX];
        int n = change_entry_fields(&cur.log.e[i], fv);
        bytes += 96 + key; /* XADD, the key, MAXLEN, the id, the version */
        for (int j = 0; j < n; j++) bytes += strlen(fv[j]) + 16;
    }
    return bytes;
}

int changes_check_write(RedisModuleCtx *ctx, char *err, size_t errlen) {
    if (!cur.active) return 0;
    if (cur.bad[0]) {
        snprintf(err, errlen, "%s", cur.bad);
        return -1;
    }
    if (changes_max_rows > 0 && cur.log.n > (size_t)changes_max_rows) { /* the main thread's bound */
        snprintf(err, errlen,
                 "SQLITE_TOOBIG kvsql changes: this write changes %zu rows with capture on, more than "
                 "kvsql.capture-max-rows (%lld): their entries would be written in one step on Redis's main "
                 "thread, about 3 us each. Nothing was written. Split the write, or raise kvsql.capture-max-rows "
                 "(0: no limit)",
                 cur.log.n, changes_max_rows);
        return -1;
    }
    return check_stream(ctx, cur.stream, cur.log.n ? (uint64_t)cur.log.n : 1, err, errlen);
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
    if (cur.log.n == 0) { /* pages changed, no row did (PRAGMA user_version, ANALYZE, ...) */
        change_xadd_marker(ctx, cur.stream, cur.maxlen, cur.trim, version, "commit");
        return;
    }
    for (size_t i = 0; i < cur.log.n; i++)
        if (change_xadd_entry(ctx, cur.stream, cur.maxlen, cur.trim, version, &cur.log.e[i]) != 0) return;
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
    if (len == 0 || len > KVSQL_CHANGES_MAXLEN_DIGITS) return -1;
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
    char maxlen[24] = "", trim[2] = "", version[24], why[160] = "";
    capture_state st = read_config(ctx, keyname, maxlen, trim, why, sizeof(why));
    if (st == CAPTURE_BAD) {
        char err[512];
        bad_config_error(keyname, why, "every write to it fails with nothing written", err, sizeof(err));
        return RedisModule_ReplyWithError(ctx, err);
    }
    int on = st == CAPTURE_ON;
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

/* A marker entry: op on/off, with the version as it stands. 0 or -1. */
static int add_marker(RedisModuleCtx *ctx, RedisModuleString *keyname, RedisModuleString *stream, const char *op,
                      const char *maxlen, const char *trim) {
    char version[24];
    read_version(ctx, keyname, version);
    return change_xadd_marker(ctx, stream, strcmp(maxlen, "0") == 0 ? "" : maxlen, trim, version, op);
}

static int call_ok(RedisModuleCallReply *r) {
    int ok = r && RedisModule_CallReplyType(r) != REDISMODULE_REPLY_ERROR;
    if (r) RedisModule_FreeCallReply(r);
    return ok;
}

/* ON or OFF. Everything is checked before the first write: the types of
 * both keys and, when a marker entry goes to the stream, its room. A
 * configuration that is no configuration (format.h) is replaced by ON and
 * removed by OFF, whose marker then trims nothing. */
static int set_capture(RedisModuleCtx *ctx, RedisModuleString *keyname, RedisModuleString *stream,
                       RedisModuleString *cfg, int on, const char *maxlen, const char *trim) {
    char old_max[24] = "", old_trim[2] = "", why[160] = "", err[512];
    capture_state was = read_config(ctx, keyname, old_max, old_trim, why, sizeof(why));
    RedisModuleKey *k = RedisModule_OpenKey(ctx, cfg, REDISMODULE_READ | REDISMODULE_OPEN_KEY_NOTOUCH);
    int type = k ? RedisModule_KeyType(k) : REDISMODULE_KEYTYPE_EMPTY;
    if (k) RedisModule_CloseKey(k);
    if ((type != REDISMODULE_KEYTYPE_EMPTY && type != REDISMODULE_KEYTYPE_HASH) || !stream_usable(ctx, stream))
        return RedisModule_ReplyWithError(ctx, "WRONGTYPE kvsql changes: T:changes must be a stream and "
                                               "T:changes:cfg a hash (docs/FORMAT.md)");
    int marker = on ? was == CAPTURE_OFF : was != CAPTURE_OFF;
    if (marker && check_stream(ctx, stream, 1, err, sizeof(err)) != 0) return RedisModule_ReplyWithError(ctx, err);
    int ok = 1;
    if (on) {
        ok = call_ok(RedisModule_Call(ctx, "HSET", "!scccc", cfg, "maxlen", maxlen, "trim", trim));
        if (ok && marker) ok = add_marker(ctx, keyname, stream, "on", maxlen, trim) == 0;
    } else if (marker) {
        ok = add_marker(ctx, keyname, stream, "off", old_max[0] ? old_max : "0", old_trim) == 0;
        if (ok) ok = call_ok(RedisModule_Call(ctx, "DEL", "!s", cfg));
    }
    if (!ok) return RedisModule_ReplyWithError(ctx, "ERR kvsql changes: Redis refused a write (see its log)");
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
    RedisModuleString *written[] = {stream, cfg};
    char err[512];
    int rc = status ? reply_status(ctx, argv[1], stream)
             : acl_may_write(ctx, written, 2, err, sizeof(err)) != 0 ? RedisModule_ReplyWithError(ctx, err)
                                                                       : set_capture(ctx, argv[1], stream, cfg, on, maxlen, trim);
    RedisModule_FreeString(ctx, stream);
    RedisModule_FreeString(ctx, cfg);
    return rc;
}
