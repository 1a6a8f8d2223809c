/* hooks.h - the connection hooks of the `redis` VFS: what the library
 * learns from SQLite itself, which the VFS does not see (it has no
 * sqlite3* handle).
 *
 * client/extension.c calls kvsql_hooks_attach for every connection opened
 * after registration (sqlite3_auto_extension); on a connection whose main
 * database is on the redis VFS it installs SQLite's preupdate hook and
 * trace callback (STMT and PROFILE) and hands the capture they fill to
 * the store (client/hash/store_redis.c), which owns it from then on.
 *
 * The capture keeps the row changes of the running transaction when
 * capture is on for the database (T:changes:cfg exists, docs/FORMAT.md
 * "The changes stream"): the same entries as the module's, built by the
 * same core code (change_log.c, change_entry.c). The store tells it
 * whether capture is on at each begin, takes the entries at commit (they
 * go in the commit script, with the pages) and ends the transaction.
 *
 * The trace callback also gives the store the write-intent hint
 * (kvsql_redis_store_intend_write): a write statement starting in
 * autocommit, or BEGIN IMMEDIATE/EXCLUSIVE, so that the begin takes the
 * writer's lease with the snapshot (docs/LIBRARY.md, "What a transaction
 * costs"). */
#ifndef KVSQL_CLIENT_HOOKS_H
#define KVSQL_CLIENT_HOOKS_H

#include "change_log.h"

#include "sqlite.h"
#include <stddef.h>

typedef struct kvsql_capture kvsql_capture;

/* Installs the hooks when db's main database is on the redis VFS. An
 * SQLite result code (SQLITE_OK also when there is nothing to do). */
int kvsql_hooks_attach(sqlite3 *db);

/* The redis connection, and its statement, that runs on this thread now
 * (between the statement's start and end as traced): 1 when there is one.
 * The VFS opener sends a name without a server opened by it (ATTACH
 * 'x.db', VACUUM INTO 'x.db') to that connection's server. */
int kvsql_hooks_running(sqlite3 **db, sqlite3_stmt **stmt);

/* The store, at each begin: whether capture is on for the database. */
void kvsql_capture_begin(kvsql_capture *c, int on);
/* The store, before a commit while capture is on: completes the entries
 * (the schema entry of a DDL statement in autocommit) and checks they can
 * be published. again: a second commit of the same SQLite transaction
 * (SQLite truncated the file after its sync: the VFS commits the new
 * length). The log to send, or NULL with why in err (then the commit must
 * fail and write nothing). */
const change_log *kvsql_capture_commit(kvsql_capture *c, int again, char *err, size_t errlen);
/* The store, when the transaction ended (committed or not): drops its
 * entries. */
void kvsql_capture_end(kvsql_capture *c);
void kvsql_capture_free(kvsql_capture *c);

#endif
