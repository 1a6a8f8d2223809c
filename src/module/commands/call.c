/* call.c - runs one call's SQL (call.h): binds its arguments, runs every
 * statement of its text in order on its connection within its budget,
 * turns what went wrong into the error reply (its first word names the
 * class, docs/COMMANDS.md), and replies its result. The same on Redis's
 * main thread (exec.c) and on a worker thread (offload.c), which both call
 * it; it calls neither. */
#include "module/commands/call.h"

#include "module/connections/budget.h"
#include "module/connections/cache.h"
#include "module/store/changes.h"
#include "module/commands/result.h"
#include "utf8.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

call_rerun_fn call_rerun;

static exec_stats stats;
#define COUNT(field) __atomic_fetch_add(&stats.field, 1, __ATOMIC_RELAXED)


exec_stats exec_get_stats(void) {
    return stats;
}

/* ---- arguments --------------------------------------------------------- */

/* An argument in canonical integer form ("42", "-7", "0"; not "042",
 * "+1", "-0" or beyond 64 bits). */
static int canonical_integer(const char *p, size_t len, sqlite3_int64 *out) {
    int neg = len > 0 && p[0] == '-';
    size_t i = (size_t)neg;
    if (len == i || len - i > 19) return 0;
    if (p[i] == '0' && (len - i > 1 || neg)) return 0;
    unsigned long long v = 0;
    for (; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') return 0;
        v = v * 10 + (unsigned long long)(p[i] - '0'); /* 19 digits cannot overflow */
    }
    if (v > (unsigned long long)INT64_MAX + (unsigned long long)neg) return 0;
    *out = neg ? (sqlite3_int64)(0 - v) : (sqlite3_int64)v;
    return 1;
}

/* Valid UTF-8 without NUL bytes: such an argument binds as TEXT. */
static int text_like(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        if (s[i] == 0) return 0;
        size_t len = utf8_sequence(s + i, n - i);
        if (len == 0) return 0;
        i += len;
    }
    return 1;
}

/* Binds bytes by the default rule: canonical integer, else valid UTF-8
 * text, else a blob. */
static int bind_auto(sqlite3_stmt *stmt, int param, const char *p, size_t len) {
    sqlite3_int64 v;
    if (canonical_integer(p, len, &v)) return sqlite3_bind_int64(stmt, param, v);
    if (text_like((const unsigned char *)p, len)) return sqlite3_bind_text(stmt, param, p, (int)len, SQLITE_STATIC);
    return sqlite3_bind_blob(stmt, param, p, (int)len, SQLITE_STATIC);
}

/* A whole decimal number of the kind strtoll/strtod read, or an error. */
static int bind_number(call *k, sqlite3_stmt *stmt, int param, const char *p, size_t len, char letter) {
    char buf[64], *end;
    if (len == 0 || len >= sizeof(buf)) goto bad;
    memcpy(buf, p, len);
    buf[len] = 0;
    errno = 0;
    if (letter == 'i') {
        long long v = strtoll(buf, &end, 10);
        if (*end || errno) goto bad;
        return sqlite3_bind_int64(stmt, param, v);
    }
    double d = strtod(buf, &end);
    if (*end || isnan(d)) goto bad;
    return sqlite3_bind_double(stmt, param, d);
bad:
    snprintf(k->err, sizeof(k->err), "ERR TYPES: argument \"%.40s\" is not %s", len < 64 ? p : "(long)",
             letter == 'i' ? "a 64-bit integer" : "a real number");
    return SQLITE_MISMATCH;
}

/* Binds value v (0-based) to parameter `param`, by its TYPES letter. */
static int bind_value(call *k, sqlite3_stmt *stmt, int param, int v) {
    size_t len;
    RedisModuleString *arg = k->args[k->opt.named ? 2 * v + 1 : v];
    const char *p = RedisModule_StringPtrLen(arg, &len);
    if (len > INT_MAX) return SQLITE_TOOBIG;
    if (len >= BUDGET_BIG_VALUE) budget_big_values(); /* steps on it take long: the call moves at once */
    char letter = k->opt.spec ? k->opt.spec[v] : 'a';
    switch (letter) {
    case 'n': return sqlite3_bind_null(stmt, param);
    case 't': return sqlite3_bind_text(stmt, param, p, (int)len, SQLITE_STATIC);
    case 'b': return sqlite3_bind_blob(stmt, param, p, (int)len, SQLITE_STATIC);
    case 'i':
    case 'r': return bind_number(k, stmt, param, p, len, letter);
    default: return bind_auto(stmt, param, p, len);
    }
}

