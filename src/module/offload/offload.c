/* offload.c - a call moved off Redis's main thread (call.h, offload_call).
 *
 * exec.c calls offload_call() on the main thread when a call has run past
 * kvsql.offload-after-us; nothing of it was written. The call becomes a
 * job: copies of its key name, SQL and arguments, and a snapshot of its
 * database (snapshot.h). The client is blocked and a worker (worker.c)
 * runs the SQL again, from the start, on a private connection whose pages
 * come from the snapshot (store_snapshot.c). Redis goes on serving other
 * clients, writes to the same database included (a second writer of the
 * same database is refused with SQLITE_BUSY: exec.c).
 *
 * If the snapshot breaks (the hash changed in a way kvsql could not keep:
 * a user's HSET, a replicated write, a library commit, a library's big
 * commit that swaps in a new hash with RENAME), the worker starts the SQL
 * again on a new snapshot; after SNAPSHOT_TRIES such starts it runs it once
 * more holding Redis's lock throughout, as a call on the main thread
 * would. If the key is gone by then (deleted, expired, moved to another
 * node, flushed), the call fails.
 *
 * A writing call's pages are written by the worker (the same end-of-call
 * write as on the main thread: store_keyspace.c), holding Redis's lock,
 * and only at a moment when Redis does not pause writes: Redis 7.0 aborts
 * (propagatePendingCommands' assert) when anything is propagated during
 * CLIENT PAUSE WRITE, FAILOVER or SHUTDOWN's wait for a lagging replica,
 * and the check and the write under one hold of the lock leave no gap for
 * a pause to start in. While writes are paused the worker waits, within
 * the call's time limit (kvsql.query-timeout-ms) and SQL.KILL. The reply
 * then happens in the blocked client's reply callback, on the main
 * thread, which writes nothing (a call that must run again there, TEMP
 * objects, is refused if writes are paused by then). A write whose
 * database changed after its snapshot fails with SQLITE_BUSY and writes
 * nothing. A client that disconnects before its write gets nothing
 * written.
 *
 * A write of more than STAGE_MIN_BYTES of pages is not written in one
 * step: the worker stages the new hash in steps, then swaps it in
 * (stage.h).
 *
 * A write on a database whose change capture is on (SQL.CHANGES) moves
 * too: the worker captures its row changes as the main thread would
 * (changes.h: capture's state is per thread) and writes their entries in
 * the same hold of the lock as the pages, after the version's INCR, in
 * the one MULTI/EXEC of the write or of a staged write's swap; what could
 * make an entry fail is checked before anything is written. Capture
 * turned on or off while the write ran fails it with nothing written. */
#include "module/commands/acl.h"
#include "module/connections/budget.h"
#include "module/commands/call.h"
#include "module/offload/offload.h"
#include "module/store/changes.h"
#include "kvsql.h"
#include "module/store/snapshot.h"
#include "module/offload/stage.h"
#include "module/store/store_keyspace.h"
#include "module/store/store_snapshot.h"
#include "module/offload/worker.h"
#include "module/settings.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* The reply when the database's key went away under the call. */
#define GONE_ERROR STAGE_GONE_ERROR

/* The reply of a call that must run again on the main thread while Redis
 * pauses writes. */
#define PAUSED_ERROR                                                                                          \
    "SQLITE_BUSY kvsql: Redis pauses writes (CLIENT PAUSE, FAILOVER or SHUTDOWN): nothing was written (retry)"

/* Starts on a snapshot before the run that holds Redis's lock. */
#define SNAPSHOT_TRIES 3

typedef struct job {
    worker_task task; /* first: worker.c sees the job as its task */
    RedisModuleBlockedClient *bc;
    int dbid, readonly, argc, nraw, nargs;
    RedisModuleString *keyname, **argv; /* copies, made and freed on the main thread */
    RedisModuleString *sql, **args;     /* in argv */
    options opt;                        /* its TYPES spec in argv */
    long long started_ms;
    snapshot *snap;
    /* the outcome */
    int ok, has_rows;
    long long changes;
    result rows;
    pending_pages pending; /* a writing call's pages */
    RedisModuleString **values; /* the same pages as strings, per slot: made on the worker */
    stage_write stage;          /* a big write: staged by the worker (stage.h) */
    int restarts, locked;
    int run_here; /* it wrote TEMP objects, which must live in the key's connection: run it there */
    int gone;     /* its client disconnected: write nothing (set under Redis's lock) */
    int may_stage; /* its user may write the staging keys (acl.h): else a big write lands in one step */
    int captures;  /* a write on a database whose change capture was on: the worker captures its entries */
    struct job *next_live; /* in live_jobs, from BlockClient to job_free (under Redis's lock) */
    char err[1024];
} job;

