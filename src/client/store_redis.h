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

/* The counters of s, or -1 when s is not a redis store. */
int kvsql_redis_store_stats(kvsql_store *s, kvsql_redis_stats *out);

#endif
