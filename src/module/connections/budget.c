/* budget.c - the time and memory bounds of one call; see budget.h.
 * Used by exec.c (begin/end, SQL.KILL), guard.c (ticks while SQLite
 * prepares) and module.c (memory methods, configs). */
#include "module/connections/budget.h"

#include "pcache.h"
#include "module/settings.h"

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



/* Ticks between two reads of the precise clock that decides whether a
 * call moves to a worker thread (about a thousand virtual machine steps).
 * Between them the coarse clock, read at every tick anyway, decides. */
#define OFFLOAD_CHECK_TICKS 64
#define OFFLOAD_MARGIN_MS 16
/* A main-thread call that cannot move (budget_stay) stops with an error
 * once the coarse clock shows it has run offload-after-us plus this long:
 * with the clock's step and the unwinding, under the 50 ms the main
 * thread may be held past offload-after-us (docs/SECURITY.md). */
#define STAY_MARGIN_MS 30

/* Work that no progress tick sees: SQLite's functions build their result
 * in one step, and OP_Count reads a whole table in one. Every allocation
 * of at least this many bytes (the result of such a function, a value
 * read from overflow pages, a growing group_concat) is checked as a tick
 * is (a main-thread call that stays lets others in there too, as at a
 * tick: only SQL.KILL runs then); so is every PCACHE_CHECK_FETCHES'th page
 * fetch (pcache.c), and every CHECK_EVERY_ALLOCS'th allocation. A
 * check after at most BIG_BLOCK bytes or that many pages of work is a
 * few hundred microseconds apart at most. None happens on the hot path
 * (a point select makes no block this big and fetches a handful of
 * pages); counting costs it a few instructions. */
#define BIG_BLOCK (16 * 1024)

/* The call running on this thread. Redis runs one command at a time on its
 * main thread, and while a call yields only commands flagged allow-busy
 * (SQL.KILL) run; each worker thread (worker.c) runs one call at a time. */
