/* leasewait.c - a module write waits for the library writer's lease
 * (leasewait.h), blocking only its own client.
 *
 * A write call (SQL, SQL.EXEC) refused because a library client holds
 * T:lease wrote nothing. Rather than answer "database is locked" at once
 * (a library writer in a tight loop holds the lease almost always, so such
 * a caller could starve), its client is blocked and the call waits its
 * turn in T:queue, the queue the library's lock script honours
 * (docs/FORMAT.md, "Turns"): member "<arrival ms, 15 digits>:module-<n>",
 * scored by when it lapses. A timer looks every TICK_MS: when the lease is
 * free (or its owner's connection is gone, protocol_lease_held) and no
 * writer waited longer, the client is unblocked and its reply callback
 * runs the whole call again (call_rerun: on the main thread, never
 * moved to a worker), then leaves the queue; each look keeps its place
 * alive. Past kvsql.lease-wait-ms the call is refused as before. A client
 * that disconnects while it waits leaves the queue at the next look.
 * Inside MULTI or a script a client cannot block: refused at once. */
#include "module/commands/leasewait.h"

#include "format.h"
#include "module/connections/budget.h"
#include "module/commands/call.h"
#include "module/store/protocol.h"
#include "module/settings.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_MS 1


static leasewait_stats stats;

leasewait_stats leasewait_get_stats(void) {
    return stats;
}

typedef enum { WAITING, TURN, TIMED_OUT, GONE } wait_state;

typedef struct waiter {
    RedisModuleBlockedClient *bc;
    RedisModuleString *keyname, **argv;
    int argc, dbid;
    aux_keys aux;              /* only aux.lease: protocol_lease_held's */
    RedisModuleString *queue;  /* T:queue */
    char member[64];           /* ours in T:queue */
    long long started, deadline; /* ms */
    wait_state state;
    struct waiter *next;       /* the waiters whose timer still runs */
} waiter;

static waiter *waiting;

int leasewait_refused(const char *err) {
    return strcmp(err, PROTOCOL_LEASE_BUSY) == 0;
}

static RedisModuleString *copy_string(RedisModuleString *s) {
    size_t len;
    const char *p = RedisModule_StringPtrLen(s, &len);
    return RedisModule_CreateString(NULL, p, len);
}

static void waiter_free(RedisModuleCtx *ctx, void *data) {
    (void)ctx;
    waiter *w = data;
    RedisModule_FreeString(NULL, w->keyname);
    for (int i = 0; i < w->argc; i++) RedisModule_FreeString(NULL, w->argv[i]);
    RedisModule_Free(w->argv);
    RedisModule_FreeString(NULL, w->queue);
    aux_keys_free(&w->aux);
    RedisModule_Free(w);
}

static void unlink_waiter(waiter *w) {
    for (waiter **p = &waiting; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            return;
        }
}

/* ---- T:queue ------------------------------------------------------------- */

static void queue_leave(RedisModuleCtx *ctx, waiter *w) {
    RedisModuleCallReply *r = RedisModule_Call(ctx, "ZREM", "sc", w->queue, w->member);
    if (r) RedisModule_FreeCallReply(r);
}

/* Keeps our place for KVSQL_QUEUE_LAPSE_MS more (not propagated, as the
 * library's scripts write it with REPL_NONE). */
static void queue_stay(RedisModuleCtx *ctx, waiter *w, long long now) {
    RedisModuleCallReply *r =
        RedisModule_Call(ctx, "ZADD", "slc", w->queue, now + KVSQL_QUEUE_LAPSE_MS, w->member);
    if (r) RedisModule_FreeCallReply(r);
    r = RedisModule_Call(ctx, "PEXPIRE", "sl", w->queue, (long long)KVSQL_QUEUE_LAPSE_MS);
    if (r) RedisModule_FreeCallReply(r);
}

/* Drops lapsed waiters; 1 when no one left waited longer than we did. */
static int queue_turn(RedisModuleCtx *ctx, waiter *w, long long now) {
    char lapsed[32];
    snprintf(lapsed, sizeof(lapsed), "(%lld", now);
    RedisModuleCallReply *r = RedisModule_Call(ctx, "ZREMRANGEBYSCORE", "scc", w->queue, "-inf", lapsed);
    if (r) RedisModule_FreeCallReply(r);
    r = RedisModule_Call(ctx, "ZRANGE", "scc", w->queue, "0", "-1");
    if (!r || RedisModule_CallReplyType(r) != REDISMODULE_REPLY_ARRAY) {
        if (r) RedisModule_FreeCallReply(r);
        return 1; /* T:queue of another type: no turns to honour */
    }
    int turn = 1;
    size_t n = RedisModule_CallReplyLength(r), mlen = strlen(w->member);
    for (size_t i = 0; i < n && turn; i++) {
        size_t len;
        const char *m = RedisModule_CallReplyStringPtr(RedisModule_CallReplyArrayElement(r, i), &len);
        size_t k = len < mlen ? len : mlen;
        if (m && (memcmp(m, w->member, k) < 0 || (memcmp(m, w->member, k) == 0 && len < mlen))) turn = 0;
    }
    RedisModule_FreeCallReply(r);
    return turn;
}

