/* snapshot.h - a consistent view of one database's hash for SQL that runs
 * on a worker thread (worker.c) while Redis's main thread goes on changing
 * the keyspace.
 *
 * A snapshot is the hash as it was when the snapshot was taken. The worker
 * reads pages from the live hash, holding Redis's lock (the GIL), so a
 * snapshot must learn of every change to its hash before the old page is
 * gone:
 *   - kvsql's own end-of-call write (store_keyspace.c) first hands the
 *     pages it overwrites or deletes to snapshots_preserve(): they are kept
 *     as they were, and the snapshot stays exact;
 *   - any other change (a user's HSET, a replicated write, a library
 *     client's commit, the key deleted, renamed, expired or moved: the
 *     keyspace events module.c passes on) marks the snapshot
 *     SNAPSHOT_CHANGED: its reads fail from then on and the SQL starts
 *     again on a new snapshot, or fails if the key is gone (offload.c);
 *   - the database flushed or swapped, a dataset loaded: SNAPSHOT_GONE,
 *     the call fails.
 * So a reader never mixes pages of two versions. Everything here runs on
 * the main thread or on a worker holding the GIL: the GIL orders it all. */
#ifndef KVSQL_SNAPSHOT_H
#define KVSQL_SNAPSHOT_H

#include "module/redis_api.h"

#include <stdint.h>

typedef struct snapshot snapshot;

enum { SNAPSHOT_OK = 0, SNAPSHOT_CHANGED, SNAPSHOT_GONE };

/* Main thread, or a worker holding the GIL: a snapshot of the hash at
 * keyname in db dbid, npages pages of page_size bytes (0 and 0 for an
 * empty key). A `writer` snapshot belongs to a writing call: while it
 * lives, snapshots_writing() says so. NULL when out of memory. */
snapshot *snapshot_take(int dbid, RedisModuleString *keyname, uint32_t npages, uint32_t page_size, int writer);
/* Main thread, or a worker holding the GIL. */
void snapshot_drop(snapshot *s);

uint32_t snapshot_npages(const snapshot *s);
uint32_t snapshot_page_size(const snapshot *s);
int snapshot_state(const snapshot *s);
/* Whether kvsql's own write changed the hash since s was taken (the
 * snapshot kept its pages, but a writer on it would lose that write). */
int snapshot_overwritten(const snapshot *s);

/* Worker thread holding the GIL, on its thread-safe context: copies pages
 * first .. first+count-1 as of the snapshot into buf. Returns SQLITE_OK,
 * SQLITE_ABORT when the snapshot is no longer exact (snapshot_state says
 * why; a key that vanished or was replaced, also one found expired with no
 * event yet, counts as changed, never as corruption), or SQLITE_CORRUPT
 * (a page missing or of the wrong length in the hash the snapshot saw). */
int snapshot_read(snapshot *s, RedisModuleCtx *tsctx, uint32_t first, uint32_t count, void *buf);

/* Main thread, before kvsql's own write to the hash `key` (open, holding
 * the state as the snapshots know it) overwrites or deletes the pages at
 * indexes idx[0..n-1]: live snapshots of it keep their copies. Returns 0,
 * or -1 when out of memory (the snapshots are then marked CHANGED). */
int snapshots_preserve(int dbid, RedisModuleString *keyname, RedisModuleKey *key, const uint32_t *idx, size_t n);

/* Main thread, from keyspace and server events. */
void snapshots_key_changed(int dbid, const char *key, size_t len, int state);
void snapshots_db_gone(int dbid); /* -1: every db */
int snapshots_live(void);
/* Whether a writing call holds a snapshot of this key (main thread). */
int snapshots_writing(int dbid, const char *key, size_t len);

#endif
