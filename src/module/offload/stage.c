/* stage.c - a big offloaded write built in a staging key, in steps, and
 * published by RENAME; see stage.h. offload.c calls it: stage_build on
 * the worker once the SQL ran, stage_publish in the blocked client's reply
 * callback, stage_abandon when the write is not published.
 *
 * Each step holds Redis's lock for STAGE_STEP_PAGES page copies: first the
 * pages the call wrote, then the pages of the live hash it left as they
 * were (below the new length). The live hash is the snapshot's as long as
 * the snapshot is unchanged, which every step checks first under the same
 * lock. Staging keys and their TTLs are propagated explicitly (a thread-safe
 * context's propagation is sent when the lock is let go, one MULTI/EXEC
 * per step), so replicas and the AOF build the same staging key. A step
 * waits while a replica's output buffer is too full for it (replicas.h),
 * and while Redis pauses writes (RedisModule_AvoidReplicaTraffic: Redis
 * 7.0 aborts when anything is propagated during CLIENT PAUSE WRITE,
 * FAILOVER or SHUTDOWN's wait for a replica); nothing here writes or
 * propagates during such a pause. */
#include "module/offload/stage.h"

#include "module/connections/budget.h"
#include "module/store/changes.h"
#include "format.h"
#include "module/store/protocol.h"
#include "module/store/replicas.h"
#include "module/store/slot_keys.h"
#include "module/offload/worker.h"
#include "module/settings.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Test-only: milliseconds the worker waits after each step (the last one
 * too, before the publish), so that a test can act while a write is staged
 * (tests/test_offload_stage.py, test_offload_pause.py). */
#define PAUSE_ENV "KVSQL_TEST_STAGE_PAUSE_MS"

int stage_wanted(const pending_pages *pages, uint32_t old_npages) {
    if (!pages->any || (unsigned long long)pages->map.count * pages->page_size <= STAGE_MIN_BYTES) return 0;
    uint32_t below = old_npages < pages->npages ? old_npages : pages->npages;
    size_t written_below = 0;
    for (size_t i = 0; i < pages->map.cap; i++)
        if (pages->map.slots[i].page && pages->map.slots[i].index < below) written_below++;
    size_t kept = below - written_below; /* pages the staging key would copy from the hash */
    return kept <= (size_t)STAGE_MAX_KEPT_RATIO * pages->map.count;
}

/* ---- small helpers --------------------------------------------------------- */

static RedisModuleString *stage_name(RedisModuleString *keyname) {
    return aux_key_name(NULL, keyname, KVSQL_AUX_WSTAGE);
}

/* RedisModule_Call that is not propagated; 0 when it answered no error. */
static int call_quiet(RedisModuleCtx *ctx, const char *cmd, const char *fmt, RedisModuleString *a,
                      RedisModuleString *b) {
    RedisModuleCallReply *r = b ? RedisModule_Call(ctx, cmd, fmt, a, b) : RedisModule_Call(ctx, cmd, fmt, a);
    int ok = r && RedisModule_CallReplyType(r) != REDISMODULE_REPLY_ERROR;
    if (r) RedisModule_FreeCallReply(r);
    return ok ? 0 : -1;
}

/* UNLINK of the staging key, propagated when there was one (ctx holds
 * Redis's lock). Not while Redis pauses writes (CLIENT PAUSE WRITE,
 * FAILOVER, SHUTDOWN waiting for a replica), when nothing may be
 * propagated: the key then lapses by its TTL, or the next staged write of
 * the database unlinks it first. */
static void unlink_stage(RedisModuleCtx *ctx, RedisModuleString *name) {
    if (RedisModule_AvoidReplicaTraffic()) return;
    RedisModuleCallReply *r = RedisModule_Call(ctx, "UNLINK", "s", name);
    int removed = r && RedisModule_CallReplyType(r) == REDISMODULE_REPLY_INTEGER &&
                  RedisModule_CallReplyInteger(r) > 0;
    if (r) RedisModule_FreeCallReply(r);
    if (removed) RedisModule_Replicate(ctx, "UNLINK", "s", name);
}

