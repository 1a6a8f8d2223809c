/* budget.h - what bounds one call: its time and its memory.
 *
 * exec.c opens a budget around every call (budget_begin/budget_end). While
 * it is open, SQLite's progress handler (installed here, removed at the
 * end), the authorizer (guard.c, during statement preparation) and NAMED
 * binding (exec.c) call budget_tick(), which stops the call past
 * kvsql.query-timeout-ms or after SQL.KILL, moves it (STOP_OFFLOAD) and
 * lets Redis answer -BUSY while it runs long. Work inside one step is
 * checked too: at big and every 1024th
 * allocation and every 256th page fetch (pcache.h); a stopped call is
 * refused all further memory and its statement interrupted (see
 * docs/SECURITY.md, "The main thread"). SQLite allocates
 * through budget_memory_methods (module.c installs them), which count every
 * byte and refuse what would take a call past kvsql.call-memory-kb (each
 * thread's call counts what that thread allocates). */
#ifndef KVSQL_BUDGET_H
#define KVSQL_BUDGET_H

#include "module/redis_api.h"

#include <sqlite3.h>

/* Its configs, kvsql.query-timeout-ms and kvsql.call-memory-kb, are in
 * settings.h (0: no limit). */

/* Opens the budget of a call on db, on Redis's main thread; pair with
 * budget_end(db). With offload_after_us > 0 the call stops (STOP_OFFLOAD)
 * once it has run that long, so that exec.c moves it to a worker thread;
 * one that cannot move (inside MULTI or a script, for a client that
 * cannot block, or budget_stay) stops with an error (STOP_STAY) a margin
 * later, so that no call holds the main thread much longer. With
 * offload_after_us 0 (offloading off) only the time limit bounds it. */
void budget_begin(RedisModuleCtx *ctx, sqlite3 *db, long long offload_after_us);
/* The same on a worker thread (worker.c): the call also stops when
 * *killed becomes non-zero (SQL.KILL), and its time limit counts from
 * started_ms (budget_now_ms() when the command began). Each thread has
 * its own budget. */
void budget_begin_worker(sqlite3 *db, const volatile int *killed, long long started_ms);
void budget_end(sqlite3 *db);
long long budget_now_ms(void);

/* Non-zero when the running call must stop (time up, SQL.KILL, memory).
 * Lets other clients in (-BUSY) now and then. 0 outside a call. */
int budget_tick(void);

/* Values of this many bytes or more (made, read or given) move a call
 * off the main thread at once, when it may move: one step of SQLite's
 * functions on such a value takes milliseconds (docs/SECURITY.md). */
#define BUDGET_BIG_VALUE (1024 * 1024)
/* The running call was given such a value (an argument, its SQL text). */
void budget_big_values(void);

/* Whether and why the running call was stopped. */
enum budget_stop { RUNS = 0, STOP_KILL, STOP_TIME, STOP_MEMORY, STOP_OFFLOAD, STOP_STAY };

/* Why a main-thread call cannot move to a worker thread. */
enum budget_stay { STAY_MULTI = 1, STAY_SCRIPT, STAY_CLIENT, STAY_TEMP, STAY_LEASE };
/* The running call cannot move (why: STAY_TEMP or STAY_LEASE, exec.c): past
 * offload-after-us plus a margin it stops with an error instead. */
void budget_stay(int why);
int budget_stop_kind(void);

/* Why the call was stopped, in words for the user ("SQL stopped ..."), or
 * NULL when it was not. A STOP_STAY's words say why it could not move and
 * what to do. */
const char *budget_stop_reason(void);
/* The same words for a stop of this kind, with its limit (ms for
 * STOP_TIME, KiB for STOP_MEMORY) written into buf when they name it. */
const char *budget_stop_words(int kind, long long limit, char *buf, size_t len);

/* The running call's connection must be kept (it holds TEMP objects):
 * stopping to move refuses it no memory (see budget_memory_refused). */
void budget_keep_connection(void);
/* Around SQLite's preupdate hook (change capture): no allocation is
 * refused inside it (an insert whose hook was refused memory crashed
 * SQLite), the stop waits for the first check after it. */
void budget_hook(int inside);

/* Whether SQLite was refused memory during the running call: its
 * connection may hold what SQLite could not undo (close it). */
int budget_memory_refused(void);

/* SQL.KILL: stops the call running on the main thread. 0 when none runs. */
int budget_kill(void);

/* SQLite's memory methods: Redis's allocator (the C library's in
 * sanitized builds), counted. */
extern const sqlite3_mem_methods budget_memory_methods;

/* Bytes SQLite holds now (when budget_memory_methods are installed). */
long long budget_memory_used(void);

#endif
