/* budget.h - what bounds one call: its time and its memory.
 *
 * exec.c opens a budget around every call (budget_begin/budget_end). While
 * it is open, SQLite's progress handler (installed here, removed at the
 * end) and the authorizer (guard.c, during statement preparation) call
 * budget_tick(), which stops the call past kvsql.query-timeout-ms or after
 * SQL.KILL and lets Redis answer -BUSY while it runs long. SQLite allocates
 * through budget_memory_methods (module.c installs them), which count every
 * byte and refuse what would take a call past kvsql.call-memory-kb. */
#ifndef KVSQL_BUDGET_H
#define KVSQL_BUDGET_H

#include "module/redis_api.h"

#include <sqlite3.h>

/* Configs (module.c registers them). 0 means no limit. */
extern long long budget_timeout_ms;
extern long long budget_call_memory_kb;

/* Opens the budget of a call on db; pair with budget_end(db). */
void budget_begin(RedisModuleCtx *ctx, sqlite3 *db);
void budget_end(sqlite3 *db);

/* Non-zero when the running call must stop (time up, SQL.KILL, memory).
 * Lets other clients in (-BUSY) now and then. 0 outside a call. */
int budget_tick(void);

/* Whether and why the running call was stopped. */
enum budget_stop { RUNS = 0, STOP_KILL, STOP_TIME, STOP_MEMORY };
int budget_stop_kind(void);

/* Why the call was stopped, in words for the user ("SQL stopped ..."), or
 * NULL when it was not. */
const char *budget_stop_reason(void);

/* SQL.KILL: stops the running call. 0 when none runs. */
int budget_kill(void);

/* SQLite's memory methods: Redis's allocator (the C library's in
 * sanitized builds), counted. */
extern const sqlite3_mem_methods budget_memory_methods;

/* Bytes SQLite holds now (when budget_memory_methods are installed). */
long long budget_memory_used(void);

#endif
