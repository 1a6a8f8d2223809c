/* hooks.h - the connection hooks of the `redis` VFS: what the library
 * learns from SQLite itself, which the VFS does not see (it has no
 * sqlite3* handle).
 *
 * client/extension.c calls kvsql_hooks_attach for every connection opened
 * after registration (sqlite3_auto_extension); on a connection whose main
 * database is on the redis VFS it installs SQLite's preupdate hook and
 * trace callback (STMT and PROFILE), which feed the connection's capture
 * (client/capture.h), handed to the store, which owns it from then on.
 *
 * The trace callback also gives the store the write-intent hint
 * (kvsql_redis_store_intend_write): a write statement starting in
 * autocommit, or BEGIN IMMEDIATE/EXCLUSIVE, so that the begin takes the
 * writer's lease with the snapshot (docs/LIBRARY.md, "What a transaction
 * costs"). */
#ifndef KVSQL_CLIENT_HOOKS_H
#define KVSQL_CLIENT_HOOKS_H

#include "sqlite.h"
#include <stddef.h>

/* Installs the hooks when db's main database is on the redis VFS. An
 * SQLite result code (SQLITE_OK also when there is nothing to do). */
int kvsql_hooks_attach(sqlite3 *db);

/* The redis connection, and its statement, that runs on this thread now
 * (between the statement's start and end as traced): 1 when there is one.
 * The VFS opener sends a name without a server opened by it (ATTACH
 * 'x.db', VACUUM INTO 'x.db') to that connection's server. */
int kvsql_hooks_running(sqlite3 **db, sqlite3_stmt **stmt);

#endif
