/* changes.h - change data capture: a database's committed row changes
 * appended to the Redis Stream T:changes (docs/FORMAT.md, "The changes
 * stream"; docs/COMMANDS.md, SQL.CHANGES).
 *
 * Capture is on for a database while its key T:changes:cfg exists (a hash,
 * written by SQL.CHANGES, replicated and persisted like any key). Called by
 * exec.c around each write call and each statement, by store_keyspace.c in
 * its end-of-call write (the entries go out in the same MULTI/EXEC as the
 * pages), and by module.c, which registers SQL.CHANGES. With capture off a
 * write call costs one key lookup here and nothing else: no hook is
 * installed. The preupdate hook is installed only for the duration of a
 * call and removed at its end. A long write moved to a worker thread
 * captures there and writes its entries in the worker's atomic landing
 * of the write (offload.c, changes_capture_begin). */
#ifndef KVSQL_CHANGES_H
#define KVSQL_CHANGES_H

#include "module/connections/guard.h"
#include "module/redis_api.h"

#include <sqlite3.h>

/* Whether capture is on for the database at keyname: T:changes:cfg
 * exists, a valid configuration or not (an invalid one fails the write
 * where the entries would be written). */
int changes_on(RedisModuleCtx *ctx, RedisModuleString *keyname);

/* exec.c: at the start of a write call on keyname's connection db (guard
 * g lets capture's own queries past the authorizer). Installs the
 * preupdate hook when capture is on for the key. */
void changes_call_begin(RedisModuleCtx *ctx, RedisModuleString *keyname, sqlite3 *db, guard *g);
/* Around each statement of the call; no-ops when capture is off. Each
 * returns SQLITE_OK, or an error code with an error reply text in err
 * (then the call fails and nothing is written). */
int changes_stmt_begin(sqlite3_stmt *stmt, char *err, size_t errlen);
int changes_stmt_end(sqlite3_stmt *stmt, char *err, size_t errlen);
/* At the end of the call, written or not: removes the hook, drops the
 * entries. */
void changes_call_end(void);

/* A write moved to a worker thread (offload.c), on that thread. The
 * capture's state is per thread, so the worker that runs the SQL keeps
 * its entries until it lands the write (or gives up: changes_call_end).
 * changes_capture_begin, without Redis's lock, when capture was on at the
 * move: installs the hook on the worker's connection db (each new run of
 * the call starts afresh). changes_capture_detach before that connection
 * closes: removes the hook, keeps the entries. changes_land_begin,
 * holding Redis's lock, before the write: 0 when capture is still as it
 * was during the run (then its configuration is read again: the entries
 * go with the configuration of the moment they are written), or -1 with
 * err set when it was turned on or off meanwhile (nothing may be
 * written). Then keyspace_store_flush or stage_publish check and write
 * the entries (changes_check_write, changes_write) as on the main thread. */
void changes_capture_begin(RedisModuleString *keyname, sqlite3 *db, guard *g);
void changes_capture_detach(void);
int changes_land_begin(RedisModuleCtx *ctx, RedisModuleString *keyname, char *err, size_t errlen);

/* store_keyspace.c: about how many bytes the call's entries add to the
 * replication stream (its check of commits too big for the replicas). */
size_t changes_bytes(void);
/* store_keyspace.c, in the end-of-call write. Before anything is written:
 * checks everything that would make an XADD of the entries fail: that
 * T:changes:cfg is a valid configuration (format.h's rule, checked when
 * the call began), that T:changes is a stream or missing, and that its ID
 * space has room for all the entries. 0, or -1 with err set. */
int changes_check_write(RedisModuleCtx *ctx, char *err, size_t errlen);
/* After the pages and INCR T:v: appends the call's entries (XADD, each
 * propagated in the same MULTI/EXEC), tagged with the version in key
 * version_key. */
void changes_write(RedisModuleCtx *ctx, RedisModuleString *version_key);

/* module.c: a keyspace event of a class that can set a stream's last ID
 * or replace the key (generic, stream, expired, evicted) on key in
 * database db, other than kvsql's own writes; and a flush, SWAPDB, load
 * or role change. Capture then asks the stream's room again (XINFO
 * STREAM) before its next write to it. */
void changes_key_event(int db, const char *key, size_t len);
void changes_streams_forget(void);

/* SQL.CHANGES key [ON [MAXLEN [=|~] n] | OFF | STATUS] */
int cmd_sql_changes(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);

#endif