static void free_strings(RedisModuleString **v, size_t n) {
    for (size_t i = 0; i < n; i++) RedisModule_FreeString(NULL, v[i]);
}

static void pause_ms(long long ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static long long test_pause(void) {
    const char *v = getenv(PAUSE_ENV);
    long long ms = v ? atoll(v) : 0;
    return ms > 0 && ms < 10000 ? ms : 0;
}

/* ---- on the worker: the steps ---------------------------------------------- */

/* Why the write must stop now, as an error reply text in err; 0 when it
 * may go on (ctx holds Redis's lock). Returns -1, or STAGE_CONFLICT. */
static int must_stop(stage_write *w, RedisModuleCtx *ctx, const aux_keys *a, char *err, size_t errlen) {
    long long limit = budget_timeout_ms;
    int stop = *w->killed ? STOP_KILL : limit > 0 && budget_now_ms() - w->started_ms > limit ? STOP_TIME : RUNS;
    if (stop != RUNS) {
        char words[160];
        snprintf(err, errlen, "SQLITE_INTERRUPT %s", budget_stop_words(stop, limit, words, sizeof(words)));
        return -1;
    }
    if (snapshot_state(w->snap) != SNAPSHOT_OK || snapshot_overwritten(w->snap)) {
        snprintf(err, errlen, "%s", STAGE_CONFLICT_ERROR);
        return STAGE_CONFLICT;
    }
    if (protocol_lease_held(ctx, a)) {
        snprintf(err, errlen, "SQLITE_BUSY database is locked: a library client holds the write lease (retry)");
        return STAGE_CONFLICT;
    }
    if (changes_on(ctx, w->keyname) != w->captures) {
        snprintf(err, errlen, "%s", STAGE_CAPTURE_ERROR);
        return STAGE_CONFLICT;
    }
    return slot_keys_writable(ctx, w->keyname, err, errlen); /* a cluster slot half moved: TRYAGAIN */
}

/* Where the steps are: the slot of the written pages next to stage, then
 * the index of the next page to copy from the live hash. */
typedef struct cursor {
    size_t slot;
    uint32_t index;
} cursor;

/* Sets field `index` of the staging key to v and keeps both for HSET's
 * propagation in argv (which owns them from now). */
static void stage_page(RedisModuleKey *stage, uint32_t index, RedisModuleString *v, RedisModuleString **argv,
                       size_t *n) {
    char field[KVSQL_FIELD_MAX];
    RedisModuleString *f = RedisModule_CreateString(NULL, field, kvsql_field_name(field, index));
    RedisModule_HashSet(stage, REDISMODULE_HASH_NONE, f, v, NULL);
    argv[(*n)++] = f;
    argv[(*n)++] = v;
}

/* Up to STAGE_STEP_PAGES of the pages the call wrote, into argv. */
static void stage_written(stage_write *w, RedisModuleKey *stage, cursor *cur, RedisModuleString **argv, size_t *n) {
    const pagemap *m = &w->pages->map;
    while (*n < 2 * STAGE_STEP_PAGES && cur->slot < m->cap) {
        size_t i = cur->slot++;
        if (!m->slots[i].page) continue;
        RedisModuleString *v = w->values ? w->values[i] : NULL;
        if (w->values) w->values[i] = NULL; /* argv's now */
        if (!v) v = RedisModule_CreateString(NULL, m->slots[i].page, w->pages->page_size);
        stage_page(stage, m->slots[i].index, v, argv, n);
    }
}

/* Then up to as many pages the call left as they were, copied from the
 * live hash (the snapshot's: checked unchanged). Returns 0, or -1 with
 * err set when a page is missing, or STAGE_CONFLICT when the key went
 * away or changed (opening it may expire it). */
static int stage_kept(stage_write *w, RedisModuleCtx *ctx, RedisModuleKey *stage, cursor *cur, RedisModuleString **argv,
                      size_t *n, char *err, size_t errlen) {
    if (*n >= 2 * STAGE_STEP_PAGES || cur->index >= w->pages->npages) return 0;
    RedisModuleKey *live = RedisModule_OpenKey(ctx, w->keyname, REDISMODULE_READ | REDISMODULE_OPEN_KEY_NOTOUCH);
    int hash = live && RedisModule_KeyType(live) == REDISMODULE_KEYTYPE_HASH;
    uint32_t lb = kvsql_lock_byte_index(w->pages->page_size);
    int rc = 0;
    while (*n < 2 * STAGE_STEP_PAGES && cur->index < w->pages->npages) {
        uint32_t i = cur->index++;
        if (pagemap_get(&w->pages->map, i)) continue;
        char field[KVSQL_FIELD_MAX];
        RedisModuleString *v = NULL;
        kvsql_field_name(field, i);
        if (hash) RedisModule_HashGet(live, REDISMODULE_HASH_CFIELDS, field, &v, NULL);
        if (!v && i == lb) { /* the lock-byte page an older module left out: zeros */
            char *zeros = calloc(1, w->pages->page_size);
            if (zeros) v = RedisModule_CreateString(NULL, zeros, w->pages->page_size);
            free(zeros);
        }
        if (!v && (!hash || snapshot_state(w->snap) != SNAPSHOT_OK)) { /* gone or changed: opening expired it */
            snprintf(err, errlen, "%s", hash ? STAGE_CONFLICT_ERROR : STAGE_GONE_ERROR);
            rc = STAGE_CONFLICT;
            break;
        }
        if (!v) {
            snprintf(err, errlen, "SQLITE_CORRUPT kvsql: field %u of the hash (a page) is missing: nothing was written",
                     (unsigned)i);
            rc = -1;
            break;
        }
        stage_page(stage, i, v, argv, n);
    }
    if (live) RedisModule_CloseKey(live);
    return rc;
}

/* One step, holding Redis's lock, once must_stop() let it go on. Returns
 * 0, -1 or STAGE_CONFLICT with err set; *done when every page is staged. */
static int step(stage_write *w, RedisModuleCtx *ctx, RedisModuleString *name, cursor *cur, int *done, char *err,
                size_t errlen) {
    if (!w->dirty) { /* the first step: a staging key a crash left goes */
        unlink_stage(ctx, name);
        w->dirty = 1;
    }
    RedisModuleKey *stage = RedisModule_OpenKey(ctx, name, REDISMODULE_READ | REDISMODULE_WRITE);
    int type = stage ? RedisModule_KeyType(stage) : REDISMODULE_KEYTYPE_EMPTY;
    int first = cur->slot == 0 && cur->index == 0;
    int usable = type == REDISMODULE_KEYTYPE_HASH || (first && type == REDISMODULE_KEYTYPE_EMPTY);
    if (!stage || !usable) {
        if (stage) RedisModule_CloseKey(stage);
        snprintf(err, errlen, "SQLITE_BUSY kvsql: the staging key of a big write was removed or replaced while the "
                              "write was staged: nothing was written (retry)");
        return STAGE_CONFLICT;
    }
    RedisModuleString **argv = RedisModule_Alloc(sizeof(*argv) * 2 * STAGE_STEP_PAGES);
    size_t n = 0;
    stage_written(w, stage, cur, argv, &n);
    int rc = stage_kept(w, ctx, stage, cur, argv, &n, err, errlen);
    RedisModule_CloseKey(stage);
    if (n) {
        RedisModule_Replicate(ctx, "HSET", "sv", name, argv, n);
        RedisModuleCallReply *r = RedisModule_Call(ctx, "PEXPIRE", "sl", name, (long long)STAGE_TTL_MS);
        if (r) RedisModule_FreeCallReply(r);
        RedisModule_Replicate(ctx, "PEXPIRE", "sl", name, (long long)STAGE_TTL_MS);
    }
    free_strings(argv, n); /* the propagation keeps its own references */
    RedisModule_Free(argv);
    *done = rc == 0 && cur->slot >= w->pages->map.cap && cur->index >= w->pages->npages;
    return rc;
}

/* ---- on the worker: pacing by the replicas -------------------------------- */

/* A replica's output buffer below this counts as drained (CLIENT LIST's
 * omem counts the whole 16 KiB block a replica is reading). */
#define DRAINED_BYTES (64 * 1024)

/* The most a replica's output buffer may hold after a step: half of
 * client-output-buffer-limit's replica hard limit, and of its soft limit
 * when that is set and lower; 0 when there is no limit. */
static long long buffer_ceiling(RedisModuleCtx *ctx) {
    long long hard, soft;
    replicas_buffer_limits(ctx, &hard, &soft);
    long long limit = soft > 0 && (hard <= 0 || soft < hard) ? soft : hard;
    return limit > 0 ? limit / 2 : 0;
}

/* Whether the replicas can take one more step now (ctx holds the lock):
 * the fullest output buffer plus the step stays under the ceiling, or the
 * buffer is drained (a step bigger than the ceiling then goes alone). So a
 * replica that reads slower than the worker stages delays the write
 * instead of being dropped by Redis and resynced in full. */
static int replicas_have_room(RedisModuleCtx *ctx, long long ceiling, const stage_write *w) {
    if (ceiling <= 0) return 1;
    long long step_bytes = (long long)STAGE_STEP_PAGES * (w->pages->page_size + 40);
    long long fullest = replicas_fullest_buffer(ctx);
    return fullest < DRAINED_BYTES || fullest + step_bytes <= ceiling;
}

/* The page indexes of the live hash the write overwrites or cuts off (for
 * undo records and the changelog), n of them. Free it. */
static uint32_t *overwritten_pages(stage_write *w, uint32_t old_npages, size_t *n) {
    const pagemap *m = &w->pages->map;
    size_t cut = old_npages > w->pages->npages ? old_npages - w->pages->npages : 0;
    uint32_t *idx = RedisModule_Alloc(sizeof(*idx) * (m->count + cut + 1));
    *n = 0;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].page && m->slots[i].index < old_npages) idx[(*n)++] = m->slots[i].index;
    for (uint32_t i = w->pages->npages; i < old_npages; i++) idx[(*n)++] = i;
    return idx;
}