/* Jobs whose client is blocked: the disconnect callback finds its job here. */
static job *live_jobs;

static offload_stats stats;
#define COUNT(field) __atomic_fetch_add(&stats.field, 1, __ATOMIC_RELAXED)

offload_stats offload_get_stats(void) {
    return stats;
}

/* ---- on the main thread: making and freeing a job ------------------------ */

static RedisModuleString *copy_string(RedisModuleString *s) {
    size_t len;
    const char *p = RedisModule_StringPtrLen(s, &len);
    return RedisModule_CreateString(NULL, p, len);
}

static void unlist_job(job *j) {
    for (job **p = &live_jobs; *p; p = &(*p)->next_live)
        if (*p == j) {
            *p = j->next_live;
            break;
        }
}

/* Main thread: the blocked client went away; its job writes nothing. */
static void on_disconnect(RedisModuleCtx *ctx, RedisModuleBlockedClient *bc) {
    (void)ctx;
    for (job *j = live_jobs; j; j = j->next_live)
        if (j->bc == bc) j->gone = 1;
}

static void job_free(RedisModuleCtx *ctx, void *data) {
    job *j = data;
    unlist_job(j);
    stage_abandon(ctx, &j->stage); /* not published: its client went away */
    stage_free(&j->stage);
    snapshot_drop(j->snap);
    RedisModule_FreeString(NULL, j->keyname);
    for (int i = 0; i < j->argc; i++) RedisModule_FreeString(NULL, j->argv[i]);
    RedisModule_Free(j->argv);
    result_free(&j->rows);
    for (size_t i = 0; j->values && i < j->pending.map.cap; i++)
        if (j->values[i]) RedisModule_FreeString(NULL, j->values[i]);
    RedisModule_Free(j->values);
    pagemap_clear(&j->pending.map);
    RedisModule_Free(j);
}

static job *job_new(call *k, RedisModuleString *keyname) {
    job *j = RedisModule_Alloc(sizeof(*j));
    memset(j, 0, sizeof(*j));
    j->dbid = RedisModule_GetSelectedDb(k->ctx);
    j->readonly = k->readonly;
    j->keyname = copy_string(keyname);
    j->argc = k->argc;
    j->argv = RedisModule_Alloc(sizeof(*j->argv) * (size_t)(k->argc + 1));
    for (int i = 0; i < k->argc; i++) j->argv[i] = copy_string(k->argv[i]);
    int nopt = (int)(k->args - k->argv) - 1; /* the options before the SQL */
    j->sql = j->argv[nopt];
    j->args = j->argv + nopt + 1;
    j->nraw = k->nraw;
    j->nargs = k->nargs;
    j->opt = k->opt;
    for (int i = 0; k->opt.spec && i < nopt; i++) /* TYPES spec: the argument after the word */
        if (RedisModule_StringPtrLen(k->argv[i], NULL) == k->opt.spec)
            j->opt.spec = RedisModule_StringPtrLen(j->argv[i], NULL);

    j->started_ms = budget_now_ms();
    pagemap_init(&j->pending.map);
    return j;
}

/* ---- on a worker ----------------------------------------------------------- */

/* Replaces the job's snapshot with one of the hash as it is now. Holds
 * Redis's lock unless the caller does. 0, or -1 with j->err set. */
static int retake_snapshot(job *j, RedisModuleCtx *tsctx, int gil_held) {
    if (!gil_held) worker_gil_lock(tsctx);
    snapshot_drop(j->snap);
    j->snap = NULL;
    RedisModule_SelectDb(tsctx, j->dbid);
    RedisModuleKey *key = RedisModule_OpenKey(tsctx, j->keyname, REDISMODULE_READ | REDISMODULE_OPEN_KEY_NOTOUCH);
    int type = RedisModule_KeyType(key);
    kvsql_store *ks = keyspace_store_new();
    int rc = -1;
    if (type == REDISMODULE_KEYTYPE_EMPTY) {
        snprintf(j->err, sizeof(j->err), "%s", GONE_ERROR);
    } else if (type != REDISMODULE_KEYTYPE_HASH) {
        snprintf(j->err, sizeof(j->err), "%s", REDISMODULE_ERRORMSG_WRONGTYPE);
    } else if (!ks) {
        snprintf(j->err, sizeof(j->err), "SQLITE_NOMEM kvsql: out of memory");
    } else {
        keyspace_store_attach(ks, tsctx, key, j->keyname, 1);
        if (keyspace_store_check(ks) != 0)
            snprintf(j->err, sizeof(j->err), "SQLITE_NOTADB %s", kvsql_store_errmsg(ks));
        else if (!(j->snap = snapshot_take(j->dbid, j->keyname, keyspace_store_npages(ks),
                                           (uint32_t)keyspace_store_page_size(ks), !j->readonly)))
            snprintf(j->err, sizeof(j->err), "SQLITE_NOMEM kvsql: out of memory");
        else rc = 0;
        keyspace_store_detach(ks);
    }
    if (ks) kvsql_store_free(ks);
    if (key) RedisModule_CloseKey(key);
    if (!gil_held) worker_gil_unlock(tsctx);
    return rc;
}

