/* offload.h - long calls moved off Redis's main thread (offload.c): the
 * call that stopped to move goes to a worker thread (worker.c) on a
 * snapshot of its database, its client blocked, and comes back to the main
 * thread for its reply and its write (docs/COMMANDS.md, "Long calls"). */
#ifndef KVSQL_MODULE_OFFLOAD_H
#define KVSQL_MODULE_OFFLOAD_H

#include "module/commands/call.h"

#include <stdint.h>

/* Main thread: moves a call that stopped to offload (its
 * connection released, nothing written) to a worker: blocks the client and
 * returns 1. Returns 0 when the call cannot move (no memory for its
 * snapshot, Redis would not block the client): run it again on the main
 * thread. A write on a database whose change capture is on moves too: the
 * worker captures its entries and writes them with its pages. */
int offload_call(call *k, RedisModuleString *keyname, uint32_t npages, uint32_t page_size);

/* What INFO kvsql shows of calls moved to worker threads (offload.c). */
typedef struct offload_stats {
    long long calls;       /* calls moved off the main thread */
    long long restarts;    /* runs started again on a new snapshot */
    long long locked_runs; /* runs that held Redis's lock throughout (after SNAPSHOT_TRIES restarts) */
    long long conflicts;   /* writes refused: the database changed under them */
    long long run_here;    /* calls sent back to the main thread: they wrote TEMP objects */
    long long staged;      /* big writes published by staging (stage.h) */
    long long staged_waits; /* their 1 ms pauses for a replica's full output buffer */
    long long pause_waits;  /* 1 ms waits of a write while Redis paused writes (CLIENT PAUSE, FAILOVER) */
} offload_stats;
offload_stats offload_get_stats(void);

#endif
