/* extension.c - libkvsql.so's way in: the `redis` VFS and its SQL
 * functions.
 *
 * SQLite calls sqlite3_kvsql_init when a program loads the library as an
 * extension (`.load libkvsql` in the sqlite3 shell, load_extension() in
 * Python); a C program calls kvsql_register_redis() (include/kvsql.h).
 * Either registers the VFS "redis" (src/vfs.c on client/hash/store_redis.c):
 * each database file it opens gets its own store, configured from the
 * file's URI parameters over the defaults (KVSQL_DEFAULT, KVSQL_PASSWORD;
 * client/config.c; a parameter neither kvsql nor SQLite knows is refused,
 * and a name without redis= opened by an ATTACH or VACUUM INTO takes the
 * parameters of the database it is attached to first). Every connection
 * opened afterwards gets the SQL functions kvsql_error() and kvsql_stats(),
 * and, when its main database is on the redis VFS, the hooks of
 * client/hooks.c; one with an empty name on the redis VFS (SQLite's
 * private temporary database) is refused.
 *
 * libkvsql.so is built from these sources with -DKVSQL_EXTENSION
 * (src/sqlite.h): it reaches SQLite only through the routines table of the
 * SQLite that loads it (sqlite3_api, set here by kvsql_api_bind), so the
 * VFS belongs to the host's SQLite whichever copy that is. A C program that
 * calls kvsql_register_redis(), and a program started with libkvsql.so in
 * LD_PRELOAD, hand no table: client/preload.c takes it from the SQLite
 * they call. The kvsql tool and the tests link the same sources plainly
 * (-lsqlite3). */
#include "client/config.h"
#include "client/hooks.h"
#include "client/hash/store_redis.h"
#include "client/spread/store_spread.h"
#include "kvsql.h"
#include "sqlite.h"
#include "vfs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef KVSQL_EXTENSION
#include <pthread.h>

SQLITE_EXTENSION_INIT1

/* ---- the host SQLite --------------------------------------------------------- */

static void *no_preupdate_hook(sqlite3 *db, void (*f)(void *, sqlite3 *, int, const char *, const char *,
                                                      sqlite3_int64, sqlite3_int64),
                               void *arg) {
    (void)db, (void)f, (void)arg;
    return NULL;
}
static int no_preupdate_value(sqlite3 *db, int i, sqlite3_value **v) {
    (void)db, (void)i;
    *v = NULL;
    return SQLITE_MISUSE;
}
static int no_preupdate_int(sqlite3 *db) {
    (void)db;
    return 0;
}

kvsql_preupdate_routines kvsql_preupdate = {no_preupdate_hook, no_preupdate_value, no_preupdate_value,
                                            no_preupdate_int, no_preupdate_int, 0};

/* The preupdate routines are not in the extension table: taken from the
 * object of the host SQLite when it exports them. */
static void find_preupdate(const sqlite3_api_routines *api) {
    const void *at = (const void *)api->libversion_number;
    kvsql_preupdate_routines p = {kvsql_symbol_beside(at, "sqlite3_preupdate_hook"),
                                  kvsql_symbol_beside(at, "sqlite3_preupdate_old"),
                                  kvsql_symbol_beside(at, "sqlite3_preupdate_new"),
                                  kvsql_symbol_beside(at, "sqlite3_preupdate_count"),
                                  kvsql_symbol_beside(at, "sqlite3_preupdate_depth"), 1};
    if (p.hook && p.old && p.new_ && p.count && p.depth) kvsql_preupdate = p;
}

/* The oldest SQLite whose table has every routine kvsql calls
 * (sqlite3_changes64). */
#define OLDEST_SQLITE 3037000

