/* exec.c - SQL, SQL.EXEC, SQL.QUERY and SQL.KILL: run SQL on the database in a key.
 *
 * Registered by module.c. One call runs every statement of its SQL text in
 * order on the key's cached connection (cache.c; the statements, their
 * arguments, errors and reply: call.c). Pages committed along the way stay
 * pending in the keyspace store; only when the whole call has succeeded
 * are they written to the hash and propagated, as one change. On any error
 * nothing is written and the reply is the error: so a call is one
 * transaction, whatever BEGIN/COMMIT it contains. The reply is the last
 * statement's result (docs/COMMANDS.md), in the format the call's options
 * ask for (result.c); an error's first word names its class.
 *
 * A call that runs past kvsql.offload-after-us on the main thread stops,
 * rolls back and starts again on a worker thread (offload.c), on a snapshot
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
#include "module/offload/offload.h"
#include "module/connections/cache.h"
#include "module/store/changes.h"
#include "module/commands/leasewait.h"
#include "module/commands/result.h"
#include "module/store/snapshot.h"
#include "module/store/store_keyspace.h"
#include "module/offload/worker.h"
#include "module/settings.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* The rows of the last statement of a call on the main thread; reused by
 * every call. */
static result main_rows;

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

/* ---- SQL.KILL ---------------------------------------------------------- */

int cmd_sql_kill(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    (void)argv;
    if (argc != 1) return RedisModule_WrongArity(ctx);
    int main_call = budget_kill(); /* the call on the main thread, else every worker's */
    if (!main_call && !workers_kill_all()) return RedisModule_ReplyWithError(ctx, "NOTBUSY No SQL is running.");
    return RedisModule_ReplyWithSimpleString(ctx, "OK");
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
