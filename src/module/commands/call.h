/* call.h - one SQL call (SQL, SQL.EXEC, SQL.QUERY) as exec.c runs it, on
 * Redis's main thread or, moved by offload.c, on a worker thread. Shared by
 * exec.c and offload.c only. */
#ifndef KVSQL_CALL_H
#define KVSQL_CALL_H

#include "module/connections/cache.h"
#include "module/commands/exec.h"
#include "module/commands/result.h"

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

/* exec.c, main thread: runs a call that must run here (why: STAY_TEMP,
 * its worker wrote TEMP objects, which live in the key's cached
 * connection; STAY_LEASE, run from a reply callback after it waited for
 * the write lease): as SQL.EXEC/SQL.QUERY would, but never moving it: it
 * stops with an error past kvsql.offload-after-us and a margin. */
void exec_run_here(RedisModuleCtx *ctx, RedisModuleString *keyname, RedisModuleString **argv, int argc,
                   int readonly, int why);

/* offload.c, main thread: moves a call that stopped to offload (its
 * connection released, nothing written) to a worker: blocks the client and
 * returns 1. Returns 0 when the call cannot move (no memory for its
 * snapshot, Redis would not block the client): run it again on the main
 * thread. A write on a database whose change capture is on moves too: the
 * worker captures its entries and writes them with its pages. */
int offload_call(call *k, RedisModuleString *keyname, uint32_t npages, uint32_t page_size);

#endif