int stage_build(stage_write *w, RedisModuleCtx *tsctx, char *err, size_t errlen) {
    aux_keys a;
    memset(&a, 0, sizeof(a));
    aux_keys_make(w->keyname, &a);
    RedisModuleString *name = stage_name(w->keyname);
    long long pause = test_pause();
    cursor cur = {0, 0};
    int rc = 0, done = 0;
    long long ceiling = -1;
    while (rc == 0 && !done) {
        worker_gil_lock(tsctx);
        RedisModule_SelectDb(tsctx, w->dbid);
        if (ceiling < 0) ceiling = buffer_ceiling(tsctx);
        rc = must_stop(w, tsctx, &a, err, errlen); /* also while it waits for the replicas or a pause */
        int paused = rc == 0 && RedisModule_AvoidReplicaTraffic(); /* a step propagates: not now */
        int room = rc == 0 && !paused && replicas_have_room(tsctx, ceiling, w);
        if (room) rc = step(w, tsctx, name, &cur, &done, err, errlen);
        if (rc != 0 && w->dirty) {
            unlink_stage(tsctx, name);
            w->dirty = 0;
        }
        worker_gil_unlock(tsctx);
        if (rc == 0 && paused) {
            if (w->pause_waits) __atomic_fetch_add(w->pause_waits, 1, __ATOMIC_RELAXED);
            pause_ms(1);
        } else if (rc == 0 && !room) {
            if (w->replica_waits) __atomic_fetch_add(w->replica_waits, 1, __ATOMIC_RELAXED);
            pause_ms(1); /* Redis's event loop sends the buffers meanwhile */
        } else if (rc == 0 && pause) { /* after the last step too: before the publish */
            pause_ms(pause);
        }
    }
    w->built = rc == 0;
    if (w->built) { /* what the publish needs of the pages; they are freed here, not on the main thread */
        w->overwritten = overwritten_pages(w, snapshot_npages(w->snap), &w->noverwritten);
        pagemap_clear(&w->pages->map);
    }
    RedisModule_FreeString(NULL, name);
    aux_keys_free(&a);
    return rc;
}