/* The pending pages as strings, made here on the worker: copying tens of
 * megabytes is what a big write would otherwise cost the main thread. */
static void make_values(job *j) {
    j->values = RedisModule_Alloc(sizeof(*j->values) * (j->pending.map.cap + 1));
    for (size_t i = 0; i < j->pending.map.cap; i++) {
        const pagemap_slot *sl = &j->pending.map.slots[i];
        j->values[i] = sl->page ? RedisModule_CreateString(NULL, sl->page, j->pending.page_size) : NULL;
    }
}

/* One run of the SQL on the job's snapshot. Returns the snapshot's state
 * as the run last saw it (SNAPSHOT_OK when the run never met a change). */
static int run_once(job *j, RedisModuleCtx *tsctx, int gil_held) {
    kvsql_store *st = snapshot_store_new(j->snap, tsctx, gil_held, !j->readonly);
    conn *c = st ? cache_open_private(st, j->err, sizeof(j->err)) : NULL;
    if (!c) { /* opening reads the schema: the snapshot may break then too */
        int state = st ? snapshot_store_state(st) : SNAPSHOT_OK;
        if (!st) snprintf(j->err, sizeof(j->err), "SQLITE_NOMEM kvsql: out of memory");
        if (st) kvsql_store_free(st);
        j->ok = 0;
        return state;
    }
    call k;
    memset(&k, 0, sizeof(k));
    k.c = c;
    k.rows = &j->rows;
    k.args = j->args;
    k.nraw = j->nraw;
    k.nargs = j->nargs;
    k.readonly = j->readonly;
    k.opt = j->opt;
    k.killed = &j->task.killed;
    k.started_ms = j->started_ms;
    unsigned char used[256];
    if (k.opt.named && k.nargs) k.used = k.nargs <= (int)sizeof(used) ? used : RedisModule_Alloc((size_t)k.nargs);
    if (k.used) memset(k.used, 0, (size_t)k.nargs);
    size_t len;
    const char *text = RedisModule_StringPtrLen(j->sql, &len);
    result_reset(&j->rows);
    if (j->captures) changes_capture_begin(j->keyname, c->db, &c->g); /* its entries: this thread's */
    j->ok = call_run(&k, text, len);
    changes_capture_detach(); /* the connection closes below; the entries stay for the write */
    int state = snapshot_store_state(st);
    if (j->ok && !j->readonly && snapshot_store_take_pending(st, &j->pending)) make_values(j);
    j->has_rows = k.has_rows;
    j->changes = k.changes;
    if (c->has_temp) j->run_here = 1; /* TEMP objects made here would be lost with this connection */
    memcpy(j->err, k.err, sizeof(j->err));
    if (k.used && k.used != used) RedisModule_Free(k.used);
    cache_close_private(c);
    kvsql_store_free(st);
    return state;
}

/* A big write: its new hash built in the staging key, in steps. */
static void stage_job(job *j, RedisModuleCtx *tsctx) {
    stage_write *w = &j->stage;
    w->dbid = j->dbid;
    w->keyname = j->keyname;
    w->snap = j->snap;
    w->pages = &j->pending;
    w->values = j->values;
    w->killed = &j->task.killed;
    w->started_ms = j->started_ms;
    w->replica_waits = &stats.staged_waits;
    w->pause_waits = &stats.pause_waits;
    w->captures = j->captures;
    int rc = stage_build(w, tsctx, j->err, sizeof(j->err));
    if (rc == STAGE_CONFLICT) COUNT(conflicts);
    if (rc != 0) j->ok = 0;
}

/* ---- on the worker, holding Redis's lock: the write ------------------------ */

/* Whether the database is still as the job's snapshot saw it; else sets
 * the error. */
