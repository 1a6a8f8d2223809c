/* exec.h - the SQL commands of the module: SQL, SQL.EXEC, SQL.QUERY, SQL.KILL.
 * Registered by module.c; behaviour documented in docs/COMMANDS.md. */
#ifndef KVSQL_EXEC_H
#define KVSQL_EXEC_H

#include "module/redis_api.h"

#define DEFAULT_DB_KEY "_sql:redis_db"

/* A call's options (docs/COMMANDS.md): before the SQL. */
typedef struct options {
    int format;       /* RESULT_TYPED | RESULT_MAP */
    int named;        /* NAMED: arguments are name value pairs */
    const char *spec; /* TYPES: one letter per value, or NULL */
    size_t spec_len;
} options;

/* What INFO kvsql shows of the commands since the module loaded. */
typedef struct exec_stats {
    long long errors_by_code[32]; /* SQLITE_<name> errors, by primary result code */
    long long errors_usage;       /* ERR: the command was misused, or kvsql refused the SQL */
    long long errors_other;       /* WRONGTYPE */
    long long timeouts;           /* calls stopped by kvsql.query-timeout-ms */
    long long kills;              /* calls stopped by SQL.KILL */
    long long stay_stops;         /* calls that could not move, stopped past offload-after-us and a margin */
    long long memory_stops;       /* calls stopped by kvsql.call-memory-kb */
} exec_stats;

exec_stats exec_get_stats(void);

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

/* SQLite's name of a primary result code ("CONSTRAINT"), or NULL. */
const char *exec_code_name(int code);

int cmd_sql(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int cmd_sql_exec(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int cmd_sql_query(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int cmd_sql_kill(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);

#endif
