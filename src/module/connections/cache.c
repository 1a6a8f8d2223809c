/* cache.c - the module's open connections, one per (db number, key).
 * See cache.h. Connections live in a dictionary by id and in a list by
 * recency; both are process-wide because Redis runs commands one at a
 * time on its main thread, the only thread that touches them. A worker
 * thread (worker.c) uses a private connection of its own, outside both,
 * and touches only the counters here, atomically. */
#include "module/connections/cache.h"

#include "pcache.h"

#include "module/connections/budget.h"
#include "module/connections/guard.h"
#include "kvsql.h"
#include "module/store/store_keyspace.h"
#include "vfs.h"
#include "module/settings.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static RedisModuleDict *by_id;
static void evict_over_max(void);
static conn *lru_head, *lru_tail;
static long long count; /* connections open; at most kvsql.max-connections */
static cache_stats stats;
#define COUNT(field, n) __atomic_fetch_add(&stats.field, (n), __ATOMIC_RELAXED)
static unsigned long long settings_generation = 1;

void cache_init(RedisModuleCtx *ctx) {
    by_id = RedisModule_CreateDict(ctx);
}

void cache_max_changed(void) {
    evict_over_max();
}

void cache_settings_changed(void) {
    __atomic_fetch_add(&settings_generation, 1, __ATOMIC_RELAXED);
}

/* The longest string or BLOB a call may make: a quarter of its memory
 * budget (hex() of a value takes three times its size), within SQLite's
 * own bounds. Also bounds the work of one virtual machine step. */
static int max_value_bytes(void) {
    long long bytes = budget_call_memory_kb > 0 ? budget_call_memory_kb * 1024 / 4 : 1000000000;
    if (bytes < 1048576) bytes = 1048576;
    return bytes > 1000000000 ? 1000000000 : (int)bytes;
}

/* Settings of kvsql's storage, set once per connection. */
static const char *const connection_pragmas =
    "PRAGMA locking_mode=EXCLUSIVE;" /* we see every change: see cache.h */
    "PRAGMA temp_store=MEMORY;";

/* Lets SQLite see the new snapshot of a changed hash. In exclusive locking
 * mode the pager keeps its lock and its idea of the file's length, and
 * never looks at the file again. When the hash still has the length the
 * file had, dropping the page cache is enough (SQLITE_FCNTL_RESET_CACHE,
 * no SQL): the next transaction reads page 1 anew, and if the schema
 * cookie moved its statements read the schema again. Otherwise, for one
 * read transaction the connection goes back to normal mode: at its end
 * the pager unlocks, and at the next lock it reads the header (the VFS
 * shows a new change counter: src/vfs.c), drops its page cache and reads
 * the length anew. The locking_mode pragmas act when they are prepared;
 * reading schema_version only opens and ends a transaction on the old
 * snapshot. bench/PROFILE.md has what each way costs. */
static const char *const new_snapshot_sql =
    "PRAGMA locking_mode=NORMAL;"
    "PRAGMA schema_version;"
    "PRAGMA locking_mode=EXCLUSIVE;";

/* Whether a statement of db is running (it would hold a transaction). */
static int has_busy_stmt(sqlite3 *db) {
    for (sqlite3_stmt *st = sqlite3_next_stmt(db, NULL); st; st = sqlite3_next_stmt(db, st))
        if (sqlite3_stmt_busy(st)) return 1;
    return 0;
}

/* Whether the pager's length of the file still holds: no transaction is
 * open and the file (as the VFS shows it to SQLite) has as many pages of
 * the same size as the hash now. */
static int same_length(conn *c) {
    sqlite3_file *f = NULL;
    sqlite3_int64 bytes = 0;
    int psz = keyspace_store_page_size(c->store);
    if (!sqlite3_get_autocommit(c->db) || has_busy_stmt(c->db) || psz <= 0) return 0;
    if (sqlite3_file_control(c->db, "main", SQLITE_FCNTL_FILE_POINTER, &f) != SQLITE_OK || !f || !f->pMethods ||
        f->pMethods->xFileSize(f, &bytes) != SQLITE_OK)
        return 0;
    return bytes > 0 && bytes == (sqlite3_int64)keyspace_store_npages(c->store) * psz;
}

/* ---- what others wrote: the pages a new snapshot drops -------------------- */

