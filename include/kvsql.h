/* kvsql.h - the public C API of libkvsql.so: the `redis` VFS, which keeps
 * the pages of SQLite databases in Redis (docs/LIBRARY.md).
 *
 * It declares exactly what libkvsql.so exports (tests/test_abi.py
 * links a program that calls every function here against the library).
 * The core's own API (memory stores, kvsql_open, the "kvsql" VFS), used by
 * the module, the tools and the tests, is src/kvsql_core.h. */
#ifndef KVSQL_H
#define KVSQL_H

#include <sqlite3.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the `redis` VFS: libkvsql.so (src/client/) ------------------------
 *
 * A SQLite program that loads libkvsql.so (`.load libkvsql` in the sqlite3
 * shell, load_extension in Python) or calls kvsql_register_redis() opens
 *     file:KEY?vfs=redis&redis=HOST:PORT
 * and the pages of KEY live in a Redis hash (docs/LIBRARY.md). */

#define KVSQL_EXPORT __attribute__((visibility("default")))

/* The loadable-extension entry point, which SQLite finds by name when a
 * program loads the library (`.load libkvsql`, load_extension()): it
 * registers what kvsql_register_redis(0) does, and the SQL functions on
 * db. Programs call it only through SQLite's extension loading. */
KVSQL_EXPORT int sqlite3_kvsql_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *api);

/* Registers the VFS "redis", and SQL functions kvsql_error() and
 * kvsql_stats() on every connection opened after it. With make_default,
 * or when the environment has KVSQL_DEFAULT=redis://host:port[/db], the
 * redis VFS becomes the process's default VFS, and every database name
 * the program opens is a key on that server. Idempotent. Returns an
 * SQLite result code; kvsql_errmsg(NULL) says why it failed. */
KVSQL_EXPORT int kvsql_register_redis(int make_default);

/* The last error of db's main database store in words (SQLite itself can
 * only say "disk I/O error" or "unable to open database file"); with db
 * NULL or when that store has none, the last store error of this thread.
 * "" when there was none. Valid until the next call on db. */
KVSQL_EXPORT const char *kvsql_errmsg(sqlite3 *db);

/* Counters of a redis database connection (also as JSON from the SQL
 * function kvsql_stats()). round_trips counts every wait for a reply. */
typedef struct kvsql_redis_stats {
    sqlite3_int64 round_trips;   /* request/response waits, connection set-up included */
    sqlite3_int64 connects;      /* connections made (1 + reconnections) */
    sqlite3_int64 begins;        /* snapshots taken (transactions) */
    sqlite3_int64 reads;         /* read calls that went to Redis */
    sqlite3_int64 pages_read;    /* pages those reads brought */
    sqlite3_int64 locks;         /* writer lease requests */
    sqlite3_int64 commits;       /* commits that landed */
    sqlite3_int64 pages_written; /* pages those commits wrote */
    sqlite3_int64 busy;          /* lease requests refused: another writer */
    sqlite3_int64 stale;         /* refused: a commit came after the snapshot */
    sqlite3_int64 script_loads;  /* NOSCRIPT answered: the script was sent whole */
    sqlite3_int64 end_errors;    /* end-of-transaction replies that were errors */
    sqlite3_int64 redirects;     /* Redis Cluster MOVED/ASK replies followed */
    sqlite3_int64 wait_short;    /* commits (landed) that fewer replicas than wait= acknowledged */
    sqlite3_int64 log_begins;    /* begins that kept the page cache across others' commits (T:log) */
    sqlite3_int64 log_pages;     /* pages those begins learned had changed */
    sqlite3_int64 cache_pages;   /* pages in the page cache now */
    sqlite3_int64 cache_bytes;   /* bytes it uses now: pages and tables (not the allocator's overhead) */
    sqlite3_int64 cache_limit;   /* its bound in bytes: the URI parameter cache_kb= x 1024 */
    sqlite3_int64 cache_evictions; /* pages it dropped to make room for others */
    sqlite3_int64 staged_commits;  /* commits (landed) of more than stage_kb= of pages, uploaded in steps */
    sqlite3_int64 dead_leases;     /* leases taken over because their owner's connection was gone */
    sqlite3_int64 replica_pages;   /* pages_read a replica served (read_from=replicas, spread layout) */
    sqlite3_int64 replica_misses;  /* page reads a replica could not serve yet (lag): read again from the master */
} kvsql_redis_stats;

/* Fills out with the counters of the redis store of db's schema (NULL:
 * "main"). Returns SQLITE_OK, or SQLITE_NOTFOUND when it is not on the
 * redis VFS. */
KVSQL_EXPORT int kvsql_redis_stats_get(sqlite3 *db, const char *schema, kvsql_redis_stats *out);

#ifdef __cplusplus
}
#endif

#endif