static _Thread_local struct {
    int active;
    RedisModuleCtx *ctx; /* the command's context on the main thread, NULL on a worker */
    long long started_ms, next_yield_ms;
    long long timeout_ms, memory_kb; /* the configs when it started */
    int may_yield;                   /* not inside MULTI or a script; -1 until asked */
    long long offload_after_us;      /* run this long, it moves to a worker (0: never) */
    long long offload_at_us;         /* ... from this time on (0: not known yet) */
    long long last_tick_ms;          /* the coarse clock at the last tick */
    int slow_ticks;                  /* ticks in a row that came long after the one before */
    int ticks_each_step;             /* the progress handler runs at every step */
    int big_values;                  /* works on a value of BUDGET_BIG_VALUE bytes or more */
    int refused;                     /* SQLite was refused memory */
    int keep_connection;             /* budget_keep_connection() */
    int stays;                       /* why it cannot move (enum budget_stay), 0 while it may */
    int in_hook;                     /* inside SQLite's preupdate hook: budget_hook() */
    unsigned ticks;
    sqlite3 *db;                     /* told to stop (sqlite3_interrupt) by checks outside a tick */
    const volatile int *killed;      /* a worker's call: set by SQL.KILL from the main thread */
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

/* The coarse clock's step in milliseconds (at least 1), read once. */
static long long coarse_step_ms(void) {
    static long long step;
    if (!step) {
        struct timespec res;
        long long ms = clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0
                         ? (long long)res.tv_sec * 1000 + (res.tv_nsec + 999999) / 1000000
                         : 10;
        __atomic_store_n(&step, ms > 0 ? ms : 1, __ATOMIC_RELAXED);
    }
    return step;
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

/* Microseconds of the precise monotonic clock. */
static long long precise_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Whether a main-thread call that may move has run long enough to move.
 * Asked only then (off the hot path): never inside MULTI or a script,
 * which must stay atomic and synchronous, nor for a client that cannot
 * block; such a call is marked as one that stays (call.stays), and
 * past_stay_limit stops it a margin later. The precise clock is read
 * every OFFLOAD_CHECK_TICKS ticks, or at once when `now` (the coarse
 * clock) shows the call has surely run that long, or when `heavy` (a
 * check outside a tick, after much work). */
static int time_to_offload(long long now, int heavy) {
    if (!call.offload_after_us || call.stays) return 0;
    /* The coarse clock moves a call that has surely run long: by a margin
     * of OFFLOAD_MARGIN_MS, so that a short call that the system merely
     * descheduled for a few milliseconds does not move. */
    long long step = coarse_step_ms(), margin = OFFLOAD_MARGIN_MS > 2 * step ? OFFLOAD_MARGIN_MS : 2 * step;
    long long surely_ms = (call.offload_after_us + 999) / 1000 + margin;
    int late = call.big_values || now - call.started_ms >= surely_ms; /* big values: at once */
    if (++call.ticks % OFFLOAD_CHECK_TICKS && !late && !heavy) return 0;
    long long us = precise_us();
    if (!call.offload_at_us) /* the first look, a few microseconds in: short calls never read the clock */
        call.offload_at_us = us + call.offload_after_us;
    if (us < call.offload_at_us && !late) return 0;
    int flags = RedisModule_GetContextFlags(call.ctx);
    call.stays = flags & REDISMODULE_CTX_FLAGS_MULTI          ? STAY_MULTI
                 : flags & REDISMODULE_CTX_FLAGS_LUA          ? STAY_SCRIPT
                 : flags & REDISMODULE_CTX_FLAGS_DENY_BLOCKING ? STAY_CLIENT
                                                               : 0;
    return !call.stays;
}

/* Whether a main-thread call that cannot move has run as long as it may
 * (budget_stay): offload-after-us plus STAY_MARGIN_MS, by the coarse
 * clock. */
static int past_stay_limit(long long now) {
    if (!call.stays || !call.offload_after_us) return 0;
    return now - call.started_ms >= (call.offload_after_us + 999) / 1000 + STAY_MARGIN_MS;
}

/* Whether the running call must stop now: SQL.KILL, time to move, the
 * time limit (heavy: asked outside a tick). */
static void refuse_all_memory(void);

/* A call that stops to move while its connection must be kept (it holds
 * TEMP objects, which closing would lose) gets memory still: a connection
 * SQLite was refused memory in is closed (exec.c). It unwinds at SQLite's
 * next look at the interrupt instead. */
static int keeps_memory(void) {
    return call.keep_connection && (call.stop == STOP_OFFLOAD || call.stop == STOP_STAY);
}

static int must_stop(long long now, int heavy) {
    if (call.stop) return 1;
    if (call.killed && *call.killed) call.stop = STOP_KILL;
    else if (time_to_offload(now, heavy)) call.stop = STOP_OFFLOAD;
    else if (past_stay_limit(now)) call.stop = STOP_STAY;
    else if (call.timeout_ms > 0 && now - call.started_ms >= call.timeout_ms) call.stop = STOP_TIME;
    return call.stop != RUNS;
}

static int on_progress(void *arg);

/* On the main thread, steps that each take long (two steps of the coarse
 * clock or more between two ticks, twice in a row: not a thread that
 * was merely descheduled once) make SQLite tick at every step for the
 * rest of the call: then no more than one step's work passes unchecked.
 * A worker keeps its pace: a step or two past its time limit holds no
 * one else up. */
static void adapt_steps(long long now) {
    int slow = now - call.last_tick_ms >= 2 * coarse_step_ms();
    call.last_tick_ms = now;
    if (!call.ctx || !call.db || call.ticks_each_step) return;
    if (slow && call.slow_ticks++) {
        sqlite3_progress_handler(call.db, 1, on_progress, NULL);
        call.ticks_each_step = 1;
    } else if (!slow) {
        call.slow_ticks = 0;
    }
}

int budget_tick(void) {
    if (!call.active) return 0;
    long long now = coarse_ms();
    if (must_stop(now, 0)) return 1;
    adapt_steps(now);
    if (call.ctx && now >= call.next_yield_ms) {
        call.next_yield_ms = now + YIELD_EVERY_MS;
        let_others_in();
    }
    return call.stop != RUNS;
}

static int on_progress(void *arg) {
    (void)arg;
    return budget_tick();
}

/* A check outside a tick, after much work in one step: the call's
 * statement is interrupted (SQLite looks at that between pages of
 * OP_Count and at its next jump) when it must stop. A block of
 * BUDGET_BIG_VALUE bytes or more moves a main-thread call at once. */
static int check_heavy_work(size_t bytes) {
    if (!call.active) return 0;
    if (bytes >= BUDGET_BIG_VALUE) call.big_values = 1;
    long long now = coarse_ms();
    if (!must_stop(now, 1)) {
        if (call.ctx && now >= call.next_yield_ms) { /* a main-thread call that stays: -BUSY, SQL.KILL */
            call.next_yield_ms = now + YIELD_EVERY_MS;
            let_others_in(); /* as from the progress handler: only SQL.KILL runs, and it touches no SQLite */
        }
        return 0;
    }
    if (call.db) sqlite3_interrupt(call.db);
    if (keeps_memory()) return 0;
    refuse_all_memory(); /* stopped in the middle of a step: SQLite unwinds at its next allocation */
    return 1;
}

static void on_page_fetches(void) {
    check_heavy_work(0);
}

void budget_keep_connection(void) {
    if (call.active) call.keep_connection = 1;
}

void budget_big_values(void) {
    if (call.active) call.big_values = 1;
}

void budget_stay(int why) {
    if (call.active) call.stays = why;
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

/* Bytes SQLite holds, all threads together (INFO's sqlite_memory). */
static long long mem_used;
/* Per thread: bytes this thread's running call took, net of what it
 * freed (it may free older blocks, so it can go below zero), and the
 * most it may take (-1: no call, or no limit). */
static _Thread_local long long call_bytes;
static _Thread_local long long call_cap = -1;

static void count_bytes(long long n) {
    __atomic_fetch_add(&mem_used, n, __ATOMIC_RELAXED);
    call_bytes += n;
}

/* A call found stopped inside a step gets no more memory: SQLite gives
 * up what it was doing (preparing a statement runs no progress handler,
 * and an authorizer's refusal does not end it) and unwinds. A call
 * stopped at a tick unwinds by itself and keeps its memory (and so its
 * connection: exec.c closes one that SQLite was refused memory in). */
static void refuse_all_memory(void) {
    call_cap = 0;
}

static void *refuse_memory(void) {
    call.refused = 1;
    if (call.active && call.stop) return NULL; /* stopped for another reason: keep it */
    if (call.active && !call.stop) call.stop = STOP_MEMORY;
    return NULL;
}

/* Whether n more bytes would take this thread's call past its cap. A
 * block may be larger than asked (its usable size is counted), so the
 * count can pass the cap by a little. */
static int over_cap(size_t n) {
    return call_cap >= 0 && (n > (size_t)call_cap || call_bytes > call_cap - (long long)n);
}

/* About every this many allocations are checked as a tick is: preparing
 * a statement (views inside views) runs no progress handler and may make
 * millions of small blocks. One count for all threads, read and written
 * without a lock (a thread's allocations may go uncounted when another
 * counts at the same time; each thread meets the zero in proportion to
 * how much it allocates): a thread-local count costs the hot path a
 * __tls_get_addr per allocation in a module. */
#define CHECK_EVERY_ALLOCS 1024
static unsigned allocs_to_check = CHECK_EVERY_ALLOCS;

/* Whether an allocation of n bytes is the place to check the call. */
static int time_to_check(int n) {
    unsigned left = __atomic_load_n(&allocs_to_check, __ATOMIC_RELAXED) - 1;
    __atomic_store_n(&allocs_to_check, left ? left : CHECK_EVERY_ALLOCS, __ATOMIC_RELAXED);
    return !left || n >= BIG_BLOCK;
}

/* Whether an allocation of n more bytes is refused: past the call's cap,
 * or the call must stop. Never inside the preupdate hook (budget_hook):
 * SQLite's insert that called it does not survive an allocation refused
 * there; the next check after it stops the call. */
static int refused_now(size_t n, int asked) {
    if (call.in_hook) return 0;
    return over_cap(n) || (time_to_check(asked) && check_heavy_work((size_t)asked));
}

void budget_hook(int inside) {
    call.in_hook = inside;
}

static void *mem_malloc(int n) {
    if (refused_now((size_t)n, n)) return refuse_memory();
    void *p = BLOCK_ALLOC((size_t)n);
    if (p) count_bytes((long long)BLOCK_SIZE(p));
    return p;
}

static void mem_free(void *p) {
    if (!p) return;
    count_bytes(-(long long)BLOCK_SIZE(p));
    BLOCK_FREE(p);
}

static void *mem_realloc(void *p, int n) {
    size_t old = BLOCK_SIZE(p);
    if ((size_t)n > old && refused_now((size_t)n - old, n)) return refuse_memory();
    void *q = BLOCK_REALLOC(p, (size_t)n);
    if (q) count_bytes((long long)BLOCK_SIZE(q) - (long long)old);
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
    kvsql_pcache_on_fetches(on_page_fetches); /* SQLite starts: its page cache reports to us */
    return SQLITE_OK;
}

static void mem_shutdown(void *arg) {
    (void)arg;
}

const sqlite3_mem_methods budget_memory_methods = {
    mem_malloc, mem_free, mem_realloc, mem_size, mem_roundup, mem_init, mem_shutdown, NULL,
};

long long budget_memory_used(void) {
    return __atomic_load_n(&mem_used, __ATOMIC_RELAXED);
}

/* ---- a call ------------------------------------------------------------- */

static void begin_call(sqlite3 *db) {
    call.active = 1;
    call.started_ms = coarse_ms();
    call.next_yield_ms = call.started_ms + YIELD_EVERY_MS;
    call.timeout_ms = budget_timeout_ms;
    call.memory_kb = budget_call_memory_kb;
    call.may_yield = -1; /* not known yet */
    call.ticks = 0;
    call.last_tick_ms = call.started_ms;
    call.slow_ticks = call.ticks_each_step = 0;
    call.big_values = call.refused = call.keep_connection = call.stays = 0;
    call.db = db;
    call.stop = RUNS;
    call_bytes = 0;
    call_cap = call.memory_kb > 0 ? call.memory_kb * 1024 : -1;
    sqlite3_progress_handler(db, PROGRESS_STEPS, on_progress, NULL);
}

void budget_begin(RedisModuleCtx *ctx, sqlite3 *db, long long offload_after_us) {
    call.ctx = ctx;
    call.killed = NULL;
    call.offload_after_us = offload_after_us > 0 ? offload_after_us : 0;
    call.offload_at_us = 0;
    begin_call(db);
}

void budget_begin_worker(sqlite3 *db, const volatile int *killed, long long started_ms) {
    call.ctx = NULL;
    call.killed = killed;
    call.offload_after_us = 0;
    begin_call(db);
    call.started_ms = started_ms; /* the time limit counts from the command's start */
}

void budget_end(sqlite3 *db) {
    sqlite3_progress_handler(db, 0, NULL, NULL); /* nothing of the call runs after it */
    call_cap = -1;
    call.active = 0;
    call.ctx = NULL;
    call.db = NULL;
}

long long budget_now_ms(void) {
    return coarse_ms();
}

int budget_kill(void) {
    if (!call.active) return 0;
    if (!call.stop) call.stop = STOP_KILL;
    refuse_all_memory();
    return 1;
}

int budget_memory_refused(void) {
    return call.refused;
}

int budget_stop_kind(void) {
    return call.stop;
}

const char *budget_stop_words(int kind, long long limit, char *buf, size_t len) {
    switch (kind) {
    case STOP_KILL: return "SQL stopped by SQL.KILL: nothing was written";
    case STOP_TIME:
        snprintf(buf, len, "SQL stopped after %lld ms (kvsql.query-timeout-ms): nothing was written", limit);
        return buf;
    case STOP_MEMORY:
        snprintf(buf, len, "SQL needed more than %lld KiB of memory (kvsql.call-memory-kb): nothing was written",
                 limit);
        return buf;
    case STOP_OFFLOAD: return "SQL moved to a worker thread";
    default: return NULL;
    }
}

/* Why a call that cannot move was stopped, and what to do, into buf. */
static const char *stay_words(int why, long long limit_ms, char *buf, size_t len) {
    const char *where = why == STAY_MULTI    ? "inside MULTI/EXEC"
                        : why == STAY_SCRIPT ? "inside a Lua script or function"
                        : why == STAY_TEMP   ? "that makes or may use TEMP objects"
                        : why == STAY_LEASE  ? "run again after it waited for a library client's write lease"
                                             : "for a client that cannot be blocked";
    const char *todo = why == STAY_MULTI    ? "run it on its own, outside MULTI/EXEC"
                       : why == STAY_SCRIPT ? "run it on its own, not from a script"
                       : why == STAY_LEASE  ? "retry it: a call that does not wait may move"
                       : why == STAY_TEMP
                           ? "TEMP objects live only in the database's connection on Redis's main thread, so such "
                             "a call cannot move to a worker thread: drop the TEMP objects (DROP TABLE temp.name, "
                             "...) or keep that data in tables of the database"
                           : "run it from a client of its own";
    snprintf(buf, len,
             "SQL stopped after %lld ms on Redis's main thread: a long call %s cannot move to a worker thread "
             "(kvsql.offload-after-us plus %d ms is the most it may hold Redis): nothing was written; %s",
             limit_ms, where, STAY_MARGIN_MS, todo);
    return buf;
}

const char *budget_stop_reason(void) {
    static _Thread_local char msg[512];
    if (call.stop == STOP_STAY)
        return stay_words(call.stays, (call.offload_after_us + 999) / 1000 + STAY_MARGIN_MS, msg, sizeof(msg));
    return budget_stop_words(call.stop, call.stop == STOP_MEMORY ? call.memory_kb : call.timeout_ms, msg,
                             sizeof(msg));
}