/* More distinct pages named than this since a snapshot: drop every page. */
#define WRITTEN_MAX ((int)(sizeof(((conn *)0)->written) / sizeof(uint32_t)))

static int was_written(const conn *c, uint32_t page) {
    for (int i = 0; i < c->nwritten; i++)
        if (c->written[i] == page) return 1;
    return 0;
}

static void note_written(conn *c, const uint32_t *pages, int n) {
    for (int i = 0; i < n && !c->unknown; i++) {
        if (was_written(c, pages[i])) continue;
        if (c->nwritten == WRITTEN_MAX) c->unknown = 1;
        else c->written[c->nwritten++] = pages[i];
    }
    if (n < 0) c->unknown = 1;
}

/* Forgets what was written (a new snapshot was taken). */
static void clear_written(conn *c) {
    c->nwritten = c->unknown = 0;
}

/* Whether the pages noted since the last snapshot are known to be all
 * that changed: every change was an "hset" event paired with the filtered
 * command that made it (see "Filtered writes" below). */
static int written_known(const conn *c) {
    return !c->unknown && c->pcache;
}

/* Drops from SQLite's cache the pages the writes since the last snapshot
 * named, when they are known to be all that changed. Returns 0 when done,
 * -1 when every page must go. */
static int drop_written_pages(conn *c) {
    if (!written_known(c)) return -1;
    for (uint16_t i = 0; i < c->nwritten; i++)
        if (kvsql_pcache_forget(c->pcache, c->written[i] + 1) != 0) return -1; /* field i is page i+1 */
    return 0;
}

/* ---- filtered writes: which command an "hset" event comes from ----------- *
 *
 * The command filter (module.c) sees a command before Redis decides
 * whether it runs at all: a command refused (ACL, arity, OOM, a read-only
 * replica, a cluster redirection), queued in MULTI and discarded, or
 * postponed by CLIENT PAUSE passes it too, and an EXEC runs its queued
 * commands without passing it again. So neither counting nor "the latest
 * filtered command" can tell which command an event comes from. Identity
 * can: Redis 7.0's HSET, HMSET and HSETNX name the key of their "hset"
 * event by the very argument object the filter saw (c->argv[1], kept
 * through MULTI queueing and EXEC, scripts' redis.call and
 * RedisModule_Call alike). The filter keeps a reference to that object
 * with the pages the command names; holding it means no other command can
 * get the same object. An "hset" event whose key object is one of these
 * drops their pages; any other event, or a kept command that named
 * something else, drops every page. Kept commands that never run (refused,
 * discarded, HSETNX of an existing field) only wait here until
 * FILTERED_MAX newer ones push them out: never fewer pages dropped than
 * changed. */
#define FILTERED_MAX 64
#define FILTERED_PAGES 32

typedef struct {
    RedisModuleString *key; /* the command's key argument, a reference held; NULL: free slot */
    int n;                  /* pages named, or -1: drop every page */
    uint32_t pages[FILTERED_PAGES];
} filtered_write;

static filtered_write filtered[FILTERED_MAX];
static int filtered_next, filtered_count;

static void filtered_free(filtered_write *w) {
    RedisModule_FreeString(NULL, w->key);
    w->key = NULL;
    filtered_count--;
}

/* Bit d: a connection of db d was opened (db 63: of db 63 or above). */
static uint64_t dbs_used;
static int highest_db;
static conn *lookup(int dbid, const char *key, size_t len);

/* Whether any connection is open on a key named name, in any db. */
static int any_conn_named(const char *name, size_t len) {
    for (int db = 0; db <= highest_db; db++)
        if ((dbs_used & (1ull << (db < 63 ? db : 63))) && lookup(db, name, len)) return 1;
    return 0;
}

void cache_hset_filtered(RedisModuleString *key, const uint32_t *pages, int n) {
    size_t len;
    const char *name = RedisModule_StringPtrLen(key, &len);
    if (!any_conn_named(name, len)) return; /* an event of a key without a connection is ignored */
    filtered_write *w = &filtered[filtered_next];
    filtered_next = (filtered_next + 1) % FILTERED_MAX;
    if (w->key) filtered_free(w); /* the oldest: its event, if it ever comes, drops every page */
    RedisModule_RetainString(NULL, key);
    w->key = key;
    w->n = n < 0 || n > FILTERED_PAGES ? -1 : n;
    if (w->n > 0) memcpy(w->pages, pages, sizeof(uint32_t) * (size_t)w->n);
    filtered_count++;
}