static int unchanged(RedisModuleCtx *ctx, job *j) {
    if (snapshot_state(j->snap) != SNAPSHOT_OK || snapshot_overwritten(j->snap)) {
        COUNT(conflicts);
        snprintf(j->err, sizeof(j->err), "%s", STAGE_CONFLICT_ERROR);
        return 0;
    }
    /* Capture turned on or off meanwhile: the entries would not match it. */
    return changes_land_begin(ctx, j->keyname, j->err, sizeof(j->err)) == 0;
}

/* Swaps in a staged write's new hash (stage.h). Returns non-zero when
 * published; else the staging key is gone. */
static int publish_job(RedisModuleCtx *ctx, job *j) {
    int ok = unchanged(ctx, j) && stage_publish(ctx, &j->stage, j->err, sizeof(j->err)) == 0;
    stage_abandon_locked(ctx, &j->stage);
    snapshot_drop(j->snap);
    j->snap = j->stage.snap = NULL;
    size_t len;
    const char *name = RedisModule_StringPtrLen(j->keyname, &len);
    if (ok) {
        COUNT(staged);
        cache_key_changed(j->dbid, name, len);
    }
    return ok;
}

/* Writes a writing job's pages to the hash, as the end of a call on the
 * main thread does. Returns non-zero when written. */
static int write_job(RedisModuleCtx *ctx, job *j) {
    if (!unchanged(ctx, j)) return 0;
    snapshot_drop(j->snap); /* its pages need not be kept through our own write */
    j->snap = NULL;
    RedisModuleKey *key = RedisModule_OpenKey(ctx, j->keyname, REDISMODULE_READ | REDISMODULE_WRITE);
    kvsql_store *ks = keyspace_store_new();
    int ok = 0;
    if (!ks) {
        snprintf(j->err, sizeof(j->err), "SQLITE_NOMEM kvsql: out of memory");
    } else {
        keyspace_store_attach(ks, ctx, key, j->keyname, 0);
        if (keyspace_store_check(ks) != 0) {
            snprintf(j->err, sizeof(j->err), "SQLITE_NOTADB %s", kvsql_store_errmsg(ks));
        } else {
            keyspace_store_adopt(ks, &j->pending, j->values);
            j->values = NULL; /* the store's now */
            ok = keyspace_store_flush(ks, j->err, sizeof(j->err)) == 0;
            if (!ok) keyspace_store_discard(ks);
        }
        keyspace_store_detach(ks);
        kvsql_store_free(ks);
    }
    if (key) RedisModule_CloseKey(key);
    size_t len;
    const char *name = RedisModule_StringPtrLen(j->keyname, &len);
    if (ok) cache_key_changed(j->dbid, name, len); /* the cached connection has not seen this write */
    return ok;
}

/* Why a job waiting for writes to resume must stop: its client left,
 * SQL.KILL or shutdown, its time limit. Sets j->err; 0 when it may wait on. */
static int must_stop_waiting(job *j) {
    if (j->gone) {
        snprintf(j->err, sizeof(j->err), "ERR kvsql: the client disconnected: nothing was written");
        return 1;
    }
    long long limit = budget_timeout_ms;
    int stop = j->task.killed ? STOP_KILL
               : limit > 0 && budget_now_ms() - j->started_ms > limit ? STOP_TIME
                                                                       : RUNS;
    if (stop == RUNS) return 0;
    char words[160];
    snprintf(j->err, sizeof(j->err), "SQLITE_INTERRUPT %s", budget_stop_words(stop, limit, words, sizeof(words)));
    return 1;
}

static void sleep_1ms(void) {
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
}

/* Takes Redis's lock at a moment when Redis does not pause writes, the
 * job's db selected, waiting outside the lock meanwhile. Returns 1 so
 * (the caller may write and propagate until it lets the lock go), or 0,
 * holding the lock too, when the job must stop (j->err says why). */
static int lock_unpaused(job *j, RedisModuleCtx *tsctx) {
    for (;;) {
        worker_gil_lock(tsctx);
        RedisModule_SelectDb(tsctx, j->dbid);
        if (must_stop_waiting(j)) return 0;
        if (!RedisModule_AvoidReplicaTraffic()) return 1;
        worker_gil_unlock(tsctx);
        __atomic_fetch_add(&stats.pause_waits, 1, __ATOMIC_RELAXED);
        sleep_1ms();
    }
}

/* A writing job's pages into the hash: written in one step or the staged
 * hash published, never while Redis pauses writes. */
