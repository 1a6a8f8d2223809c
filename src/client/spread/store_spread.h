/* store_spread.h - the page store of the spread layout (docs/FORMAT.md, "The
 * spread layout"): one database's map and coordination keys in its home
 * slot, its pages as immutable copies in run keys spread over the slots.
 *
 * Made by the VFS opener (client/extension.c) for a URI with
 * layout=spread, and by tests/contract.c. One store is one client
 * connection, as the one-hash store (client/hash/store_redis.h). */
#ifndef KVSQL_CLIENT_SPREAD_STORE_SPREAD_H
#define KVSQL_CLIENT_SPREAD_STORE_SPREAD_H

#include "client/config.h"
#include "kvsql.h"
#include "store.h"

/* A store for the spread database at `key` on the server of cfg.
 * Connects nothing yet. SQLITE_OK or SQLITE_NOMEM. */
int kvsql_spread_store_new(const char *key, const kvsql_redis_config *cfg, kvsql_store **out);

/* Whether s is a spread store. */
int kvsql_spread_store_is(const kvsql_store *s);

/* The hooks of the store's connection (client/hooks.c), which s frees
 * with itself (change capture stays off on spread databases: a commit
 * while T:changes:cfg exists is refused). -1 when s is not a spread store
 * or has them already. */
typedef struct kvsql_capture kvsql_capture;
int kvsql_spread_store_set_capture(kvsql_store *s, kvsql_capture *c);

/* Write-intent hints, as the redis store's (store_redis.h): the next
 * begin also takes the writer's lease when free. Nothing when s is not a
 * spread store. */
void kvsql_spread_store_intend_write(kvsql_store *s);
void kvsql_spread_store_intend_read(kvsql_store *s);

/* The counters of s (kvsql_stats()), or -1 when s is not a spread store. */
int kvsql_spread_store_stats(kvsql_store *s, kvsql_redis_stats *out);

/* Collects, in steps of at most SPREAD_GC_BATCH copies, the page copies
 * no registered reader can need any more, up to max_steps steps; adds the
 * copies deleted to *removed. An SQLite code; errmsg() says why. */
int kvsql_spread_store_gc(kvsql_store *s, int max_steps, long long *removed);

#endif