int kvsql_api_bind(const sqlite3_api_routines *api, char *err, size_t errlen) {
    static pthread_mutex_t mx = PTHREAD_MUTEX_INITIALIZER;
    int rc = SQLITE_OK;
    pthread_mutex_lock(&mx);
    if (sqlite3_api && sqlite3_api != api) {
        snprintf(err, errlen, "libkvsql serves another SQLite of this process already");
        rc = SQLITE_ERROR;
    } else if (!sqlite3_api && api->libversion_number() < OLDEST_SQLITE) {
        snprintf(err, errlen, "libkvsql needs SQLite %d.%d or newer; this one is %s", OLDEST_SQLITE / 1000000,
                 OLDEST_SQLITE / 1000 % 1000, api->libversion());
        rc = SQLITE_ERROR;
    } else if (!sqlite3_api) {
        find_preupdate(api);
        sqlite3_api = api;
    }
    pthread_mutex_unlock(&mx);
    return rc;
}
#endif

/* The server a database name without redis= goes to: KVSQL_DEFAULT, read
 * once at registration, else the built-in default. */
static kvsql_redis_config default_config;
static int default_config_ready;

static const char *uri_param(void *name, const char *param) {
    return sqlite3_uri_parameter((const char *)name, param);
}

/* -1 with why in err when name's URI has a parameter that neither kvsql
 * nor SQLite knows (a typo such as wiat=1 would silently do nothing). */
static int refuse_unknown_params(const char *name, char *err, size_t errlen) {
    const char *p;
    for (int i = 0; (p = sqlite3_uri_key(name, i)) != NULL; i++) {
        if (kvsql_redis_config_known_param(p)) continue;
        snprintf(err, errlen, "unknown URI parameter %.100s= (docs/LIBRARY.md lists kvsql's)", p);
        return -1;
    }
    return 0;
}

/* When name names no server (no redis=) and is opened by an ATTACH or a
 * VACUUM INTO that a redis connection runs on this thread: that
 * connection's main database name, whose parameters (its server, user,
 * password, db, ...) come first. A name without a server goes to the
 * server of the database it is attached to, never elsewhere. */
static const char *attaching_from(const char *name) {
    sqlite3 *db;
    sqlite3_stmt *stmt;
    if (sqlite3_uri_parameter(name, "redis") || !kvsql_hooks_running(&db, &stmt)) return NULL;
    sqlite3_stmt *s = sqlite3_next_stmt(db, NULL);
    while (s && s != stmt) s = sqlite3_next_stmt(db, s);
    if (!s || !sqlite3_stmt_busy(s)) return NULL; /* ended unseen (the trace was replaced): not running */
    const char *sql = sqlite3_sql(stmt);
    while (sql && (*sql == ' ' || *sql == '\t' || *sql == '\n' || *sql == '\r')) sql++;
    if (!sql || (sqlite3_strnicmp(sql, "ATTACH", 6) != 0 && sqlite3_strnicmp(sql, "VACUUM", 6) != 0)) return NULL;
    const char *main_name = sqlite3_db_filename(db, "main");
    return main_name && *main_name ? main_name : NULL;
}

/* The VFS opener: a store for the main database file `name` (the key). */
static int open_redis_store(const char *name, kvsql_store **out) {
    sqlite3_mutex *mx = sqlite3_mutex_alloc(SQLITE_MUTEX_STATIC_VFS2);
    sqlite3_mutex_enter(mx);
    kvsql_redis_config cfg = default_config; /* a registration may be rewriting it */
    sqlite3_mutex_leave(mx);
    char err[400];
    *out = NULL;
    if (!cfg.password[0] && getenv("KVSQL_PASSWORD"))
        snprintf(cfg.password, sizeof(cfg.password), "%s", getenv("KVSQL_PASSWORD"));
    const char *main_name = attaching_from(name);
    if (refuse_unknown_params(name, err, sizeof(err)) != 0 ||
        (main_name && kvsql_redis_config_apply(&cfg, uri_param, (void *)main_name, err, sizeof(err)) != 0) ||
        kvsql_redis_config_apply(&cfg, uri_param, (void *)name, err, sizeof(err)) != 0) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s: %s", name, err);
        kvsql_vfs_set_errmsg(msg);
        return SQLITE_CANTOPEN;
    }
    if (!*name) {
        kvsql_vfs_set_errmsg("the redis VFS needs a key: file:KEY?vfs=redis");
        return SQLITE_CANTOPEN;
    }
    if (strcmp(cfg.layout, "spread") == 0) return kvsql_spread_store_new(name, &cfg, out);
    return kvsql_redis_store_new(name, &cfg, out);
}

