/* protocol.h - the module's side of the library protocol (docs/FORMAT.md,
 * "The protocol of the redis VFS"): the auxiliary keys of a database, the
 * writer's lease, undo records for library readers, the version counter.
 *
 * Called by the keyspace store's end-of-call write (store_keyspace.c), in
 * this order, before it writes any page:
 *   protocol_lease_held   -> refuse to write while a library writer holds it
 *   protocol_save_undo    -> before-images for live readers (or drop undo)
 *   protocol_bump_version -> INCR T:v, SET T:id "<new v>:<random hex>"
 * then, after its own HSET/HDEL propagation, protocol_propagate_version.
 * Only the pages, T:v and T:id are propagated; the lease, the readers and the
 * undo keys and the changelog never reach replicas or the AOF. With no
 * library client around, the cost is a few key lookups and one INCR. */
#ifndef KVSQL_PROTOCOL_H
#define KVSQL_PROTOCOL_H

#include "module/redis_api.h"

#include <stdint.h>

/* The auxiliary keys of one database (format.h names them). */
typedef struct aux_keys {
    RedisModuleString *version, *lease, *readers, *undo, *undo_idx, *undo_ver, *log, *id;
    struct protocol_write *write; /* the write under way: the identity it gives
                                   * the new version (protocol.c) */
} aux_keys;

/* The name of keyname's auxiliary key `suffix` (a KVSQL_AUX_* of format.h),
 * as a string of ctx (NULL: one that outlives the call). Free it. */
RedisModuleString *aux_key_name(RedisModuleCtx *ctx, RedisModuleString *keyname, const char *suffix);

/* Fills a with the names of keyname's auxiliary keys, strings that
 * outlive the call (the keyspace store makes them once, at its first
 * write). Free with aux_keys_free. */
void aux_keys_make(RedisModuleString *keyname, aux_keys *a);
void aux_keys_free(aux_keys *a);

/* The error of a write refused because a library writer holds the lease
 * (leasewait.c waits for its turn when it meets it). */
#define PROTOCOL_LEASE_BUSY "SQLITE_BUSY database is locked: a library client holds the write lease (retry)"

/* Whether a library writer holds the database's write lease. A lease
 * whose token names a CLIENT ID that no longer exists (its owner's
 * connection is gone: it can never commit) is deleted and does not count. */
int protocol_lease_held(RedisModuleCtx *ctx, const aux_keys *a);

/* Before a commit that overwrites or deletes the pages `indexes` (n of
 * them, each below the old length) of the hash open in `key`: when the
 * changelog T:log exists (a library client keeps it), logs them as the
 * next version's entry; drops lapsed readers; if readers remain, saves the
 * pages' current values as undo records of the next version and trims
 * records no reader needs; with no reader, deletes the undo keys. Nothing
 * is propagated. Returns 0, or -1 with an error reply text in err. */
int protocol_save_undo(RedisModuleCtx *ctx, const aux_keys *a, RedisModuleKey *key, const uint32_t *indexes,
                       size_t n, char *err, size_t errlen);

/* INCR T:v and SET T:id to the new version's identity (docs/FORMAT.md,
 * "Identity"; the one protocol_save_undo chose), not propagated yet.
 * Returns 0, or -1 with an error in err. */
int protocol_bump_version(RedisModuleCtx *ctx, const aux_keys *a, char *err, size_t errlen);

/* Propagates the INCR T:v and SET T:id of protocol_bump_version (after
 * the pages). */
void protocol_propagate_version(RedisModuleCtx *ctx, const aux_keys *a);

#endif