/* NAMED: the pairs sorted by name (without its prefix), then by order:
 * a parameter finds its pair by binary search, so that binding takes
 * O((parameters + pairs) log pairs), not parameters times pairs. */
typedef struct named_entry {
    const char *name;
    size_t len;
    int v;
} named_entry;

struct named_index {
    int n;
    named_entry e[];
};

/* A pair's name without its prefix: x, :x, @x and $x all name :x, @x and $x. */
static named_entry pair_name(call *k, int v) {
    named_entry e;
    e.name = RedisModule_StringPtrLen(k->args[2 * v], &e.len);
    e.v = v;
    if (e.len > 0 && strchr(":@$", e.name[0])) {
        e.name++;
        e.len--;
    }
    return e;
}

static int compare_names(const char *a, size_t alen, const char *b, size_t blen) {
    int c = memcmp(a, b, alen < blen ? alen : blen);
    return c ? c : (alen > blen) - (alen < blen);
}

static int compare_entries(const void *pa, const void *pb) {
    const named_entry *a = pa, *b = pb;
    int c = compare_names(a->name, a->len, b->name, b->len);
    return c ? c : (a->v > b->v) - (a->v < b->v);
}

static struct named_index *named_index_of(call *k) {
    if (k->named) return k->named;
    struct named_index *x = RedisModule_Alloc(sizeof(*x) + (size_t)k->nargs * sizeof(named_entry));
    x->n = k->nargs;
    for (int v = 0; v < k->nargs; v++) x->e[v] = pair_name(k, v);
    qsort(x->e, (size_t)x->n, sizeof(named_entry), compare_entries);
    return k->named = x;
}

static void named_index_free(call *k) {
    if (k->named) RedisModule_Free(k->named);
    k->named = NULL;
}

/* NAMED: the first pair whose name is that of parameter `name` (":x",
 * "@x", "$x"); -1 when none. */