/* ---- SQL functions ------------------------------------------------------- */

/* The store behind a schema of db, or NULL. */
static kvsql_store *store_of(sqlite3 *db, const char *schema) {
    kvsql_fcntl_store fs = {0, 0};
    if (sqlite3_file_control(db, schema ? schema : "main", KVSQL_FCNTL_STORE, &fs) != SQLITE_OK) return NULL;
    return fs.store;
}

const char *kvsql_errmsg(sqlite3 *db) {
#ifdef KVSQL_EXTENSION
    if (!sqlite3_api) return kvsql_vfs_errmsg();
#endif
    kvsql_store *s = db ? store_of(db, "main") : NULL;
    const char *msg = s ? kvsql_store_errmsg(s) : "";
    return msg && msg[0] ? msg : kvsql_vfs_errmsg();
}

int kvsql_redis_stats_get(sqlite3 *db, const char *schema, kvsql_redis_stats *out) {
#ifdef KVSQL_EXTENSION
    if (!sqlite3_api) return SQLITE_MISUSE;
#endif
    kvsql_store *s = store_of(db, schema);
    return s && (kvsql_redis_store_stats(s, out) == 0 || kvsql_spread_store_stats(s, out) == 0) ? SQLITE_OK
                                                                                               : SQLITE_NOTFOUND;
}

/* kvsql_gc([schema]): collects the page copies of a spread database that
 * no reader can need (client/spread/store_spread.c); the number deleted. */
static void sql_gc(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    const char *schema = argc > 0 ? (const char *)sqlite3_value_text(argv[0]) : "main";
    kvsql_store *s = store_of(sqlite3_context_db_handle(ctx), schema);
    if (!kvsql_spread_store_is(s)) {
        sqlite3_result_error(ctx, "kvsql_gc(): that database is not of layout spread", -1);
        return;
    }
    long long removed = 0;
    if (kvsql_spread_store_gc(s, 1000, &removed) != SQLITE_OK) {
        char *msg = sqlite3_mprintf("kvsql_gc(): %s", s->m->errmsg(s));
        sqlite3_result_error(ctx, msg ? msg : "kvsql_gc(): failed", -1);
        sqlite3_free(msg);
        return;
    }
    sqlite3_result_int64(ctx, removed);
}

/* kvsql_error(): the last store error in words, or ''. */
static void sql_error(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    (void)argc;
    (void)argv;
    sqlite3_result_text(ctx, kvsql_errmsg(sqlite3_context_db_handle(ctx)), -1, SQLITE_TRANSIENT);
}

/* kvsql_version([schema]): the version of the snapshot the connection's
 * open read transaction reads, or NULL outside one. */
static void sql_version(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    const char *schema = argc > 0 ? (const char *)sqlite3_value_text(argv[0]) : "main";
    kvsql_fcntl_store fs = {0, 0};
    if (!schema ||
        sqlite3_file_control(sqlite3_context_db_handle(ctx), schema, KVSQL_FCNTL_STORE, &fs) != SQLITE_OK) {
        sqlite3_result_error(ctx, "kvsql_version(): that database is not on a kvsql VFS", -1);
        return;
    }
    if (fs.txn->level == KVSQL_LOCK_NONE) sqlite3_result_null(ctx);
    else sqlite3_result_int64(ctx, (sqlite3_int64)fs.txn->version);
}

