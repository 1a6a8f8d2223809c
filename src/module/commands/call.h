/* call.h - one SQL call (SQL, SQL.EXEC, SQL.QUERY): what it is, and how
 * call.c runs its SQL and replies, the same on Redis's main thread (exec.c)
 * and, moved by offload.c, on a worker thread. */
#ifndef KVSQL_CALL_H
#define KVSQL_CALL_H

#include "module/connections/cache.h"
#include "module/commands/result.h"

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

/* SQLite's name of a primary result code ("CONSTRAINT"), or NULL. */
const char *exec_code_name(int code);

typedef struct call {
    RedisModuleCtx *ctx; /* the command's context; NULL on a worker thread */
    conn *c;
    result *rows;         /* the last statement's rows */
    RedisModuleString **argv; /* what followed the key: [options...] sql [arg ...] */
    int argc;
    RedisModuleString **args; /* the values: argv after the SQL */
    int nraw;             /* argument strings after the SQL */
    int nargs;            /* values: with NAMED, the number of name/value pairs */
    int readonly;
    int may_wait;         /* a write the lease refuses may wait for it (leasewait.h) */
    options opt;
    unsigned char *used;  /* NAMED: which pairs bound a parameter (nargs bytes) */
    struct named_index *named; /* NAMED: the pairs by name, made by the first statement (exec.c) */
    int max_params;       /* most parameters of any statement */
    int has_rows;         /* the last statement returns columns */
    long long changes;    /* rows changed by the last statement (its result rows go to `rows`) */
    long long offload_us; /* main thread: move to a worker past this many microseconds (0: never) */
    int stay;             /* main thread: why it cannot move (budget.h, enum budget_stay), 0 when it may;
                           * then it stops with an error a margin past offload_us */
    int offloaded;        /* it stopped to move to a worker: not an error, nothing to reply */
    const volatile int *killed; /* on a worker: SQL.KILL's flag */
    long long started_ms; /* on a worker: when the command began */
    char err[1024];
} call;

/* Runs the call's SQL on its connection within its budget, then puts back
 * what the SQL changed of the connection. Non-zero when all went well;
 * otherwise k->err holds the error reply, unless k->offloaded. */
int call_run(call *k, const char *text, size_t len);
/* Main thread: replies the call's result, or its error when !ok. */
void call_reply(call *k, int ok);
/* Main thread: replies a successful call's result: the last statement's
 * rows when it has result columns, else the count of rows it changed. */
void call_reply_result(RedisModuleCtx *ctx, result *rows, int has_rows, long long changes, int format);
/* Main thread: replies an error and counts it by its first word. */
int call_reply_error(RedisModuleCtx *ctx, const char *err);

/* Main thread: runs again a call that must run here (why: STAY_TEMP, its
 * worker wrote TEMP objects, which live in the key's cached connection;
 * STAY_LEASE, run from a reply callback after it waited for the write
 * lease): as SQL.EXEC/SQL.QUERY would, but never moving it: it stops with
 * an error past kvsql.offload-after-us and a margin. It is the commands'
 * (exec.c's exec_run_here), which stand above offload.c and leasewait.c
 * that call it: module.c sets it at load. */
typedef void (*call_rerun_fn)(RedisModuleCtx *ctx, RedisModuleString *keyname, RedisModuleString **argv, int argc,
                              int readonly, int why);
extern call_rerun_fn call_rerun;


#endif