void cache_other_filtered(RedisModuleString *arg1) {
    if (filtered_count == 0) return;
    for (int i = 0; i < FILTERED_MAX; i++)
        if (filtered[i].key == arg1) filtered[i].n = -1; /* it may make an "hset" event of its own */
}

/* Notes on c the pages of the kept commands whose key object is key, and
 * lets them go; when none is, every page must go. */
static void pair_hset_event(conn *c, RedisModuleString *key) {
    int found = 0;
    for (int i = 0; i < FILTERED_MAX && filtered_count > 0; i++) {
        filtered_write *w = &filtered[i];
        if (w->key != key) continue;
        found = 1;
        if (c) note_written(c, w->pages, w->n);
        filtered_free(w);
    }
    if (c && !found) c->unknown = 1;
}

static int take_new_snapshot(conn *c) {
    if (!c->changed) return SQLITE_OK;
    c->changed = 0;
    COUNT(snapshots_renewed, 1);
    int same = same_length(c);
    if (same && drop_written_pages(c) == 0) {
        COUNT(snapshots_pages_dropped, 1);
        clear_written(c);
        return SQLITE_OK;
    }
    clear_written(c);
    if (same && sqlite3_file_control(c->db, "main", SQLITE_FCNTL_RESET_CACHE, NULL) == SQLITE_OK) {
        COUNT(snapshots_reset_cache, 1);
        return SQLITE_OK;
    }
    int rc = guard_exec_trusted(c->db, &c->g, new_snapshot_sql);
    if (rc != SQLITE_OK) c->stale = 1; /* start afresh after this call */
    return rc;
}

int cache_apply_settings(conn *c) {
    int rc0 = take_new_snapshot(c);
    if (rc0 != SQLITE_OK) return rc0;
    unsigned long long generation = __atomic_load_n(&settings_generation, __ATOMIC_RELAXED);
    if (c->settings == generation) return SQLITE_OK;
    int rc = c->settings ? SQLITE_OK : guard_exec_trusted(c->db, &c->g, connection_pragmas);
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA cache_size=-%lld", cache_page_cache_kb);
    if (rc == SQLITE_OK) rc = guard_exec_trusted(c->db, &c->g, sql);
    if (rc != SQLITE_OK) return rc;
    long long sql_bytes = cache_max_sql_kb * 1024;
    sqlite3_limit(c->db, SQLITE_LIMIT_SQL_LENGTH, sql_bytes > 1000000000 ? 1000000000 : (int)sql_bytes);
    sqlite3_limit(c->db, SQLITE_LIMIT_LENGTH, max_value_bytes());
    c->settings = generation;
    return SQLITE_OK;
}

cache_stats cache_get_stats(void) {
    cache_stats out = stats; /* workers add to the counters: a read may miss their last call */
    out.connections = count;
    return out;
}

static conn *sweep_at; /* where the sweep goes on at its next step (NULL: the head) */

static void lru_unlink(conn *c) {
    if (sweep_at == c) sweep_at = c->next; /* closed or moved to the front: the sweep goes on after it */
    if (c->prev) c->prev->next = c->next;
    else lru_head = c->next;
    if (c->next) c->next->prev = c->prev;
    else lru_tail = c->prev;
    c->prev = c->next = NULL;
}

static void lru_push_front(conn *c) {
    c->next = lru_head;
    c->prev = NULL;
    if (lru_head) lru_head->prev = c;
    lru_head = c;
    if (!lru_tail) lru_tail = c;
}

static void drop_stmt(cached_stmt *s) {
    COUNT(statement_cache_bytes, -(long long)s->bytes);
    sqlite3_finalize(s->stmt);
    sqlite3_free(s->sql);
    memset(s, 0, sizeof(*s));
}

static void close_stmts(conn *c) {
    for (int i = 0; i < STMT_CACHE_SIZE; i++) drop_stmt(&c->stmts[i]);
}

/* A connection that cools down keeps only its most recently used
 * statement (1.4 to 1.8 KB each): the one its next call most likely runs
 * again (bench/PROFILE.md, "Memory of a cached small database"). */