/* kvsql_stats([schema]): the counters of a redis database as JSON. */
static void sql_stats(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    const char *schema = argc > 0 ? (const char *)sqlite3_value_text(argv[0]) : "main";
    kvsql_redis_stats st;
    if (kvsql_redis_stats_get(sqlite3_context_db_handle(ctx), schema, &st) != SQLITE_OK) {
        sqlite3_result_error(ctx, "kvsql_stats(): that database is not on the redis VFS", -1);
        return;
    }
    char *json = sqlite3_mprintf(
        "{\"round_trips\":%lld,\"connects\":%lld,\"begins\":%lld,\"reads\":%lld,\"pages_read\":%lld,"
        "\"locks\":%lld,\"commits\":%lld,\"pages_written\":%lld,\"busy\":%lld,\"stale\":%lld,"
        "\"script_loads\":%lld,\"end_errors\":%lld,\"redirects\":%lld,\"wait_short\":%lld,"
        "\"log_begins\":%lld,\"log_pages\":%lld,"
        "\"cache_pages\":%lld,\"cache_bytes\":%lld,\"cache_limit\":%lld,\"cache_evictions\":%lld,"
        "\"staged_commits\":%lld,\"dead_leases\":%lld,\"replica_pages\":%lld,\"replica_misses\":%lld}",
        st.round_trips, st.connects, st.begins, st.reads, st.pages_read, st.locks, st.commits, st.pages_written,
        st.busy, st.stale, st.script_loads, st.end_errors, st.redirects, st.wait_short, st.log_begins,
        st.log_pages, st.cache_pages, st.cache_bytes, st.cache_limit, st.cache_evictions,
        st.staged_commits, st.dead_leases, st.replica_pages, st.replica_misses);
    if (!json) sqlite3_result_error_nomem(ctx);
    else sqlite3_result_text(ctx, json, -1, sqlite3_free);
}

/* An empty name on the redis VFS (file:?vfs=redis) is SQLite's private
 * temporary database, which never reaches the VFS until it spills: its
 * writes would be acknowledged and vanish. Refused at open (":memory:",
 * whose name is empty too, stays SQLite's memory database). */
static int refuse_keyless(sqlite3 *db, char **pzErrMsg) {
    sqlite3_vfs *vfs = NULL;
    const char *name = sqlite3_db_filename(db, "main");
    if ((name && *name) || sqlite3_file_control(db, "main", SQLITE_FCNTL_VFS_POINTER, &vfs) != SQLITE_OK || !vfs ||
        strcmp(vfs->zName, "redis") != 0)
        return SQLITE_OK;
    if (sqlite3_vfs_find(NULL) == vfs) /* redis is the default (KVSQL_DEFAULT): the program asked for a temporary */
        return SQLITE_OK;                /* database (""), as it would of any default VFS: kept in memory */
    sqlite3_stmt *st = NULL;
    int memory = sqlite3_prepare_v2(db, "PRAGMA main.journal_mode", -1, &st, NULL) == SQLITE_OK &&
                 sqlite3_step(st) == SQLITE_ROW &&
                 sqlite3_stricmp((const char *)sqlite3_column_text(st, 0), "memory") == 0;
    sqlite3_finalize(st);
    if (memory) return SQLITE_OK;
    static const char why[] = "the redis VFS needs a key: file:KEY?vfs=redis (an empty name would be a "
                              "temporary database whose writes vanish)";
    kvsql_vfs_set_errmsg(why);
    if (pzErrMsg) *pzErrMsg = sqlite3_mprintf("kvsql: %s", why);
    return SQLITE_CANTOPEN;
}

