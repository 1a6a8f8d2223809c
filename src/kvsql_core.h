/* kvsql_core.h - the core's C API: SQLite databases whose pages live in a
 * page store (store.h), opened through the "kvsql" VFS (vfs.c).
 *
 * Used by the Redis module (src/module/), the conformance runner
 * (tools/slt.c), the benchmarks and the unit tests; not exported by
 * libkvsql.so (its public API is include/kvsql.h). A store is opened
 * first, then any number of SQLite connections on it; the store must
 * outlive them.
 *
 *   kvsql_store *st;
 *   sqlite3 *db;
 *   kvsql_memory_store_new(&st);
 *   kvsql_open(st, &db);
 *   ... sqlite3_exec(db, ...) ...
 *   sqlite3_close(db);
 *   kvsql_store_free(st);
 */
#ifndef KVSQL_CORE_H
#define KVSQL_CORE_H

#include "kvsql.h"

typedef struct kvsql_store kvsql_store;

/* Registers the VFSes "kvsql" (connections opened by kvsql_open) and
 * "kvsql-memory" (any file name opens a memory database of that name that
 * lives while a connection has it open; for programs that take --vfs NAME,
 * such as speedtest1). Idempotent. Returns an SQLite result code. */
int kvsql_register(void);

/* A new empty database in process memory. */
int kvsql_memory_store_new(kvsql_store **out);

/* Destroys a store. Close its connections first. */
void kvsql_store_free(kvsql_store *store);

/* Opens an SQLite connection on the store, with its journal kept in
 * memory. On failure *db is NULL and the result code says why. */
int kvsql_open(kvsql_store *store, sqlite3 **db);

/* The store's last error in words, or "" when none. */
const char *kvsql_store_errmsg(kvsql_store *store);

#endif