static void land_write(job *j, RedisModuleCtx *tsctx) {
    if (lock_unpaused(j, tsctx)) {
        j->ok = j->stage.built ? publish_job(tsctx, j) : write_job(tsctx, j);
    } else {
        j->ok = 0;
        stage_abandon_locked(tsctx, &j->stage); /* unless writes are paused: then its TTL */
    }
    worker_gil_unlock(tsctx); /* what the write propagated is sent here */
}

static void run_job(job *j, RedisModuleCtx *tsctx);

static void job_run(worker_task *t, RedisModuleCtx *tsctx) {
    run_job((job *)t, tsctx);
    changes_call_end(); /* the entries of a captured write: written with it or not at all */
}

/* Runs the job's SQL, on a new snapshot while the database changes under
 * it, then lands a write (staged first when big). */
static void run_job(job *j, RedisModuleCtx *tsctx) {
    worker_task *t = &j->task;
    for (int attempt = 0;; attempt++) {
        int hold = attempt >= SNAPSHOT_TRIES; /* the last resort: Redis waits, as on the main thread */
        if (hold) worker_gil_lock(tsctx);
        int rc = attempt == 0 && !hold ? 0 : retake_snapshot(j, tsctx, hold);
        int state = rc == 0 ? run_once(j, tsctx, hold) : SNAPSHOT_OK;
        if (hold) worker_gil_unlock(tsctx);
        if (rc != 0) j->ok = 0;
        if (hold) j->locked = 1;
        if (state == SNAPSHOT_GONE) {
            j->ok = 0;
            snprintf(j->err, sizeof(j->err), "%s", GONE_ERROR);
        }
        if (state != SNAPSHOT_CHANGED || t->killed || j->run_here) break;
        j->restarts++;
    }
    if (j->run_here && !j->readonly) { /* it writes on the main thread: best not during a pause */
        if (!lock_unpaused(j, tsctx)) j->run_here = 0, j->ok = 0;
        worker_gil_unlock(tsctx);
        return;
    }
    if (j->ok && j->pending.any && !j->run_here && j->may_stage && stage_wanted(&j->pending, snapshot_npages(j->snap)))
        stage_job(j, tsctx);
    if (j->ok && j->pending.any && !j->run_here) land_write(j, tsctx);
}

/* The job is done: its client's reply callback takes it (job_reply). */
static void job_done(worker_task *t) {
    job *j = (job *)t;
    RedisModule_UnblockClient(j->bc, j);
}

/* ---- back on the main thread: the reply ---------------------------------- */

static int job_reply(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    (void)argv;
    (void)argc;
    job *j = RedisModule_GetBlockedClientPrivateData(ctx);
    if (j->run_here) {
        snapshot_drop(j->snap); /* or the call would find its own writer in the way */
        j->snap = NULL;
        if (!j->readonly && RedisModule_AvoidReplicaTraffic()) /* a pause began since the worker checked */
            return call_reply_error(ctx, PAUSED_ERROR);
        COUNT(run_here);
        call_rerun(ctx, j->keyname, j->argv, j->argc, j->readonly, STAY_TEMP);
        return REDISMODULE_OK;
    }
    if (j->restarts) __atomic_fetch_add(&stats.restarts, j->restarts, __ATOMIC_RELAXED);
    if (j->locked) COUNT(locked_runs);
    if (!j->ok) return call_reply_error(ctx, j->err);
    call_reply_result(ctx, &j->rows, j->has_rows, j->changes, j->opt.format);
    return REDISMODULE_OK;
}

int offload_call(call *k, RedisModuleString *keyname, uint32_t npages, uint32_t page_size) {
    job *j = job_new(k, keyname);
    j->captures = !k->readonly && changes_on(k->ctx, keyname);
    j->task.run = job_run;
    j->task.done = job_done;
    j->may_stage = !k->readonly && acl_may_stage(k->ctx, keyname);
    j->snap = snapshot_take(j->dbid, keyname, npages, page_size, !k->readonly);
    j->bc = j->snap ? RedisModule_BlockClient(k->ctx, job_reply, NULL, job_free, 0) : NULL;
    if (!j->bc) {
        job_free(NULL, j);
        return 0;
    }
    j->next_live = live_jobs;
    live_jobs = j;
    RedisModule_SetDisconnectCallback(j->bc, on_disconnect);
    COUNT(calls);
    if (workers_submit(k->ctx, &j->task) != 0) {
        snprintf(j->err, sizeof(j->err), "ERR kvsql: no worker thread could be started for a long call");
        RedisModule_UnblockClient(j->bc, j);
    }
    return 1;
}