static void keep_newest_stmt(conn *c) {
    cached_stmt *newest = NULL;
    for (int i = 0; i < STMT_CACHE_SIZE; i++)
        if (c->stmts[i].sql && (!newest || c->stmts[i].used > newest->used)) newest = &c->stmts[i];
    for (int i = 0; i < STMT_CACHE_SIZE; i++)
        if (c->stmts[i].sql && &c->stmts[i] != newest) drop_stmt(&c->stmts[i]);
}

/* ---- warm connections: the most recently used keep their page cache ---- */

/* Idle connections past the WARM_CONNECTIONS most recently used free their
 * page cache (about 5 KB a page) and their cached statements but the most
 * recently used (keep_newest_stmt): their next call reads its pages from
 * the hash again. The rest of the connection (schema, that statement)
 * stays, so a cold connection costs about 22 KB (docs/COMMANDS.md). */
#define WARM_CONNECTIONS 1000

static conn *warm_head, *warm_tail;
static long long warm_count;

static void warm_unlink(conn *c) {
    if (!c->warm) return;
    if (c->warm_prev) c->warm_prev->warm_next = c->warm_next;
    else warm_head = c->warm_next;
    if (c->warm_next) c->warm_next->warm_prev = c->warm_prev;
    else warm_tail = c->warm_prev;
    c->warm_prev = c->warm_next = NULL;
    c->warm = 0;
    warm_count--;
}

static void warm_push_front(conn *c) {
    c->warm_next = warm_head;
    c->warm_prev = NULL;
    if (warm_head) warm_head->warm_prev = c;
    warm_head = c;
    if (!warm_tail) warm_tail = c;
    c->warm = 1;
    warm_count++;
}

/* Whether every database's cached pages together take more than
 * kvsql.page-cache-total-mb (0: no total). */
static int over_total(void) {
    return cache_page_cache_total_mb > 0 && kvsql_pcache_bytes() > cache_page_cache_total_mb * 1024 * 1024;
}

/* The connection just released is warm; the least recently used cool
 * down while more than WARM_CONNECTIONS are warm or the pages cached pass
 * the total (c itself keeps its pages: it is bounded by
 * kvsql.page-cache-kb). */
static void warm_up(conn *c) {
    warm_unlink(c);
    warm_push_front(c);
    while (warm_count > WARM_CONNECTIONS || (warm_tail != c && over_total())) {
        conn *cold = warm_tail;
        warm_unlink(cold);
        if (cold->in_use) continue; /* warm again at its release */
        keep_newest_stmt(cold);
        sqlite3_db_release_memory(cold->db);
    }
}

static void conn_close(conn *c) {
    RedisModule_DictDelC(by_id, c->id, c->idlen, NULL);
    lru_unlink(c);
    warm_unlink(c);
    close_stmts(c);
    sqlite3_close(c->db);
    kvsql_store_free(c->store);
    sqlite3_free(c->id);
    sqlite3_free(c);
    count--;
}

static int sweeping; /* cache_sweep() looks at a key (an expiry may fire events): close nothing under it */

/* Closes now, or when the running command (or sweep step) ends. */
static void conn_forget(conn *c) {
    if (c->in_use || sweeping) c->stale = 1;
    else conn_close(c);
}

static void evict_over_max(void) {
    conn *c = lru_tail;
    while (count > settings_max_connections && c) {
        conn *prev = c->prev;
        if (!c->in_use) conn_close(c);
        c = prev;
    }
}

static size_t make_id(char *out, size_t cap, int dbid, const char *key, size_t len) {
    if (len + 4 > cap) return 0;
    uint32_t d = (uint32_t)dbid;
    out[0] = (char)(d >> 24), out[1] = (char)(d >> 16), out[2] = (char)(d >> 8), out[3] = (char)d;
    memcpy(out + 4, key, len);
    return len + 4;
}

static conn *lookup(int dbid, const char *key, size_t len) {
    char buf[1024];
    size_t n = make_id(buf, sizeof(buf), dbid, key, len);
    if (n == 0) { /* long key names: build the id on the heap */
        char *id = sqlite3_malloc64(len + 4);
        if (!id) return NULL;
        n = make_id(id, len + 4, dbid, key, len);
        conn *c = RedisModule_DictGetC(by_id, id, n, NULL);
        sqlite3_free(id);
        return c;
    }
    return RedisModule_DictGetC(by_id, buf, n, NULL);
}