static int find_named(call *k, const char *name) {
    const struct named_index *x = named_index_of(k);
    const char *want = name + 1;
    size_t wlen = strlen(want);
    int lo = 0, hi = x->n; /* the first entry not below want */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (compare_names(x->e[mid].name, x->e[mid].len, want, wlen) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo < x->n && compare_names(x->e[lo].name, x->e[lo].len, want, wlen) == 0 ? x->e[lo].v : -1;
}

/* SQLite finds a parameter's name by walking the list of them: binding
 * many takes time in one piece, checked as a step is every so many. */
#define NAMED_CHECK_EVERY 64

static int bind_named(call *k, sqlite3_stmt *stmt, int n) {
    for (int i = 1; i <= n; i++) {
        if (i % NAMED_CHECK_EVERY == 0 && budget_tick()) return SQLITE_INTERRUPT;
        const char *name = sqlite3_bind_parameter_name(stmt, i);
        if (!name || name[0] == '?') {
            snprintf(k->err, sizeof(k->err),
                     "ERR NAMED: parameter %d has no name: with NAMED every parameter is :name, @name or $name", i);
            return SQLITE_RANGE;
        }
        int v = find_named(k, name);
        if (v < 0) {
            snprintf(k->err, sizeof(k->err), "ERR NAMED: no argument gives %.100s", name);
            return SQLITE_RANGE;
        }
        k->used[v] = 1;
        int rc = bind_value(k, stmt, i, v);
        if (rc != SQLITE_OK) return rc;
    }
    return SQLITE_OK;
}

static int bind_args(call *k, sqlite3_stmt *stmt) {
    int n = sqlite3_bind_parameter_count(stmt);
    if (k->opt.named) return bind_named(k, stmt, n);
    if (n > k->max_params) k->max_params = n;
    if (n > k->nargs) {
        snprintf(k->err, sizeof(k->err), "ERR the statement has %d parameters but %d arguments were given", n,
                 k->nargs);
        return SQLITE_ERROR;
    }
    for (int i = 0; i < n; i++) {
        int rc = bind_value(k, stmt, i + 1, i);
        if (rc != SQLITE_OK) return rc;
    }
    return SQLITE_OK;
}

/* Arguments no statement used: an error, as they are surely a mistake. */
static int check_unused(call *k) {
    if (k->opt.named) {
        for (int v = 0; v < k->nargs; v++) {
            if (k->used[v]) continue;
            size_t len;
            const char *p = RedisModule_StringPtrLen(k->args[2 * v], &len);
            snprintf(k->err, sizeof(k->err), "ERR NAMED: argument %.*s names no parameter of the SQL",
                     (int)(len > 100 ? 100 : len), p);
            return SQLITE_ERROR;
        }
        return SQLITE_OK;
    }
    if (k->nargs > k->max_params) {
        snprintf(k->err, sizeof(k->err), "ERR too many arguments: %d given, but the SQL has %d parameters", k->nargs,
                 k->max_params);
        return SQLITE_ERROR;
    }
    return SQLITE_OK;
}

/* ---- statements -------------------------------------------------------- */

/* ---- errors: the first word names the class (docs/COMMANDS.md) --------- */

/* SQLite's primary result codes by number, as in SQLITE_<name>. */
static const char *const code_names[] = {
    "OK",     "ERROR",  "INTERNAL", "PERM",   "ABORT",    "BUSY",     "LOCKED", "NOMEM",  "READONLY", "INTERRUPT",
    "IOERR",  "CORRUPT", "NOTFOUND", "FULL",  "CANTOPEN", "PROTOCOL", "EMPTY",  "SCHEMA", "TOOBIG",   "CONSTRAINT",
    "MISMATCH", "MISUSE", "NOLFS",  "AUTH",   "FORMAT",   "RANGE",    "NOTADB", "NOTICE", "WARNING"};
#define NCODES ((int)(sizeof(code_names) / sizeof(code_names[0])))

const char *exec_code_name(int code) {
    return code >= 0 && code < NCODES ? code_names[code] : NULL;
}

/* A stopped call's error: the class is SQLITE_INTERRUPT (time, SQL.KILL)
 * or SQLITE_NOMEM (memory), the words budget.c's. */
static void set_stop_error(call *k, const char *reason) {
    int kind = budget_stop_kind(), code = kind == STOP_MEMORY ? SQLITE_NOMEM : SQLITE_INTERRUPT;
    if (kind == STOP_KILL) COUNT(kills);
    else if (kind == STOP_TIME) COUNT(timeouts);
    else if (kind == STOP_STAY) COUNT(stay_stops);
    else COUNT(memory_stops);
    snprintf(k->err, sizeof(k->err), "SQLITE_%s %s", code_names[code], reason);
}

static void set_sqlite_error(call *k, int rc) {
    const char *stopped = budget_stop_reason(); /* whatever error it caused */
    if (stopped) {
        set_stop_error(k, stopped);
        return;
    }
    if (k->err[0]) return;
    const char *msg = sqlite3_errmsg(k->c->db);
    const char *store = kvsql_store_errmsg(k->c->store);
    const char *cls = exec_code_name(rc & 0xff);
    if (!cls || (rc & 0xff) == SQLITE_OK) cls = "ERROR";
    if ((rc & 0xff) == SQLITE_AUTH)
        snprintf(k->err, sizeof(k->err),
                 "SQLITE_%s %s: kvsql does not allow this inside Redis (see docs/SECURITY.md)", cls, msg);
    else if (store[0])
        snprintf(k->err, sizeof(k->err), "SQLITE_%s %s (%s)", cls, msg, store);
    else
        snprintf(k->err, sizeof(k->err), "SQLITE_%s %s", cls, msg);
}

int call_reply_error(RedisModuleCtx *ctx, const char *err) {
    size_t word = strcspn(err, " ");
    if (word > 7 && strncmp(err, "SQLITE_", 7) == 0) {
        for (int i = 1; i < NCODES; i++)
            if (strlen(code_names[i]) == word - 7 && strncmp(err + 7, code_names[i], word - 7) == 0)
                stats.errors_by_code[i]++;
    } else if (word == 3 && strncmp(err, "ERR", 3) == 0) {
        stats.errors_usage++;
    } else {
        stats.errors_other++;
    }
    return RedisModule_ReplyWithError(ctx, err);
}

static int run_stmt(call *k, sqlite3_stmt *stmt) {
    if (k->readonly && !sqlite3_stmt_readonly(stmt)) {
        snprintf(k->err, sizeof(k->err), "ERR SQL.QUERY runs read-only SQL: use SQL.EXEC for \"%.200s\"",
                 sqlite3_sql(stmt));
        return SQLITE_READONLY;
    }
    int rc = bind_args(k, stmt);
    if (rc != SQLITE_OK) return rc;
    k->has_rows = sqlite3_column_count(stmt) > 0;
    if (k->has_rows && (rc = result_begin(k->rows, stmt)) != SQLITE_OK) return rc;
    sqlite3_int64 before = sqlite3_total_changes64(k->c->db);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (k->has_rows && (rc = result_add_row(k->rows, stmt)) != SQLITE_OK) return rc;
    }
    if (rc != SQLITE_DONE) return rc;
    /* Stopped inside a step (budget.c's checks outside its ticks), SQLite
     * may end the statement as if done: OP_Count with part of a count. */
    if (budget_stop_kind()) return SQLITE_INTERRUPT;
    /* DDL leaves sqlite3_changes() as the last DML set it: report 0. */
    k->changes = sqlite3_total_changes64(k->c->db) != before ? sqlite3_changes64(k->c->db) : 0;
    return SQLITE_OK;
}

