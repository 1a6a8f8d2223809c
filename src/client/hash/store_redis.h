/* store_redis.h - the page store of the `redis` VFS: one key on a Redis
 * server, over one hiredis connection.
 *
 * Made by the VFS opener (client/extension.c) for each database file
 * SQLite opens, and by tests/contract.c. One store is one client
 * connection: it serves one kvsql_txn at a time. The connection is opened
 * at the first begin, and again at the begin after a connection error. */
#ifndef KVSQL_CLIENT_STORE_REDIS_H
#define KVSQL_CLIENT_STORE_REDIS_H

#include "client/config.h"
#include "kvsql.h"
#include "store.h"

/* A store for the database at `key` (any bytes but NUL) on the server of
 * cfg. Connects nothing yet. Returns SQLITE_OK or SQLITE_NOMEM. */
int kvsql_redis_store_new(const char *key, const kvsql_redis_config *cfg, kvsql_store **out);

/* Hands s the row change capture of its connection (client/hooks.c),
 * which s frees with itself. -1 (nothing done) when s is not a redis store
 * or has one already. */
typedef struct kvsql_capture kvsql_capture;
int kvsql_redis_store_set_capture(kvsql_store *s, kvsql_capture *c);

/* A write-intent hint (client/hooks.c: a write statement starts in
 * autocommit, or BEGIN IMMEDIATE): the next begin also takes the writer's
 * lease when it is free, so that the lock needs no round trip. The next
 * begin or lock consumes it. Nothing when s is not a redis store. */
void kvsql_redis_store_intend_write(kvsql_store *s);

/* A read-only statement starts in autocommit (client/hooks.c): whatever
 * write was refused before is no longer being retried, so the coming
 * begin neither carries the write intent nor waits for a turn (turns,
 * store_redis.c). Nothing when s is not a redis store. */
void kvsql_redis_store_intend_read(kvsql_store *s);

/* The counters of s, or -1 when s is not a redis store. */
int kvsql_redis_store_stats(kvsql_store *s, kvsql_redis_stats *out);

#endif
