/* leasewait.h - a module write that a library writer's lease refused
 * waits for its turn, blocking only its own client (docs/COMMANDS.md,
 * "Writers of the library"; docs/FORMAT.md, "Turns").
 *
 * Called by exec.c when a call's write was refused because T:lease is
 * held: the call wrote nothing; leasewait_start blocks its client, queues
 * it in T:queue and retries the whole call once the lease is free and no
 * writer waited longer, or replies the refusal after
 * kvsql.lease-wait-ms. */
#ifndef KVSQL_LEASEWAIT_H
#define KVSQL_LEASEWAIT_H

#include "module/redis_api.h"

/* Whether err is the refusal of a write because a library writer holds
 * the lease (store_keyspace.c's text). */
int leasewait_refused(const char *err);

/* Blocks the client of ctx until the call (keyname, then argv: [options]
 * sql [args], as call_rerun takes them) may write, then runs it again
 * with call_rerun. Returns 1 when the client was blocked (the call
 * replies later), 0 when it cannot wait (inside MULTI or a script, or
 * kvsql.lease-wait-ms is 0): the caller replies the refusal. */
int leasewait_start(RedisModuleCtx *ctx, RedisModuleString *keyname, RedisModuleString **argv, int argc);

/* What INFO kvsql shows. */
typedef struct leasewait_stats {
    long long waits;    /* writes that waited for the lease */
    long long timeouts; /* of those, refused after kvsql.lease-wait-ms */
} leasewait_stats;
leasewait_stats leasewait_get_stats(void);

#endif
