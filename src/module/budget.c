/* budget.c - the time and memory bounds of one call; see budget.h.
 * Used by exec.c (begin/end, SQL.KILL), guard.c (ticks while SQLite
 * prepares) and module.c (memory methods, configs). */
#include "budget.h"

#include <stdio.h>
#include <stdint.h>
#include <time.h>

#ifdef KVSQL_SANITIZE
#include <malloc.h>
#include <stdlib.h>
#endif

/* SQLite calls the progress handler every this many virtual machine steps.
 * Few, so that steps that each take long (a function on a value of
 * SQLITE_LIMIT_LENGTH bytes) are still checked often; a tick costs a call
 * and a coarse clock read. */
#define PROGRESS_STEPS 16

/* Least time between two calls to RedisModule_Yield. */
#define YIELD_EVERY_MS 5

long long budget_timeout_ms = 10000;
long long budget_call_memory_kb = 131072;


/* The call running now. Redis runs one command at a time, and while a call
 * yields only commands flagged allow-busy (SQL.KILL) run, so one is enough. */
static struct {
    RedisModuleCtx *ctx; /* NULL: no call runs */
    long long started_ms, next_yield_ms;
    long long timeout_ms, memory_kb; /* the configs when it started */
    int may_yield;                   /* not inside MULTI or a script; -1 until asked */
    enum budget_stop stop;
} call;

/* ---- time --------------------------------------------------------------- */

/* Milliseconds of a clock that is cheap to read (a few ns, no system
 * call) and precise to a few milliseconds, which is all a limit in
 * milliseconds needs. */
static long long coarse_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Lets Redis serve other clients: past busy-reply-threshold they get -BUSY,
 * as during a long Lua script, and SQL.KILL gets through. Not inside MULTI
 * or a script, whose atomicity Redis keeps without exceptions. */
static void let_others_in(void) {
    if (call.may_yield < 0) /* asked once per call, and only by calls that run this long */
        call.may_yield =
            !(RedisModule_GetContextFlags(call.ctx) & (REDISMODULE_CTX_FLAGS_LUA | REDISMODULE_CTX_FLAGS_MULTI));
    if (call.may_yield)
        RedisModule_Yield(call.ctx, REDISMODULE_YIELD_FLAG_CLIENTS, "kvsql is running SQL: SQL.KILL stops it");
}

int budget_tick(void) {
    if (!call.ctx) return 0;
    if (call.stop) return 1;
    long long now = coarse_ms();
    if (call.timeout_ms > 0 && now - call.started_ms >= call.timeout_ms) {
        call.stop = STOP_TIME;
        return 1;
    }
    if (now >= call.next_yield_ms) {
        call.next_yield_ms = now + YIELD_EVERY_MS;
        let_others_in();
    }
    return call.stop != RUNS;
}

static int on_progress(void *arg) {
    (void)arg;
    return budget_tick();
}

/* ---- memory ------------------------------------------------------------- */

#ifdef KVSQL_SANITIZE /* the sanitizer's malloc sees every block */
#define BLOCK_ALLOC(n) malloc(n)
#define BLOCK_REALLOC(p, n) realloc(p, n)
#define BLOCK_FREE(p) free(p)
#define BLOCK_SIZE(p) malloc_usable_size(p)
#else /* Redis's allocator: INFO memory and maxmemory count SQLite */
#define BLOCK_ALLOC(n) RedisModule_Alloc(n)
#define BLOCK_REALLOC(p, n) RedisModule_Realloc(p, n)
#define BLOCK_FREE(p) RedisModule_Free(p)
#define BLOCK_SIZE(p) RedisModule_MallocSize(p)
#endif

static size_t mem_used;           /* bytes SQLite holds */
static size_t mem_cap = SIZE_MAX; /* the most it may hold: set during a call */

static void *refuse_memory(void) {
    if (call.ctx && !call.stop) call.stop = STOP_MEMORY;
    return NULL;
}

/* Whether n more bytes would take SQLite past mem_cap. A block may be
 * larger than asked (its usable size is counted), so mem_used can pass
 * mem_cap by a little: compared first, never subtracted below zero. */
static int over_cap(size_t n) {
    return mem_used >= mem_cap || n > mem_cap - mem_used;
}

static void *mem_malloc(int n) {
    if (over_cap((size_t)n)) return refuse_memory();
    void *p = BLOCK_ALLOC((size_t)n);
    if (p) mem_used += BLOCK_SIZE(p);
    return p;
}

static void mem_free(void *p) {
    if (!p) return;
    mem_used -= BLOCK_SIZE(p);
    BLOCK_FREE(p);
}

static void *mem_realloc(void *p, int n) {
    size_t old = BLOCK_SIZE(p);
    if ((size_t)n > old && over_cap((size_t)n - old)) return refuse_memory();
    void *q = BLOCK_REALLOC(p, (size_t)n);
    if (q) mem_used = mem_used - old + BLOCK_SIZE(q);
    return q;
}

static int mem_size(void *p) {
    return (int)BLOCK_SIZE(p);
}

static int mem_roundup(int n) {
    return (n + 7) & ~7;
}

static int mem_init(void *arg) {
    (void)arg;
    return SQLITE_OK;
}

static void mem_shutdown(void *arg) {
    (void)arg;
}

const sqlite3_mem_methods budget_memory_methods = {
    mem_malloc, mem_free, mem_realloc, mem_size, mem_roundup, mem_init, mem_shutdown, NULL,
};

long long budget_memory_used(void) {
    return (long long)mem_used;
}

/* ---- a call ------------------------------------------------------------- */

void budget_begin(RedisModuleCtx *ctx, sqlite3 *db) {
    call.ctx = ctx;
    call.started_ms = coarse_ms();
    call.next_yield_ms = call.started_ms + YIELD_EVERY_MS;
    call.timeout_ms = budget_timeout_ms;
    call.memory_kb = budget_call_memory_kb;
    call.may_yield = -1; /* not known yet */
    call.stop = RUNS;
    if (call.memory_kb > 0) mem_cap = mem_used + (size_t)call.memory_kb * 1024;
    sqlite3_progress_handler(db, PROGRESS_STEPS, on_progress, NULL);
}

void budget_end(sqlite3 *db) {
    sqlite3_progress_handler(db, 0, NULL, NULL); /* nothing of the call runs after it */
    mem_cap = SIZE_MAX;
    call.ctx = NULL;
}

int budget_kill(void) {
    if (!call.ctx) return 0;
    if (!call.stop) call.stop = STOP_KILL;
    return 1;
}

int budget_stop_kind(void) {
    return call.stop;
}

const char *budget_stop_reason(void) {
    static char msg[160];
    switch (call.stop) {
    case STOP_KILL: return "SQL stopped by SQL.KILL: nothing was written";
    case STOP_TIME:
        snprintf(msg, sizeof(msg), "SQL stopped after %lld ms (kvsql.query-timeout-ms): nothing was written",
                 call.timeout_ms);
        return msg;
    case STOP_MEMORY:
        snprintf(msg, sizeof(msg),
                 "SQL needed more than %lld KiB of memory (kvsql.call-memory-kb): nothing was written",
                 call.memory_kb);
        return msg;
    default: return NULL;
    }
}