static int register_functions(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *api) {
    (void)api; /* the same table as sqlite3_api: one SQLite per process (kvsql_api_bind) */
    int rc = refuse_keyless(db, pzErrMsg);
    if (rc == SQLITE_OK) rc = kvsql_hooks_attach(db); /* a redis database: change capture (client/hooks.c) */
    if (rc == SQLITE_OK) rc = sqlite3_create_function(db, "kvsql_error", 0, SQLITE_UTF8, 0, sql_error, 0, 0);
    if (rc == SQLITE_OK) rc = sqlite3_create_function(db, "kvsql_stats", 0, SQLITE_UTF8, 0, sql_stats, 0, 0);
    if (rc == SQLITE_OK) rc = sqlite3_create_function(db, "kvsql_stats", 1, SQLITE_UTF8, 0, sql_stats, 0, 0);
    if (rc == SQLITE_OK) rc = sqlite3_create_function(db, "kvsql_version", 0, SQLITE_UTF8, 0, sql_version, 0, 0);
    if (rc == SQLITE_OK) rc = sqlite3_create_function(db, "kvsql_version", 1, SQLITE_UTF8, 0, sql_version, 0, 0);
    if (rc == SQLITE_OK) rc = sqlite3_create_function(db, "kvsql_gc", 0, SQLITE_UTF8, 0, sql_gc, 0, 0);
    if (rc == SQLITE_OK) rc = sqlite3_create_function(db, "kvsql_gc", 1, SQLITE_UTF8, 0, sql_gc, 0, 0);
    return rc;
}

/* ---- registration -------------------------------------------------------- */

/* Reads KVSQL_DEFAULT into default_config; 1 when it names a server. */
static int load_default_config(int *rc) {
    const char *url = getenv("KVSQL_DEFAULT");
    char err[400];
    *rc = SQLITE_OK;
    if (!default_config_ready) kvsql_redis_config_defaults(&default_config);
    default_config_ready = 1;
    if (!url || !*url) return 0;
    kvsql_redis_config c;
    kvsql_redis_config_defaults(&c);
    if (kvsql_redis_config_from_url(&c, url, err, sizeof(err)) != 0) {
        kvsql_vfs_set_errmsg(err);
        *rc = SQLITE_ERROR;
        return 0;
    }
    default_config = c;
    return 1;
}

/* Without a table from a host (a C program's call), the extension build
 * takes the table of the SQLite its caller calls (client/preload.c). */
int kvsql_register_redis(int make_default) {
#ifdef KVSQL_EXTENSION
    if (!sqlite3_api) {
        char err[400];
        int rc = kvsql_api_capture(__builtin_return_address(0), err, sizeof(err));
        if (rc != SQLITE_OK) {
            kvsql_vfs_set_errmsg(err);
            return rc;
        }
    }
#endif
    int rc = sqlite3_initialize();
    if (rc != SQLITE_OK) return rc;
    sqlite3_mutex *mx = sqlite3_mutex_alloc(SQLITE_MUTEX_STATIC_VFS2);
    sqlite3_mutex_enter(mx);
    int from_env = load_default_config(&rc);
    sqlite3_mutex_leave(mx);
    if (rc != SQLITE_OK) return rc;
    rc = kvsql_vfs_register("redis", open_redis_store, 0, make_default || from_env);
    if (rc == SQLITE_OK) rc = sqlite3_auto_extension((void (*)(void))register_functions);
    return rc;
}

/* The loadable-extension entry point: `.load libkvsql` finds it by name.
 * SQLITE_OK_LOAD_PERMANENTLY keeps the library (and the VFS) loaded after
 * the loading connection closes. */
KVSQL_EXPORT int sqlite3_kvsql_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *api) {
#ifdef KVSQL_EXTENSION
    char err[400];
    if (kvsql_api_bind(api, err, sizeof(err)) != SQLITE_OK) {
        /* the table is the only way to reach this SQLite's allocator */
        if (pzErrMsg) *pzErrMsg = api->mprintf("kvsql: %s", err);
        return SQLITE_ERROR;
    }
#endif
    int rc = kvsql_register_redis(0);
    if (rc == SQLITE_OK) rc = register_functions(db, pzErrMsg, api);
    if (rc != SQLITE_OK) {
        const char *why = kvsql_vfs_errmsg()[0] ? kvsql_vfs_errmsg() : sqlite3_errstr(rc);
        if (pzErrMsg) *pzErrMsg = sqlite3_mprintf("kvsql: %s", why);
        return rc;
    }
    return SQLITE_OK_LOAD_PERMANENTLY;
}
