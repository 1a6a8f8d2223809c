/* exec.c - SQL, SQL.EXEC, SQL.QUERY and SQL.KILL: run SQL on the database in a key.
 *
 * Registered by module.c. One call runs every statement of its SQL text in
 * order on the key's cached connection (cache.c). Pages committed along the
 * way stay pending in the keyspace store; only when the whole call has
 * succeeded are they written to the hash and propagated, as one change. On
 * any error nothing is written and the reply is the error: so a call is one
 * transaction, whatever BEGIN/COMMIT it contains. The reply is the last
 * statement's result (docs/COMMANDS.md), in the format the call's options
 * ask for (result.c); an error's first word names its class.
 *
 * A call that runs past kvsql.offload-after-us on the main thread stops,
 * rolls back and starts again on a worker thread (worker.c), on a snapshot
 * of its database (snapshot.h), while its client waits blocked and Redis
 * serves everyone else; its reply, and a writing call's write, happen back
 * on the main thread (docs/COMMANDS.md, "Long calls"). A call that cannot
 * move (inside MULTI or a script, using the connection's TEMP objects, run
 * again here: call.h's stay) stops with an error instead, a margin past
 * kvsql.offload-after-us (budget.h), so that none holds the main thread
 * long; only with offloading off does the time limit alone bound it. */
#include "module/commands/exec.h"

#include "module/commands/acl.h"
#include "module/connections/budget.h"
#include "module/commands/call.h"
#include "module/connections/cache.h"
#include "module/store/changes.h"
#include "kvsql.h"
#include "module/commands/leasewait.h"
#include "module/commands/result.h"
#include "module/store/snapshot.h"
#include "module/store/store_keyspace.h"
#include "utf8.h"
#include "module/offload/worker.h"
#include "module/settings.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The rows of the last statement of a call on the main thread; reused by
 * every call. */
static result main_rows;

static exec_stats stats;
#define COUNT(field) __atomic_fetch_add(&stats.field, 1, __ATOMIC_RELAXED)


exec_stats exec_get_stats(void) {
    return stats;
}

/* ---- options: [TYPED] [MAP] [NAMED] [TYPES spec] before the SQL ---------- */

static int is_word(RedisModuleString *s, const char *word) {
    size_t len;
    const char *p = RedisModule_StringPtrLen(s, &len);
    return len == strlen(word) && strncasecmp(p, word, len) == 0;
}

/* Whether s could be one of the option words (3 to 5 letters, starting
 * with T, M or N): SQL text seldom is. */
static int may_be_option(RedisModuleString *s) {
    size_t len;
    const char *p = RedisModule_StringPtrLen(s, &len);
    return len >= 3 && len <= 5 && strchr("TtMmNn", p[0]);
}

/* The letters a TYPES spec may hold: auto, integer, real, text, blob, null. */
static int valid_spec(const char *spec, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (!strchr("airtbn", spec[i]) || !spec[i]) return 0;
    return 1;
}

/* Reads the options at argv[0..]; returns how many arguments they took,
 * or -1 with err set. Only these exact words are options: none of them is
 * SQL that could run, so SQL text is never taken for one. */