/* ---- on the main thread: publish or abandon ------------------------------ */

/* Whether the staging key holds the whole new hash (ctx: the key's db). */
static int stage_complete(RedisModuleCtx *ctx, stage_write *w, RedisModuleString *name) {
    RedisModuleKey *k = RedisModule_OpenKey(ctx, name, REDISMODULE_READ | REDISMODULE_OPEN_KEY_NOTOUCH);
    int ok = k && RedisModule_KeyType(k) == REDISMODULE_KEYTYPE_HASH &&
             RedisModule_ValueLength(k) == (size_t)w->pages->npages;
    if (k) RedisModule_CloseKey(k);
    return ok;
}

/* Undo records and changelog entry for library clients, INCR T:v: the
 * module's write protocol (protocol.h). Returns 0, or -1 with err set. */
static int record_write(RedisModuleCtx *ctx, stage_write *w, const aux_keys *a, char *err, size_t errlen) {
    RedisModuleKey *live = RedisModule_OpenKey(ctx, w->keyname, REDISMODULE_READ | REDISMODULE_WRITE);
    int rc = protocol_save_undo(ctx, a, live, w->overwritten, w->noverwritten, err, errlen);
    if (live) RedisModule_CloseKey(live);
    return rc == 0 ? protocol_bump_version(ctx, a, err, errlen) : rc;
}

