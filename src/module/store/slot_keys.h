/* slot_keys.h - whether a write may touch a database's keys on this
 * cluster node: all of them in one slot, and that slot not half moved.
 *
 * A write of the module touches the database key and its auxiliary keys
 * (format.h, KVSQL_AUX_ALL: T:v, the lease, the readers, the undo keys,
 * the changelog, the changes stream and its configuration, the staging
 * keys). Like Redis's own multi-key commands it cannot run while its
 * slot is being migrated and some of those keys are missing here: they
 * may be on the other node, and a write here would create a second T:v
 * (the next MIGRATE of it fails BUSYKEY and the slot stays half moved) or
 * miss a library writer's lease. Called by the end-of-call write
 * (store_keyspace.c) and by a staged write's steps (stage.c) before their
 * first write. Outside a cluster it costs one flag test. */
#ifndef KVSQL_SLOT_KEYS_H
#define KVSQL_SLOT_KEYS_H

#include "module/redis_api.h"

#include <stddef.h>

/* 0 when a write of the database at keyname may go on here; -1 with an
 * error reply text in err: "TRYAGAIN ..." while its slot is migrating or
 * importing and not every one of its keys is on this node (retry when the
 * migration ends), or "ERR ..." when its auxiliary keys hash to another
 * slot (a key without a hash tag that contains '}', docs/FORMAT.md). */
int slot_keys_writable(RedisModuleCtx *ctx, RedisModuleString *keyname, char *err, size_t errlen);

#endif