/* ---- the wait ------------------------------------------------------------ */

static void look(RedisModuleCtx *ctx, void *data);

/* What the timer found: go on waiting, or unblock the client. */
static void decide(RedisModuleCtx *ctx, waiter *w) {
    long long now = RedisModule_Milliseconds();
    if (w->state == WAITING && !protocol_lease_held(ctx, &w->aux) && queue_turn(ctx, w, now)) w->state = TURN;
    else if (w->state == WAITING && now >= w->deadline) w->state = TIMED_OUT;
    if (w->state == WAITING) {
        queue_stay(ctx, w, now);
        RedisModule_CreateTimer(ctx, TICK_MS, look, w);
        return;
    }
    unlink_waiter(w);
    if (w->state == TURN) queue_stay(ctx, w, now); /* kept until the call ran: no one takes the lease meanwhile */
    else queue_leave(ctx, w);
    RedisModule_UnblockClient(w->bc, w);
}

static void look(RedisModuleCtx *ctx, void *data) {
    waiter *w = data;
    RedisModule_SelectDb(ctx, w->dbid);
    decide(ctx, w);
}

/* The client disconnected: its waiter leaves at the timer's next look. */
static void on_disconnect(RedisModuleCtx *ctx, RedisModuleBlockedClient *bc) {
    (void)ctx;
    for (waiter *w = waiting; w; w = w->next)
        if (w->bc == bc) w->state = GONE;
}

/* The client unblocked, on the main thread: runs the call again, or
 * replies the refusal. */
static int on_unblocked(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    (void)argv;
    (void)argc;
    waiter *w = RedisModule_GetBlockedClientPrivateData(ctx);
    if (w->state == TIMED_OUT) {
        char err[256];
        snprintf(err, sizeof(err), "%s; waited kvsql.lease-wait-ms (%lld ms)", PROTOCOL_LEASE_BUSY,
                 w->deadline - w->started);
        __atomic_fetch_add(&stats.timeouts, 1, __ATOMIC_RELAXED);
        return call_reply_error(ctx, err);
    }
    call_rerun(ctx, w->keyname, w->argv, w->argc, 0, STAY_LEASE);
    queue_leave(ctx, w);
    return REDISMODULE_OK;
}

int leasewait_start(RedisModuleCtx *ctx, RedisModuleString *keyname, RedisModuleString **argv, int argc) {
    const int cannot = REDISMODULE_CTX_FLAGS_LUA | REDISMODULE_CTX_FLAGS_MULTI | REDISMODULE_CTX_FLAGS_DENY_BLOCKING;
    if (leasewait_ms <= 0 || (RedisModule_GetContextFlags(ctx) & cannot)) return 0;
    static unsigned long long serial;
    waiter *w = RedisModule_Alloc(sizeof(*w));
    memset(w, 0, sizeof(*w));
    w->dbid = RedisModule_GetSelectedDb(ctx);
    w->keyname = copy_string(keyname);
    w->argc = argc;
    w->argv = RedisModule_Alloc(sizeof(*w->argv) * (size_t)(argc + 1));
    for (int i = 0; i < argc; i++) w->argv[i] = copy_string(argv[i]);
    w->queue = aux_key_name(NULL, keyname, KVSQL_AUX_QUEUE);
    w->aux.lease = aux_key_name(NULL, keyname, KVSQL_AUX_LEASE);
    w->started = RedisModule_Milliseconds();
    w->deadline = w->started + leasewait_ms;
    snprintf(w->member, sizeof(w->member), "%0*lld:module-%llu", KVSQL_QUEUE_ARRIVAL, w->started, ++serial);
    w->bc = RedisModule_BlockClient(ctx, on_unblocked, NULL, waiter_free, 0);
    if (!w->bc) {
        waiter_free(NULL, w);
        return 0;
    }
    RedisModule_SetDisconnectCallback(w->bc, on_disconnect);
    __atomic_fetch_add(&stats.waits, 1, __ATOMIC_RELAXED);
    w->next = waiting;
    waiting = w;
    queue_stay(ctx, w, w->started);
    RedisModule_CreateTimer(ctx, TICK_MS, look, w);
    return 1;
}