/* K's expiry as a Unix time in ms, or -1 when it has none. */
static long long expire_at(RedisModuleCtx *ctx, RedisModuleString *keyname) {
    RedisModuleCallReply *r = RedisModule_Call(ctx, "PEXPIRETIME", "s", keyname);
    int integer = r && RedisModule_CallReplyType(r) == REDISMODULE_REPLY_INTEGER;
    long long at = integer ? RedisModule_CallReplyInteger(r) : -1;
    if (r) RedisModule_FreeCallReply(r);
    return at > 0 ? at : -1;
}

/* RENAME K T:stage:old, RENAME T:wstage K, PERSIST K (or K's expiry
 * back), UNLINK T:stage:old: done and propagated. Returns 0 or -1. */
static int swap_in(RedisModuleCtx *ctx, RedisModuleString *keyname, RedisModuleString *name, int had_key) {
    RedisModuleString *old = aux_key_name(NULL, keyname, KVSQL_AUX_STAGE_OLD);
    long long at = had_key ? expire_at(ctx, keyname) : -1;
    int rc = had_key ? call_quiet(ctx, "RENAME", "ss", keyname, old) : 0;
    if (rc == 0 && (rc = call_quiet(ctx, "RENAME", "ss", name, keyname)) != 0 && had_key)
        call_quiet(ctx, "RENAME", "ss", old, keyname); /* K back as it was: nothing was propagated yet */
    if (rc == 0) {
        if (had_key) RedisModule_Replicate(ctx, "RENAME", "ss", keyname, old);
        RedisModule_Replicate(ctx, "RENAME", "ss", name, keyname);
        RedisModuleCallReply *r = at > 0 ? RedisModule_Call(ctx, "PEXPIREAT", "sl", keyname, at)
                                         : RedisModule_Call(ctx, "PERSIST", "s", keyname);
        if (r) RedisModule_FreeCallReply(r);
        if (at > 0) RedisModule_Replicate(ctx, "PEXPIREAT", "sl", keyname, at);
        else RedisModule_Replicate(ctx, "PERSIST", "s", keyname);
        if (had_key) {
            call_quiet(ctx, "UNLINK", "s", old, NULL); /* the old hash is freed in the background */
            RedisModule_Replicate(ctx, "UNLINK", "s", old);
        }
    }
    RedisModule_FreeString(NULL, old);
    return rc;
}