/* SQLite's default lookaside (small allocations without malloc) is 120 KB
 * per connection, as much as ten small databases. Builds without lookaside
 * (Debian's: SQLITE_OMIT_LOOKASIDE) ignore this; elsewhere 4 KB of slots
 * keep most of its speed. */
#define LOOKASIDE_SLOT_BYTES 128
#define LOOKASIDE_SLOTS 32

static int shrink_lookaside(sqlite3 *db) {
    return sqlite3_db_config(db, SQLITE_DBCONFIG_LOOKASIDE, NULL, LOOKASIDE_SLOT_BYTES, LOOKASIDE_SLOTS);
}

/* A connection on st with its guard, in no list; NULL with err set on
 * failure. */
static conn *conn_new(kvsql_store *st, char *err, size_t errlen) {
    conn *c = sqlite3_malloc(sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "SQLITE_NOMEM kvsql: out of memory");
        return NULL;
    }
    memset(c, 0, sizeof(*c));
    c->g.tick = budget_tick; /* the authorizer bounds statement preparation */
    c->store = st;
    kvsql_pcache_watch(&c->pcache); /* its database's page cache, made as it opens */
    int rc = kvsql_open(st, &c->db);
    kvsql_pcache_watch(NULL);
    if (rc == SQLITE_OK) rc = shrink_lookaside(c->db);
    if (rc == SQLITE_OK) rc = guard_install(c->db, &c->g); /* settings: cache_apply_settings() */
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "ERR kvsql: cannot open the database: %s",
                 c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        sqlite3_close(c->db);
        sqlite3_free(c);
        return NULL;
    }
    return c;
}

conn *cache_open_private(kvsql_store *st, char *err, size_t errlen) {
    conn *c = conn_new(st, err, errlen);
    if (c) c->private_conn = 1;
    return c;
}

void cache_close_private(conn *c) {
    if (!c) return;
    close_stmts(c);
    sqlite3_close(c->db);
    sqlite3_free(c);
}

static void note_db(int dbid) {
    dbs_used |= 1ull << (dbid < 63 ? dbid : 63);
    if (dbid > highest_db) highest_db = dbid;
}

/* A new connection on the attached store, cached; NULL with err set on
 * failure. */
static conn *conn_open(kvsql_store *st, int dbid, const char *key, size_t len, char *err, size_t errlen) {
    char *id = sqlite3_malloc64(len + 4);
    conn *c = id ? conn_new(st, err, errlen) : NULL;
    if (!c) {
        if (!id) snprintf(err, errlen, "SQLITE_NOMEM kvsql: out of memory");
        sqlite3_free(id);
        return NULL;
    }
    c->id = id;
    c->idlen = make_id(id, len + 4, dbid, key, len);
    c->dbid = dbid;
    note_db(dbid);
    RedisModule_DictSetC(by_id, c->id, c->idlen, c);
    lru_push_front(c);
    count++;
    stats.connections_opened++;
    return c;
}

/* Whether a connection whose hash changed in place can go on: the hash is
 * still a kvsql database with the same page size. Otherwise it is closed
 * and false returned (the caller opens a new one). After a check that
 * passed, the store stays attached: the copy of page 1 the check read
 * serves SQLite's read of it in this call. */
static int still_usable(conn *c, RedisModuleCtx *ctx, RedisModuleKey *key, RedisModuleString *keyname) {
    int psz = keyspace_store_page_size(c->store);
    int hash = key && RedisModule_KeyType(key) == REDISMODULE_KEYTYPE_HASH;
    /* Only HSETs of known page fields, none of page 1, and the same length:
     * the same fields, and page 1 as checked before. */
    if (hash && written_known(c) && !was_written(c, 0) && keyspace_store_matches(c->store, key)) return 1;
    keyspace_store_attach(c->store, ctx, key, keyname, 1);
    int ok = hash && keyspace_store_check(c->store) == 0 && keyspace_store_page_size(c->store) == psz;
    if (!ok) {
        keyspace_store_detach(c->store);
        conn_close(c);
    }
    return ok;
}

