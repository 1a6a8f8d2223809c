/* exec.h - the SQL commands of the module: SQL, SQL.EXEC, SQL.QUERY, SQL.KILL.
 * Registered by module.c; behaviour documented in docs/COMMANDS.md. */
#ifndef KVSQL_EXEC_H
#define KVSQL_EXEC_H

#include "module/commands/call.h"
#include "module/redis_api.h"

#define DEFAULT_DB_KEY "_sql:redis_db"


/* call.h's call_rerun: runs a call again on the main thread, never moving it. */
void exec_run_here(RedisModuleCtx *ctx, RedisModuleString *keyname, RedisModuleString **argv, int argc,
                   int readonly, int why);

int cmd_sql(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int cmd_sql_exec(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int cmd_sql_query(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int cmd_sql_kill(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);

#endif