/* The change entries of a captured write go to the replicas in the swap's
 * one MULTI/EXEC (its pages went in steps): refused, before anything is
 * written, when they would overflow a replica's output buffer, as a
 * one-step write is (store_keyspace.c). 0, or -1 with err set. */
static int entries_fit_replicas(RedisModuleCtx *ctx, char *err, size_t errlen) {
    size_t bytes = changes_bytes();
    long long hard, soft;
    if (bytes < 64 * 1024) return 0;
    replicas_buffer_limits(ctx, &hard, &soft);
    if (hard <= 0 || (long long)bytes <= hard || replicas_count(ctx) == 0) return 0;
    snprintf(err, errlen,
             "SQLITE_TOOBIG kvsql: the change entries of this write would send about %zu bytes to the replicas at "
             "once, more than client-output-buffer-limit allows a replica (hard limit %lld bytes): Redis would drop "
             "the replica and resync it in full. Nothing was written. Raise the limit (CONFIG SET "
             "client-output-buffer-limit \"replica <hard> <soft> <seconds>\") or change fewer rows per call",
             bytes, hard);
    return -1;
}

int stage_publish(RedisModuleCtx *ctx, stage_write *w, char *err, size_t errlen) {
    if (!w->built) {
        snprintf(err, errlen, "ERR kvsql: a staged write was published before it was staged (a bug)");
        return -1;
    }
    aux_keys a;
    memset(&a, 0, sizeof(a));
    aux_keys_make(w->keyname, &a);
    RedisModuleString *name = stage_name(w->keyname);
    RedisModuleKey *live = RedisModule_OpenKey(ctx, w->keyname, REDISMODULE_READ | REDISMODULE_OPEN_KEY_NOTOUCH);
    int had_key = live && RedisModule_KeyType(live) != REDISMODULE_KEYTYPE_EMPTY;
    if (live) RedisModule_CloseKey(live);
    int rc = -1;
    if (protocol_lease_held(ctx, &a))
        snprintf(err, errlen, "SQLITE_BUSY database is locked: a library client holds the write lease (retry)");
    else if (!stage_complete(ctx, w, name))
        snprintf(err, errlen, "SQLITE_BUSY kvsql: the staging key of a big write was removed or changed while the "
                              "write was staged: nothing was written (retry)");
    else if (changes_check_write(ctx, err, errlen) != 0 || entries_fit_replicas(ctx, err, errlen) != 0)
        ; /* the call's change entries cannot be written, or not to the replicas at once */
    else if (record_write(ctx, w, &a, err, errlen) == 0 && (rc = swap_in(ctx, w->keyname, name, had_key)) != 0)
        snprintf(err, errlen, "ERR kvsql: the staged pages of a big write could not be renamed to the database");
    if (rc == 0) {
        protocol_propagate_version(ctx, &a);
        changes_write(ctx, a.version); /* the row changes, in the same MULTI/EXEC */
        w->dirty = 0;
    }
    RedisModule_FreeString(NULL, name);
    aux_keys_free(&a);
    return rc;
}

void stage_free(stage_write *w) {
    if (w->overwritten) RedisModule_Free(w->overwritten);
    w->overwritten = NULL;
}

void stage_abandon_locked(RedisModuleCtx *ctx, stage_write *w) {
    if (!w->dirty) return;
    RedisModuleString *name = stage_name(w->keyname);
    unlink_stage(ctx, name);
    RedisModule_FreeString(NULL, name);
    w->dirty = 0;
}

void stage_abandon(RedisModuleCtx *ctx, stage_write *w) {
    if (!w->dirty || !ctx) return;
    /* The callback's context may have no client (it disconnected): one of
     * our own, on the main thread, which holds Redis's lock already. */
    RedisModuleCtx *own = RedisModule_GetDetachedThreadSafeContext(ctx);
    RedisModule_SelectDb(own, w->dbid);
    RedisModuleString *name = stage_name(w->keyname);
    unlink_stage(own, name);
    RedisModule_FreeString(NULL, name);
    RedisModule_FreeThreadSafeContext(own);
    w->dirty = 0;
}