conn *cache_acquire(RedisModuleCtx *ctx, RedisModuleString *keyname, RedisModuleKey *key, int readonly,
                    char *err, size_t errlen) {
    size_t len;
    const char *k = RedisModule_StringPtrLen(keyname, &len);
    int dbid = RedisModule_GetSelectedDb(ctx);
    conn *c = lookup(dbid, k, len);
    if (c && c->changed && !still_usable(c, ctx, key, keyname)) c = NULL;
    if (c && !keyspace_store_matches(c->store, key)) { /* changed with no event */
        conn_close(c);
        c = NULL;
    }
    if (c) {
        lru_unlink(c);
        lru_push_front(c);
        keyspace_store_attach(c->store, ctx, key, keyname, readonly);
    } else {
        kvsql_store *st = keyspace_store_new();
        if (!st) {
            snprintf(err, errlen, "SQLITE_NOMEM kvsql: out of memory");
            return NULL;
        }
        keyspace_store_attach(st, ctx, key, keyname, readonly);
        if (keyspace_store_check(st) != 0) {
            snprintf(err, errlen, "SQLITE_NOTADB key '%.*s': %s", (int)(len > 200 ? 200 : len), k, kvsql_store_errmsg(st));
            kvsql_store_free(st);
            return NULL;
        }
        if (!(c = conn_open(st, dbid, k, len, err, errlen))) {
            kvsql_store_free(st);
            return NULL;
        }
    }
    c->in_use = 1;
    return c;
}

void cache_release(conn *c) {
    keyspace_store_detach(c->store);
    sqlite3_file_control(c->db, "main", KVSQL_FCNTL_TRIM, NULL); /* idle: costs about its pages */
    c->in_use = 0;
    if (c->stale) {
        conn_close(c);
        return;
    }
    warm_up(c);
    evict_over_max();
}

static int only_space_left(const char *p, const char *end) {
    for (; p < end; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != ';') return 0;
    return 1;
}

static cached_stmt *find_cached(conn *c, const char *sql, size_t len) {
    for (int i = 0; i < STMT_CACHE_SIZE; i++) {
        cached_stmt *s = &c->stmts[i];
        if (s->sql && s->len == len && memcmp(s->sql, sql, len) == 0) return s;
    }
    return NULL;
}

/* Keeps stmt for the next call with the same SQL, if it is small enough
 * (STMT_CACHE_MAX_BYTES); otherwise it is finalized after use. */
static void remember(conn *c, const char *sql, size_t len, sqlite3_stmt *stmt) {
    size_t bytes = len + 1 + (size_t)sqlite3_stmt_status(stmt, SQLITE_STMTSTATUS_MEMUSED, 0);
    if (bytes > STMT_CACHE_MAX_BYTES) return;
    cached_stmt *slot = &c->stmts[0];
    for (int i = 0; i < STMT_CACHE_SIZE; i++) {
        if (!c->stmts[i].sql) {
            slot = &c->stmts[i];
            break;
        }
        if (c->stmts[i].used < slot->used) slot = &c->stmts[i];
    }
    char *copy = sqlite3_malloc64(len + 1);
    if (!copy) return; /* not cached: finalized after use */
    memcpy(copy, sql, len);
    copy[len] = 0;
    sqlite3_finalize(slot->stmt);
    sqlite3_free(slot->sql);
    COUNT(statement_cache_bytes, (long long)bytes - (long long)slot->bytes);
    *slot = (cached_stmt){.sql = copy, .stmt = stmt, .used = ++c->stmt_clock, .len = (uint32_t)len,
                          .bytes = (uint32_t)bytes};
}

int cache_prepare(conn *c, const char *sql, size_t len, sqlite3_stmt **stmt, const char **tail) {
    cached_stmt *s = find_cached(c, sql, len);
    if (s) {
        s->used = ++c->stmt_clock;
        COUNT(statement_cache_hits, 1);
        *stmt = s->stmt;
        *tail = sql + len;
        return SQLITE_OK;
    }
    unsigned notes = c->g.notes, temp_notes = c->g.temp_notes;
    int rc = sqlite3_prepare_v3(c->db, sql, (int)len, SQLITE_PREPARE_PERSISTENT, stmt, tail);
    COUNT(statements_prepared, 1);
    /* A statement that changes a setting or writes TEMP objects is prepared
     * anew each time, so that the guard notes it each time (guard.h). A
     * private connection lives for one call: it keeps nothing. */
    if (rc == SQLITE_OK && *stmt && !c->private_conn && c->g.notes == notes && c->g.temp_notes == temp_notes &&
        only_space_left(*tail, sql + len))
        remember(c, sql, len, *stmt);
    return rc;
}

