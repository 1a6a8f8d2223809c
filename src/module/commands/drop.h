/* drop.h - SQL.DROP key [FORCE]: a database and all its auxiliary keys
 * removed in one atomic step (drop.c; docs/COMMANDS.md, SQL.DROP).
 * Registered by module.c. */
#ifndef KVSQL_DROP_H
#define KVSQL_DROP_H

#include "module/redis_api.h"

int cmd_sql_drop(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);

#endif
