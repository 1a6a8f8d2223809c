/* cache.h - open SQLite connections of the module, one per database key.
 *
 * Opening a connection and parsing a schema costs far more than a point
 * query, so a connection stays open between commands, with its prepared
 * statements, until the key is replaced or removed behind its back (a
 * keyspace or server event: module.c calls cache_forget_*), it is evicted
 * as least recently used, or the module is asked to drop it. A change to
 * the hash's fields only marks it changed (cache_key_changed). Only the
 * most recently used connections keep their page cache between commands
 * (cache.c, WARM_CONNECTIONS). Used by exec.c and module.c. */
#ifndef KVSQL_CACHE_H
#define KVSQL_CACHE_H

#include "module/connections/guard.h"
#include "module/redis_api.h"
#include "store.h"

#include <sqlite3.h>
#include <stdint.h>

#define STMT_CACHE_SIZE 16
/* A statement is kept only if its SQL text and compiled form together take
 * at most this many bytes, so the cache of a connection holds at most
 * STMT_CACHE_SIZE times this (1 MiB). */
#define STMT_CACHE_MAX_BYTES (64 * 1024)

typedef struct cached_stmt {
    char *sql; /* NULL: free slot */
    sqlite3_stmt *stmt;
    unsigned long long used; /* for least-recently-used replacement */
    uint32_t len;            /* of sql (at most kvsql.max-sql-kb) */
    uint32_t bytes;          /* SQL text and compiled statement (at most STMT_CACHE_MAX_BYTES) */
} cached_stmt;

typedef struct conn {
    sqlite3 *db;
    kvsql_store *store;
    char *id; /* dictionary key: 4-byte db number, then the key name */
    size_t idlen;
    int dbid;
    int in_use; /* a command is running on it */
    int stale;  /* close at the end of the running command */
    int changed; /* the hash changed behind it: new snapshot at the next call */
    int private_conn; /* a worker's connection for one call (cache_open_private) */
    int has_temp;     /* a call wrote TEMP objects: they live here, so calls on it stay on the main thread */
    unsigned long long settings; /* the settings generation applied (0: none yet) */
    guard g;                     /* what the running call changed (guard.h) */
    cached_stmt stmts[STMT_CACHE_SIZE];
    unsigned long long stmt_clock;
    struct conn *prev, *next; /* most recently used first */
    int warm;                           /* in the warm list: keeps its page cache while idle */
    struct conn *warm_prev, *warm_next; /* most recently released first */
    /* Since its last snapshot: what others wrote to its hash (see
     * cache_key_hset), so that the next snapshot drops only those
     * pages of SQLite's cache. */
    void *pcache;         /* SQLite's page cache of its database (src/pcache.h), or NULL */
    uint32_t written[8];  /* the distinct page indexes the paired writes named, nwritten of them */
    uint16_t nwritten;
    uint16_t unknown;     /* some change it cannot name pages for: drop every page */
} conn;

void cache_init(RedisModuleCtx *ctx);

/* The connection for keyname in the context's db, attached to the open
 * key, opened if needed. On failure returns NULL with an error reply
 * text in err ("ERR ..."). Pair with cache_release(). */
conn *cache_acquire(RedisModuleCtx *ctx, RedisModuleString *keyname, RedisModuleKey *key, int readonly,
                    char *err, size_t errlen);
void cache_release(conn *c);

/* A connection of a worker thread (worker.c) on store st for one call: with
 * the guard, in no list, caching no statements. NULL with err set on
 * failure. Any thread; close it with cache_close_private(), which does not
 * free the store. */
conn *cache_open_private(kvsql_store *st, char *err, size_t errlen);
void cache_close_private(conn *c);

/* A statement for sql, prepared or from the cache; *tail as in
 * sqlite3_prepare. Pass it to cache_finish_stmt() when done. */
int cache_prepare(conn *c, const char *sql, size_t len, sqlite3_stmt **stmt, const char **tail);
void cache_finish_stmt(conn *c, sqlite3_stmt *stmt);

/* Drop what may no longer match the keyspace. */
void cache_forget_key(int dbid, const char *key, size_t len);
/* The hash at key changed in place (a hash-class event: HSET, HDEL, ...
 * by a user, a replicated write, a library client's commit): its
 * connection stays open, with its parsed schema and statements, and takes
 * a new snapshot at its next call, where SQLite drops the pages that
 * changed and re-reads the schema only if the schema cookie moved.
 * cache_key_changed: a change whose pages are not known (any event but
 * "hset", a write of our own made elsewhere): every page goes.
 * cache_key_hset: an "hset" event, whose key object names the command
 * that made it (cache.c, "filtered writes"): the pages that command named
 * go, or every page when it was not seen. */
void cache_key_changed(int dbid, const char *key, size_t len);
void cache_key_hset(int dbid, RedisModuleString *key);
/* module.c's command filter sees every command before Redis decides
 * whether it runs (a client's, the master link's, a script's redis.call,
 * a module's RedisModule_Call). cache_hset_filtered: an HSET, HMSET or
 * HSETNX of key naming n page indexes (n < 0: it names something else or
 * too many); it keeps a reference to key until that command's "hset" event
 * or until newer ones push it out. cache_other_filtered: any other command,
 * by its first argument (a command whose key object is a kept one may make
 * an "hset" event naming other pages). Never fewer pages dropped than
 * changed, for commands that run and commands that never do. */
void cache_hset_filtered(RedisModuleString *key, const uint32_t *pages, int n);
void cache_other_filtered(RedisModuleString *arg1);
void cache_forget_db(int dbid); /* -1: every db */
void cache_forget_all(void);
int cache_is_empty(void);
/* One bounded step (at most about 0.5 ms) of the walk that closes
 * connections whose key changed without an event; each step goes on where
 * the last stopped. module.c runs it from a timer, ten times a second.
 * cache_sweep_max_step_us: its longest step so far (INFO). */
void cache_sweep(RedisModuleCtx *ctx);
long long cache_sweep_max_step_us(void);

/* kvsql.max-connections changed: closes the least recently used
 * connections over it. */
void cache_max_changed(void);

/* Connection settings come from the configs (settings.h):
 * kvsql.page-cache-kb and kvsql.max-sql-kb; the longest string or BLOB
 * follows kvsql.call-memory-kb. After a change, settings.c calls
 * cache_settings_changed(): each connection takes the new settings at the
 * start of its next call, so no SQL ever runs outside a call.
 * kvsql.page-cache-total-mb: at each release, the least recently used
 * connections free their pages while all caches together hold more. */
/* TEMP objects a connection may keep from one call to the next: a call
 * that leaves more closes it (guard_call_end). */
#define CACHE_TEMP_KEEP_BYTES (2 * 1024 * 1024)
void cache_settings_changed(void);
/* Applies the current settings to c if it lacks them. Run inside the
 * call's budget: it may read the schema. Returns an SQLite code. */
int cache_apply_settings(conn *c);

typedef struct cache_stats {
    long long connections;       /* open now */
    long long connections_opened; /* since the module loaded */
    long long statements_prepared;
    long long statement_cache_hits;
    long long statement_cache_bytes; /* held by every connection's statement cache */
    long long snapshots_renewed; /* calls that found their hash changed in place (cache_key_changed) */
    long long snapshots_reset_cache; /* of those, renewed by dropping the page cache alone */
    long long snapshots_pages_dropped; /* of those, renewed by dropping just the pages written */
} cache_stats;
cache_stats cache_get_stats(void);

#endif
