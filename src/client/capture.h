/* capture.h - the row changes of a `redis` VFS connection's transaction,
 * as capture publishes them (docs/FORMAT.md, "The changes stream";
 * docs/LIBRARY.md, "Change capture").
 *
 * A capture belongs to one connection and is owned by its store. It is
 * fed from above, by SQLite's callbacks that client/hooks.c installs (each
 * row change, each statement's start and end), and asked from below, by
 * the store: whether capture is on at each begin, the entries at commit
 * (they go in the commit script, with the pages), the end of the
 * transaction. The entries are the module's, built by the same core code
 * (change_log.c, change_entry.c). */
#ifndef KVSQL_CLIENT_CAPTURE_H
#define KVSQL_CLIENT_CAPTURE_H

#include "change_log.h"
#include "store.h"

#include "sqlite.h"
#include <stddef.h>

typedef struct kvsql_capture kvsql_capture;

/* SQLite's preupdate hook that feeds a capture (its argument is the capture). */
typedef void (*kvsql_capture_hook)(void *, sqlite3 *, int, const char *, const char *, sqlite3_int64, sqlite3_int64);

/* A capture for db's main database, kept by store; hook is the preupdate
 * hook to install again at each commit (another may have replaced it),
 * on_free(db) is told when the capture is freed. NULL: out of memory. */
kvsql_capture *kvsql_capture_new(sqlite3 *db, kvsql_store *store, kvsql_capture_hook hook,
                                 void (*on_free)(sqlite3 *db));
kvsql_store *kvsql_capture_store(const kvsql_capture *c);
/* Whether kvsql's own query runs on the connection (its statements are
 * not the application's). */
int kvsql_capture_busy(const kvsql_capture *c);

/* Fed by the preupdate hook: one row change. */
void kvsql_capture_row(kvsql_capture *c, sqlite3 *db, int op, const char *dbname, const char *table,
                       sqlite3_int64 key1, sqlite3_int64 key2);
/* Fed by the trace callback: an application statement started (1) or
 * ended (0). */
void kvsql_capture_statement(kvsql_capture *c, sqlite3_stmt *stmt, int started);

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

/* The entries of log as a commit script takes them (client/hash/scripts.h
 * commit, client/spread/scripts.h publish): per entry, its count of
 * strings, then its field/value pairs. kvsql_capture_strings: how many
 * strings in all (0 for NULL); kvsql_capture_add_args adds them to k,
 * counts[i] (4 bytes each, log->n of them) holding entry i's count. */
struct kvsql_call;
size_t kvsql_capture_strings(const change_log *log);
void kvsql_capture_add_args(struct kvsql_call *k, const change_log *log, char (*counts)[4]);
void kvsql_capture_free(kvsql_capture *c);

#endif
