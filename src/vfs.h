/* vfs.h - how a store backend becomes an SQLite VFS.
 *
 * vfs.c implements one VFS on top of store.h (its database file is
 * dbfile.c's); each registered VFS differs only in how a file name
 * becomes a store. The words of the last failed open are dbfile.c's. Used by vfs.c itself (the
 * "kvsql" and "kvsql-memory" VFSes) and by src/client/ (the "redis" VFS). */
#ifndef KVSQL_VFS_H
#define KVSQL_VFS_H

#include "store.h"

#include "sqlite.h"

/* Makes the store for the main database file `name`, exactly as SQLite
 * passed it to xOpen (so sqlite3_uri_parameter(name, ...) works on it).
 * Returns an SQLite result code; on failure *out is NULL and, where it has
 * words for the user, the opener leaves them for kvsql_vfs_errmsg(). */
typedef int (*kvsql_store_opener)(const char *name, kvsql_store **out);

/* Registers VFS `vfs_name`. With share_by_name, files of the same name in
 * this process share one store (kept while one is open); without, every
 * open makes its own store, destroyed at close. make_default: also the
 * process's default VFS. Idempotent per name. */
int kvsql_vfs_register(const char *vfs_name, kvsql_store_opener open, int share_by_name, int make_default);

/* The store of an open connection's main database, and its transaction,
 * for SQL functions and tools: sqlite3_file_control(db, "main",
 * KVSQL_FCNTL_STORE, &out) fills a kvsql_fcntl_store. */
#define KVSQL_FCNTL_STORE 0x6b760001
typedef struct kvsql_fcntl_store {
    kvsql_store *store;
    kvsql_txn *txn;
} kvsql_fcntl_store;

/* Frees the buffers an idle database file keeps for speed (a scratch page,
 * spare page buffers): sqlite3_file_control(db, "main", KVSQL_FCNTL_TRIM,
 * NULL). The module runs it after each call, so that a cached connection
 * costs about its database (docs/COMMANDS.md). */
#define KVSQL_FCNTL_TRIM 0x6b760002

/* The words of the last failed store open on this thread ("" when none). */
const char *kvsql_vfs_errmsg(void);
void kvsql_vfs_set_errmsg(const char *msg);

#endif
