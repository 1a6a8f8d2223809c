/* replicas.h - what the replicas' output buffers allow: the limits of
 * client-output-buffer-limit's replica class and how full the fullest
 * buffer is now. store_keyspace.c refuses a one-step write too big for
 * them; stage.c paces a staged write's steps by them. Every function runs
 * on a context that holds Redis's lock. */
#ifndef KVSQL_REPLICAS_H
#define KVSQL_REPLICAS_H

#include "module/redis_api.h"

/* How many replicas this server feeds, in any state (INFO's
 * connected_slaves: a replica still syncing has an output buffer too). */
long long replicas_count(RedisModuleCtx *ctx);

/* client-output-buffer-limit's replica class, in bytes (0: none). Redis
 * drops a replica whose buffer passes *hard, or stays above *soft for the
 * class's seconds, and resyncs it in full. */
void replicas_buffer_limits(RedisModuleCtx *ctx, long long *hard, long long *soft);

/* The bytes waiting in the fullest replica's output buffer (CLIENT LIST's
 * omem), or -1 when no replica is connected. */
long long replicas_fullest_buffer(RedisModuleCtx *ctx);

#endif
