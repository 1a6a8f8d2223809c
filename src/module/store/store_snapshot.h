/* store_snapshot.h - the page store of SQL running on a worker thread
 * (worker.c, exec.c): reads come from a snapshot (snapshot.h) of the
 * database's hash, fetched in runs of pages while holding Redis's lock;
 * commits stay pending in the store until the main thread writes them to
 * the hash (keyspace_store_adopt + keyspace_store_flush). */
#ifndef KVSQL_STORE_SNAPSHOT_H
#define KVSQL_STORE_SNAPSHOT_H

#include "module/redis_api.h"
#include "module/store/snapshot.h"
#include "pagemap.h"
#include "store.h"

/* A store on snap, read through the worker's thread-safe context tsctx.
 * With gil_held the caller holds Redis's lock for the store's whole use,
 * so reads do not take it. `writable` lets SQLite commit. NULL when out
 * of memory. The store does not own snap. */
kvsql_store *snapshot_store_new(snapshot *snap, RedisModuleCtx *tsctx, int gil_held, int writable);

/* What SQLite committed: the pending pages (moved out: the store keeps
 * none), the database length and page size. Returns 0 when nothing was
 * committed. */
int snapshot_store_take_pending(kvsql_store *s, pending_pages *out);

/* SNAPSHOT_OK, or the snapshot's state when a read found it broken. */
int snapshot_store_state(kvsql_store *s);

#endif
