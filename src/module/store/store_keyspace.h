/* store_keyspace.h - the page store of the Redis module: a database is a
 * hash in the keyspace of the redis-server the module runs in.
 *
 * Used by src/module/. A command attaches the store to its open key for
 * the command's duration. Commits made by SQLite during the command stay
 * pending in the store; at the end the command either flushes them (one
 * HSET, plus one HDEL when the database shrank, written to the hash and
 * propagated to replicas and the AOF as exactly those commands, with
 * INCR of the database's version) or discards them. So one command is one
 * atomic change of the hash. Pages whose bytes did not change are left out
 * of the HSET. A commit that would overflow a replica's output buffer
 * (client-output-buffer-limit) is refused before anything is written. */
#ifndef KVSQL_STORE_KEYSPACE_H
#define KVSQL_STORE_KEYSPACE_H

#include "pagemap.h"
#include "module/redis_api.h"
#include "store.h"

kvsql_store *keyspace_store_new(void);

/* Binds the store to the command's context and key; `readonly` refuses
 * every write. Until detached, reads come from the key. Attached, the store
 * reads page 1 from the hash at most once until its own write: the check,
 * SQLite's read and the flush's comparison share that copy, which the
 * detach frees. Nothing else may change the hash while it is attached
 * (Redis runs one command at a time). */
void keyspace_store_attach(kvsql_store *s, RedisModuleCtx *ctx, RedisModuleKey *key,
                           RedisModuleString *keyname, int readonly);
void keyspace_store_detach(kvsql_store *s);

/* Checks that the attached key is empty or holds a database in the kvsql
 * format. Returns 0, or -1 with the reason in keyspace_store_errmsg(). */
int keyspace_store_check(kvsql_store *s);

/* Whether key (open, or NULL when missing) still has the length this store
 * last saw: a cheap check for changes Redis makes without any event (a
 * cluster node dropping the keys of a slot it lost). */
int keyspace_store_matches(kvsql_store *s, RedisModuleKey *key);

/* The hash changed behind the store (a replicated HSET, a library
 * client's commit, a user's HSET): the next snapshot the store hands out
 * is a new one, so the VFS makes SQLite drop its page cache (the parsed
 * schema stays unless the schema cookie moved). Call
 * keyspace_store_check() before the store is used again. */
void keyspace_store_changed(kvsql_store *s);
/* The page size of the hash as last checked or written (0: empty). */
int keyspace_store_page_size(kvsql_store *s);

/* The length in pages of the attached hash (after keyspace_store_check). */
uint32_t keyspace_store_npages(kvsql_store *s);
/* Makes pages (moved out of *pages) the store's pending write, as if
 * SQLite had committed them here: a worker's call (offload.c) is written
 * by keyspace_store_flush like any other. values, if not NULL, holds per
 * slot of the page map the same page as a string (NULL for empty slots),
 * made on the worker so that the main thread does not copy it; the store
 * takes it and frees what the write does not use. */
void keyspace_store_adopt(kvsql_store *s, pending_pages *pages, RedisModuleString **values);

int keyspace_store_has_pending(kvsql_store *s);
/* Writes the pending pages to the hash and propagates them, following the
 * library protocol (protocol.h): refused while a library writer holds the
 * lease, with undo records for live library readers, and INCR of the
 * version in the same MULTI/EXEC. Returns 0, or -1 with an error reply
 * text in err: then nothing was written and the pages are still pending
 * (the caller discards them). */
int keyspace_store_flush(kvsql_store *s, char *err, size_t errlen);
void keyspace_store_discard(kvsql_store *s);

/* True while a flush is writing: keyspace events seen then are our own. */
int keyspace_store_flushing(void);

#endif