static int run_all(call *k, const char *sql, size_t len) {
    const char *end = sql + len;
    while (sql < end) {
        sqlite3_stmt *stmt = NULL;
        const char *tail = end;
        int rc = cache_prepare(k->c, sql, (size_t)(end - sql), &stmt, &tail);
        if (rc != SQLITE_OK) return rc;
        if (stmt) {
            rc = changes_stmt_begin(stmt, k->err, sizeof(k->err)); /* capture, when on (this thread's) */
            if (rc == SQLITE_OK) rc = run_stmt(k, stmt);
            if (rc == SQLITE_OK) rc = changes_stmt_end(stmt, k->err, sizeof(k->err));
            cache_finish_stmt(k->c, stmt);
            if (rc != SQLITE_OK) return rc;
        }
        if (tail <= sql) { /* nothing of the rest was read: never skip SQL */
            snprintf(k->err, sizeof(k->err), "ERR SQLite read no statement from the SQL text at \"%.40s\"", sql);
            return SQLITE_ERROR;
        }
        sql = tail;
    }
    return check_unused(k);
}

/* Rolls back a transaction the SQL left open. */
static int close_transaction(call *k, int ok) {
    if (sqlite3_get_autocommit(k->c->db)) return ok;
    if (sqlite3_exec(k->c->db, "ROLLBACK", 0, 0, 0) != SQLITE_OK) k->c->stale = 1;
    if (ok)
        snprintf(k->err, sizeof(k->err),
                 "ERR transaction left open: BEGIN and its COMMIT must be in the same call (rolled back)");
    return 0;
}

void call_reply_result(RedisModuleCtx *ctx, result *rows, int has_rows, long long changes, int format) {
    if (has_rows) result_reply(rows, ctx, format);
    else RedisModule_ReplyWithLongLong(ctx, changes);
}

void call_reply(call *k, int ok) {
    if (!ok) call_reply_error(k->ctx, k->err);
    else call_reply_result(k->ctx, k->rows, k->has_rows, k->changes, k->opt.format);
}

int call_run(call *k, const char *text, size_t len) {
    sqlite3 *db = k->c->db;
    if (k->ctx) budget_begin(k->ctx, db, k->offload_us);
    else budget_begin_worker(db, k->killed, k->started_ms);
    if (k->ctx && k->stay) budget_stay(k->stay);
    guard_call_begin(db, &k->c->g);
    int rc = cache_apply_settings(k->c);
    if (len >= BUDGET_BIG_VALUE) budget_big_values(); /* moves at once, when it may (arguments: bind_value) */
    if (k->c->has_temp) budget_keep_connection(); /* moving must not close it */
    if (rc == SQLITE_OK) rc = run_all(k, text, len);
    named_index_free(k);
    if (k->c->g.temp_written) k->c->has_temp = 1;
    /* Stopped to move: not an error, it goes on elsewhere. But a call whose
     * statements all ended well is done, however late the stop came (a
     * check at an allocation after its last step): its commit waits in the
     * store, and running it again would apply it twice. */
    int kind = budget_stop_kind(), moving = kind == STOP_OFFLOAD;
    k->offloaded = moving && rc != SQLITE_OK;
    /* Got by with less memory, but stop; a call that could not move and
     * ended well just as its time ran out is done. */
    if (rc == SQLITE_OK && kind && !moving && kind != STOP_STAY) rc = SQLITE_NOMEM;
    if (rc != SQLITE_OK && !k->offloaded) set_sqlite_error(k, rc);
    int ok = close_transaction(k, rc == SQLITE_OK);
    /* Out of memory or time, or moved or stopped for staying after SQLite
     * was refused memory (a stopped call is refused all, unless its
     * connection holds TEMP objects: budget.c): start afresh. */
    if (kind && (!(k->offloaded || kind == STOP_STAY) || budget_memory_refused())) k->c->stale = 1;
    budget_end(db);
    if (guard_call_end(db, &k->c->g, CACHE_TEMP_KEEP_BYTES)) k->c->stale = 1;
    return ok;
}