void cache_finish_stmt(conn *c, sqlite3_stmt *stmt) {
    for (int i = 0; i < STMT_CACHE_SIZE; i++) {
        if (c->stmts[i].stmt == stmt) {
            sqlite3_reset(stmt);
            sqlite3_clear_bindings(stmt);
            return;
        }
    }
    sqlite3_finalize(stmt);
}

void cache_forget_key(int dbid, const char *key, size_t len) {
    conn *c = lookup(dbid, key, len);
    if (c) conn_forget(c);
}

/* Marks c as changed behind it: a new snapshot at its next call. */
static void mark_changed(conn *c) {
    keyspace_store_changed(c->store);
    c->changed = 1;
}

void cache_key_changed(int dbid, const char *key, size_t len) {
    conn *c = lookup(dbid, key, len);
    if (!c) return;
    mark_changed(c);
    c->unknown = 1;
}

void cache_key_hset(int dbid, RedisModuleString *key) {
    size_t len;
    const char *name = RedisModule_StringPtrLen(key, &len);
    conn *c = lookup(dbid, name, len);
    if (c) mark_changed(c);
    pair_hset_event(c, key);
}

void cache_forget_db(int dbid) {
    conn *c = lru_head;
    while (c) {
        conn *next = c->next;
        if (dbid < 0 || c->dbid == dbid) conn_forget(c);
        c = next;
    }
}

int cache_is_empty(void) {
    return count == 0;
}

void cache_forget_all(void) {
    cache_forget_db(-1);
}

/* Whether c's key still has the length its store last saw. */
static int key_matches(RedisModuleCtx *ctx, conn *c) {
    RedisModuleString *name = RedisModule_CreateString(ctx, c->id + 4, c->idlen - 4);
    RedisModule_SelectDb(ctx, c->dbid);
    RedisModuleKey *key = RedisModule_OpenKey(ctx, name, REDISMODULE_READ | REDISMODULE_OPEN_KEY_NOTOUCH);
    int same = keyspace_store_matches(c->store, key);
    if (key) RedisModule_CloseKey(key);
    RedisModule_FreeString(ctx, name);
    return same;
}

/* ---- the sweep: connections whose hash changed without an event ----------
 * Each step checks connections in list order from where the last step
 * stopped, for at most SWEEP_STEP_US of the main thread (the clock read
 * after every connection: a check costs about 1,000 instructions, but on
 * memory idle for seconds it has taken up to 260 us here, and 16 such
 * checks between two clock reads made a step of 2.5 ms; bench/PROFILE.md),
 * and closes those whose hash changed. Every command checks its own connection anyway (key_matches'
 * test runs at each call): the sweep only gives back the memory of
 * connections nobody calls any more, so it may take several steps to go
 * round. cache_sweep_max_step_us() is the longest step in the main
 * thread's CPU time (a step the machine interrupted took longer by the
 * clock, but did not hold Redis longer). */
#define SWEEP_STEP_US 500

static long long sweep_max_step_us;

static long long clock_us(clockid_t which) {
    struct timespec ts;
    clock_gettime(which, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static long long now_us(void) {
    return clock_us(CLOCK_MONOTONIC);
}

/* The main thread's CPU time: what a step costs Redis, without the time
 * the machine gave other processes meanwhile. */
static long long cpu_us(void) {
    return clock_us(CLOCK_THREAD_CPUTIME_ID);
}

long long cache_sweep_max_step_us(void) {
    return sweep_max_step_us;
}

void cache_sweep(RedisModuleCtx *ctx) {
    long long cpu = cpu_us(), start = now_us(), now = start;
    conn *c = sweep_at ? sweep_at : lru_head;
    while (c && now - start < SWEEP_STEP_US) {
        sweeping = 1;
        if (!c->in_use && !c->stale && !c->changed && !key_matches(ctx, c)) c->stale = 1;
        sweeping = 0;
        conn *next = c->next;
        if (c->stale && !c->in_use) conn_close(c);
        c = next;
        now = now_us();
    }
    sweep_at = c;
    cpu = cpu_us() - cpu;
    if (cpu > sweep_max_step_us) sweep_max_step_us = cpu;
}
