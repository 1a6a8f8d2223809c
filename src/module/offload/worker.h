/* worker.h - the threads that run SQL beside Redis's event loop.
 *
 * exec.c hands a call that ran past kvsql.offload-after-us to a worker
 * (docs/COMMANDS.md, "Long calls"); the worker runs it on a snapshot
 * (snapshot.h) and wakes the blocked client, whose reply, and the write of
 * a writing call's pages, happen back on the main thread. The pool has
 * kvsql.worker-threads threads, started when first needed; module.c
 * registers the config and calls workers_shutdown() at shutdown. */
#ifndef KVSQL_WORKER_H
#define KVSQL_WORKER_H

#include "module/redis_api.h"

/* A unit of work; embed it first in your own struct. */
typedef struct worker_task {
    /* Runs on a worker thread, with that thread's detached thread-safe
     * context (take the GIL through worker_gil_lock to touch Redis). */
    void (*run)(struct worker_task *t, RedisModuleCtx *tsctx);
    /* Then, once the pool has let go of t: hands it back (t may be freed
     * from here on). */
    void (*done)(struct worker_task *t);
    volatile int killed; /* set by SQL.KILL and at shutdown: stop soon */
    struct worker_task *next;
} worker_task;

/* Main thread: queues t, starting threads if needed (ctx gives their
 * contexts). Returns 0, or -1 when there is no worker thread to run it. */
int workers_submit(RedisModuleCtx *ctx, worker_task *t);
/* Main thread: asks every queued and running task to stop (SQL.KILL).
 * Returns how many were asked. */
int workers_kill_all(void);
/* Main thread: kvsql.worker-threads changed (idle threads past it end). */
void workers_config_changed(void);
/* Main thread, at shutdown: stops every task and waits, a bounded time,
 * until no worker runs outside Redis's lock. */
void workers_shutdown(void);

/* On a worker: Redis's lock (the GIL), counted so that shutdown knows who
 * waits for it. */
void worker_gil_lock(RedisModuleCtx *tsctx);
void worker_gil_unlock(RedisModuleCtx *tsctx);

typedef struct worker_stats {
    long long threads;   /* running now */
    long long queued;    /* tasks waiting for a thread */
    long long running;   /* tasks on a thread */
} worker_stats;
worker_stats workers_get_stats(void);

#endif