static int parse_options(RedisModuleString **argv, int argc, options *o, char *err, size_t errlen) {
    memset(o, 0, sizeof(*o));
    int i = 0;
    for (; i < argc - 1; i++) { /* the last argument left is the SQL */
        if (!may_be_option(argv[i])) break; /* the SQL of nearly every call: one look */
        if (is_word(argv[i], "TYPED")) o->format |= RESULT_TYPED;
        else if (is_word(argv[i], "MAP")) o->format |= RESULT_MAP;
        else if (is_word(argv[i], "NAMED")) o->named = 1;
        else if (is_word(argv[i], "TYPES") && i + 2 < argc) {
            o->spec = RedisModule_StringPtrLen(argv[++i], &o->spec_len);
            if (!valid_spec(o->spec, o->spec_len)) {
                snprintf(err, errlen, "ERR TYPES %.40s: one letter per argument, each a (auto), i (integer), "
                                      "r (real), t (text), b (blob) or n (null)", o->spec);
                return -1;
            }
        } else break;
    }
    return i;
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

/* ---- SQL.KILL ---------------------------------------------------------- */

int cmd_sql_kill(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    (void)argv;
    if (argc != 1) return RedisModule_WrongArity(ctx);
    int main_call = budget_kill(); /* the call on the main thread, else every worker's */
    if (!main_call && !workers_kill_all()) return RedisModule_ReplyWithError(ctx, "NOTBUSY No SQL is running.");
    return RedisModule_ReplyWithSimpleString(ctx, "OK");
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

/* ---- commands ---------------------------------------------------------- */

/* SQL text that kvsql refuses before anything runs: err set, non-zero. */
static int refuse_text(const char *text, size_t len, char *err, size_t errlen) {
    const char *nul = memchr(text, 0, len);
    if (nul) {
        snprintf(err, errlen,
                 "ERR the SQL contains a NUL byte (at byte %zu): kvsql refuses it rather than ignore what follows",
                 (size_t)(nul - text));
        return 1;
    }
    if (cache_max_sql_kb > 0 && len > (size_t)cache_max_sql_kb * 1024) {
        snprintf(err, errlen, "ERR the SQL is %zu bytes, more than kvsql.max-sql-kb (%lld KiB) allows", len,
                 cache_max_sql_kb);
        return 1;
    }
    return 0;
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

/* Checks the options against the arguments: err set, non-zero when they
 * do not fit. nvalues gets the number of values. */
static int refuse_args(const options *o, int nargs, int *nvalues, char *err, size_t errlen) {
    if (o->named && nargs % 2) {
        snprintf(err, errlen, "ERR NAMED takes name value pairs after the SQL, but %d arguments were given", nargs);
        return 1;
    }
    *nvalues = o->named ? nargs / 2 : nargs;
    if (o->spec && o->spec_len != (size_t)*nvalues) {
        snprintf(err, errlen, "ERR TYPES has %zu letters but %d values were given: one letter per value",
                 o->spec_len, *nvalues);
        return 1;
    }
    return 0;
}

/* How long a call may run on the main thread before it moves to a worker
 * (0: it never moves). budget.c keeps calls inside MULTI and scripts here. */
static long long offload_after(void) {
    return worker_threads > 0 && exec_offload_after_us > 0 ? exec_offload_after_us : 0;
}

static void run_on_key(call *k, RedisModuleString *keyname, RedisModuleKey *key, const char *text, size_t len);

/* A call stopped to move (nothing written): hands it to a worker, or, when
 * it cannot move (out of memory for its snapshot, a client Redis would not
 * block), runs it again here, as a call that cannot move. */
static void move_or_rerun(call *k, RedisModuleString *keyname, RedisModuleKey *key, const char *text, size_t len) {
    uint32_t npages = keyspace_store_npages(k->c->store);
    uint32_t psz = (uint32_t)keyspace_store_page_size(k->c->store);
    result_reset(k->rows);
    cache_release(k->c);
    k->c = NULL;
    if (offload_call(k, keyname, npages, psz)) return; /* a call that may use TEMP objects never stops to move */
    k->stay = STAY_CLIENT;
    k->offloaded = k->has_rows = k->max_params = 0;
    k->changes = 0;
    k->err[0] = 0;
    if (k->used) memset(k->used, 0, (size_t)k->nargs);
    run_on_key(k, keyname, key, text, len);
}

/* Runs a call whose key is open: the SQL, then the flush and the reply;
 * or, once it has run long, moves it to a worker. */
static void run_on_key(call *k, RedisModuleString *keyname, RedisModuleKey *key, const char *text, size_t len) {
    k->c = cache_acquire(k->ctx, keyname, key, k->readonly, k->err, sizeof(k->err));
    if (!k->c) {
        call_reply_error(k->ctx, k->err);
        return;
    }
    if (!k->readonly) changes_call_begin(k->ctx, keyname, k->c->db, &k->c->g); /* capture: if on for the key */
    if (k->c->has_temp && k->offload_us && !k->stay && guard_may_use_temp(k->c->db, &k->c->g, text, len, k->readonly))
        k->stay = STAY_TEMP; /* TEMP objects live only in this connection: the call cannot move */
    int ok = call_run(k, text, len);
    if (ok) ok = keyspace_store_flush(k->c->store, k->err, sizeof(k->err)) == 0; /* refused: nothing written */
    if (!ok && keyspace_store_has_pending(k->c->store)) {
        /* SQLite's cache holds commits that will never reach the hash. */
        keyspace_store_discard(k->c->store);
        k->c->stale = 1;
    }
    changes_call_end();
    if (k->offloaded) {
        move_or_rerun(k, keyname, key, text, len);
        return;
    }
    if (!ok && k->may_wait && leasewait_refused(k->err) && leasewait_start(k->ctx, keyname, k->argv, k->argc)) {
        result_reset(k->rows); /* nothing written: it runs again in its turn */
        cache_release(k->c);
        return;
    }
    call_reply(k, ok);
    result_reset(k->rows);
    cache_release(k->c);
}

/* A write while a worker writes the same database: refused (err set,
 * non-zero), as the two would overwrite each other. */
static int refuse_second_writer(RedisModuleCtx *ctx, RedisModuleString *keyname, char *err, size_t errlen) {
    if (!snapshots_live()) return 0;
    size_t len;
    const char *key = RedisModule_StringPtrLen(keyname, &len);
    if (!snapshots_writing(RedisModule_GetSelectedDb(ctx), key, len)) return 0;
    snprintf(err, errlen, "SQLITE_BUSY database is locked: a long write to it runs on a worker thread (retry)");
    return 1;
}

/* argv: [options...] sql [arg ...]; stay: why the call cannot move to a
 * worker thread when it runs long (budget.h), 0 when it may. */
static int run_command(RedisModuleCtx *ctx, RedisModuleString *keyname, RedisModuleString **argv, int argc,
                       int readonly, int stay) {
    call k;
    memset(&k, 0, sizeof(k));
    int nopt = parse_options(argv, argc, &k.opt, k.err, sizeof(k.err));
    if (nopt < 0) return call_reply_error(ctx, k.err);
    size_t len;
    const char *text = RedisModule_StringPtrLen(argv[nopt], &len);
    k.ctx = ctx;
    k.rows = &main_rows;
    k.argv = argv;
    k.argc = argc;
    k.args = argv + nopt + 1;
    k.nraw = argc - nopt - 1;
    k.readonly = readonly;
    k.may_wait = !stay && !readonly; /* not when run again (exec_run_here) */
    k.offload_us = offload_after();
    k.stay = stay;
    if (refuse_text(text, len, k.err, sizeof(k.err)) || refuse_args(&k.opt, k.nraw, &k.nargs, k.err, sizeof(k.err)) ||
        (!readonly && refuse_second_writer(ctx, keyname, k.err, sizeof(k.err))) ||
        (!readonly && acl_may_write_aux(ctx, keyname, k.err, sizeof(k.err)) != 0))
        return call_reply_error(ctx, k.err);
    RedisModuleKey *key = RedisModule_OpenKey(ctx, keyname, readonly ? REDISMODULE_READ
                                                                      : REDISMODULE_READ | REDISMODULE_WRITE);
    int type = RedisModule_KeyType(key);
    if (type != REDISMODULE_KEYTYPE_EMPTY && type != REDISMODULE_KEYTYPE_HASH) {
        if (key) RedisModule_CloseKey(key);
        return call_reply_error(ctx, REDISMODULE_ERRORMSG_WRONGTYPE);
    }
    if (k.opt.named && k.nargs) { /* not on the hot path: NAMED only */
        k.used = RedisModule_Alloc((size_t)k.nargs);
        memset(k.used, 0, (size_t)k.nargs);
    }
    run_on_key(&k, keyname, key, text, len);
    if (k.used) RedisModule_Free(k.used);
    if (key) RedisModule_CloseKey(key);
    return REDISMODULE_OK;
}

void exec_run_here(RedisModuleCtx *ctx, RedisModuleString *keyname, RedisModuleString **argv, int argc,
                   int readonly, int why) {
    run_command(ctx, keyname, argv, argc, readonly, why);
}

int cmd_sql(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (argc < 2) return RedisModule_WrongArity(ctx);
    if (RedisModule_GetContextFlags(ctx) & REDISMODULE_CTX_FLAGS_CLUSTER)
        return call_reply_error(ctx, "ERR SQL works on the fixed key " DEFAULT_DB_KEY
                                ", which Redis Cluster cannot route: use SQL.EXEC <key> <sql>");
    RedisModuleString *keyname = RedisModule_CreateString(ctx, DEFAULT_DB_KEY, strlen(DEFAULT_DB_KEY));
    int r = run_command(ctx, keyname, argv + 1, argc - 1, 0, 0);
    RedisModule_FreeString(ctx, keyname);
    return r;
}

int cmd_sql_exec(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (argc < 3) return RedisModule_WrongArity(ctx);
    return run_command(ctx, argv[1], argv + 2, argc - 2, 0, 0);
}

int cmd_sql_query(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (argc < 3) return RedisModule_WrongArity(ctx);
    return run_command(ctx, argv[1], argv + 2, argc - 2, 1, 0);
}
