/* worker.c - a pool of threads running worker_tasks; see worker.h.
 * One mutex guards the queue and the counters; a condition variable wakes
 * idle threads. A thread whose number is at or past kvsql.worker-threads
 * ends when it next finds nothing to do, so lowering the config shrinks
 * the pool. At shutdown, queued tasks are dropped: the process ends. */
#include "module/offload/worker.h"
#include "module/settings.h"

#include <pthread.h>
#include <time.h>

#define MAX_THREADS 64
/* How long shutdown waits for tasks to leave SQLite. */
#define SHUTDOWN_WAIT_MS 2000


static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static worker_task *queue_head, *queue_tail;
static worker_task *running[MAX_THREADS]; /* by thread number: the task it runs */
static int started[MAX_THREADS];
static long long nthreads, nqueued, nrunning;
static long long active; /* tasks running and not waiting for the GIL */
static int stopping;

typedef struct thread_arg {
    int id;
    RedisModuleCtx *tsctx;
} thread_arg;

/* The next task for thread id, waiting for one; NULL when the thread
 * should end (shutdown, or past kvsql.worker-threads with nothing queued:
 * queued tasks always run, so no client waits forever). */
static worker_task *take_task(int id) {
    while (!queue_head && !stopping && id < worker_threads) pthread_cond_wait(&wake, &mu);
    if (!queue_head || stopping) return NULL;
    worker_task *t = queue_head;
    queue_head = t->next;
    if (!queue_head) queue_tail = NULL;
    nqueued--;
    return t;
}

static void *thread_main(void *p) {
    thread_arg *arg = p;
    pthread_mutex_lock(&mu);
    worker_task *t;
    while ((t = take_task(arg->id))) {
        running[arg->id] = t;
        nrunning++;
        active++;
        pthread_mutex_unlock(&mu);
        t->run(t, arg->tsctx);
        pthread_mutex_lock(&mu);
        running[arg->id] = NULL; /* before done(): SQL.KILL must not reach a task that is gone */
        nrunning--;
        active--;
        pthread_mutex_unlock(&mu);
        t->done(t);
        pthread_mutex_lock(&mu);
    }
    started[arg->id] = 0;
    nthreads--;
    pthread_mutex_unlock(&mu);
    RedisModule_FreeThreadSafeContext(arg->tsctx);
    RedisModule_Free(arg);
    return NULL;
}

/* Starts threads up to kvsql.worker-threads (caller holds mu). */
static void start_threads(RedisModuleCtx *ctx) {
    for (int id = 0; id < worker_threads && id < MAX_THREADS; id++) {
        if (started[id]) continue;
        thread_arg *arg = RedisModule_Alloc(sizeof(*arg));
        arg->id = id;
        arg->tsctx = RedisModule_GetDetachedThreadSafeContext(ctx);
        pthread_t th;
        if (pthread_create(&th, NULL, thread_main, arg) != 0) {
            RedisModule_FreeThreadSafeContext(arg->tsctx);
            RedisModule_Free(arg);
            return;
        }
        pthread_detach(th);
        started[id] = 1;
        nthreads++;
    }
}

int workers_submit(RedisModuleCtx *ctx, worker_task *t) {
    pthread_mutex_lock(&mu);
    if (!stopping) start_threads(ctx);
    int ok = nthreads > 0 && !stopping;
    if (ok) {
        t->next = NULL;
        if (queue_tail) queue_tail->next = t;
        else queue_head = t;
        queue_tail = t;
        nqueued++;
        pthread_cond_signal(&wake);
    }
    pthread_mutex_unlock(&mu);
    return ok ? 0 : -1;
}

int workers_kill_all(void) {
    int n = 0;
    pthread_mutex_lock(&mu);
    for (worker_task *t = queue_head; t; t = t->next, n++) t->killed = 1;
    for (int i = 0; i < MAX_THREADS; i++)
        if (running[i]) running[i]->killed = 1, n++;
    pthread_mutex_unlock(&mu);
    return n;
}

void workers_config_changed(void) {
    pthread_mutex_lock(&mu);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&mu);
}

void workers_shutdown(void) {
    pthread_mutex_lock(&mu);
    stopping = 1;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&mu);
    workers_kill_all();
    /* The main thread holds the GIL: a task that waits for it is harmless
     * while the process ends; one still inside SQLite is not. */
    for (int waited = 0; waited < SHUTDOWN_WAIT_MS; waited++) {
        pthread_mutex_lock(&mu);
        long long busy = active;
        pthread_mutex_unlock(&mu);
        if (!busy) return;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
}

void worker_gil_lock(RedisModuleCtx *tsctx) {
    pthread_mutex_lock(&mu);
    active--;
    pthread_mutex_unlock(&mu);
    RedisModule_ThreadSafeContextLock(tsctx);
    pthread_mutex_lock(&mu);
    active++;
    pthread_mutex_unlock(&mu);
}

void worker_gil_unlock(RedisModuleCtx *tsctx) {
    RedisModule_ThreadSafeContextUnlock(tsctx);
}

worker_stats workers_get_stats(void) {
    pthread_mutex_lock(&mu);
    worker_stats s = {nthreads, nqueued, nrunning};
    pthread_mutex_unlock(&mu);
    return s;
}
