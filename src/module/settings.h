/* settings.h - the module's configs (`CONFIG SET kvsql.<name>`, or
 * `--loadmodule kvsql.so <name> <value>`): each one's variable, read by
 * the files that apply it. settings.c holds the one table of them: name,
 * variable, default, bounds and what a change does; docs/COMMANDS.md,
 * "Configs", says the same for users. 0 means "no limit" or "off" where a
 * config allows it. */
#ifndef KVSQL_MODULE_SETTINGS_H
#define KVSQL_MODULE_SETTINGS_H

#include "module/redis_api.h"

extern long long budget_timeout_ms;         /* query-timeout-ms: a call's time (budget.c) */
extern long long budget_call_memory_kb;     /* call-memory-kb: a call's SQLite memory (budget.c) */
extern long long cache_page_cache_kb;       /* page-cache-kb: one connection's page cache (cache.c) */
extern long long cache_page_cache_total_mb; /* page-cache-total-mb: all connections' page caches (cache.c) */
extern long long cache_max_sql_kb;          /* max-sql-kb: the longest SQL text of a call (cache.c, exec.c) */
extern long long exec_offload_after_us;     /* offload-after-us: how long a call runs on the main thread before it moves to a worker; 0: never (exec.c) */
extern long long leasewait_ms;              /* lease-wait-ms: how long a write waits for the lease; 0: refused at once (leasewait.c) */
extern long long worker_threads;            /* worker-threads: 0 keeps every call on the main thread (worker.c) */
extern long long settings_max_connections;  /* max-connections: connections kept open (cache.c) */
extern long long changes_max_rows;          /* capture-max-rows: the most row changes one captured write lands
                                             * at once, under Redis's lock; 0: no limit (changes.c) */

/* Registers every config and loads the values given at load time
 * (RedisModule_LoadConfigs). REDISMODULE_OK, or REDISMODULE_ERR with the
 * reason in Redis's log. */
int settings_register(RedisModuleCtx *ctx);

#endif
