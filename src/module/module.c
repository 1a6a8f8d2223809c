/* module.c - entry point of kvsql.so, the Redis module.
 *
 * redis-server calls RedisModule_OnLoad when started with
 * `--loadmodule build/kvsql.so`. It routes SQLite's memory through Redis's
 * allocator, counted by budget.c (so INFO memory and maxmemory count it,
 * and kvsql.call-memory-kb bounds a call), registers the
 * commands (exec.c) and configs, and subscribes to the keyspace and server
 * events after which a cached connection (cache.c) may no longer match
 * its hash. */
#include "module/commands/acl.h"
#include "module/connections/budget.h"
#include "module/connections/cache.h"
#include "module/store/changes.h"
#include "module/commands/drop.h"
#include "module/commands/call.h"
#include "module/commands/exec.h"
#include "module/offload/offload.h"
#include "format.h"
#include "module/connections/guard.h"
#include "kvsql.h"
#include "module/commands/leasewait.h"
#include "pcache.h"
#include "module/settings.h"
#include "module/store/snapshot.h"
#include "module/store/store_keyspace.h"
#include "module/offload/worker.h"

#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MODULE_NAME "kvsql"
/* The version as Redis wants it, MMmmpp (MODULE LIST), and in words (INFO). */
#define MODULE_VERSION 10100
#define MODULE_VERSION_TEXT "1.1.0"

static int setup_sqlite(void) {
    /* SQLite's memory through Redis, counted for kvsql.call-memory-kb. */
    int rc = sqlite3_config(SQLITE_CONFIG_MALLOC, &budget_memory_methods);
    if (rc == SQLITE_OK) rc = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    /* No bulk page allocation per connection: SQLite would take 20 pages
     * (86 KB) at a connection's first read, even for a 2-page database. */
    if (rc == SQLITE_OK) rc = sqlite3_config(SQLITE_CONFIG_PAGECACHE, NULL, 0, 0);
    /* Each connection is used by one thread at a time (the main thread, or
     * one worker for one call): no connection mutexes. */
    if (rc == SQLITE_OK) rc = sqlite3_config(SQLITE_CONFIG_MULTITHREAD);
    /* No URI file names: "file:...?vfs=unix" must not reach the host. */
    if (rc == SQLITE_OK) rc = sqlite3_config(SQLITE_CONFIG_URI, 0);
    /* A page cache that an idle connection can empty whole (src/pcache.h). */
    if (rc == SQLITE_OK) rc = kvsql_pcache_install();
    if (rc == SQLITE_OK) rc = kvsql_register();
    if (rc == SQLITE_OK) rc = guard_init();
    return rc;
}

/* ---- events: when a cached connection may be stale -------------------- */

/* A hash-class event changed fields of the hash in place: its connection
 * stays and takes a new snapshot (cache.h). Any other event replaced or
 * removed the key: its connection goes. Either way a worker's snapshot of
 * it is no longer exact: the worker starts again, and fails if the key is
 * gone (offload.c). Our own writes keep what workers need before they
 * write (snapshot.h). */
static int on_key_event(RedisModuleCtx *ctx, int type, const char *event, RedisModuleString *key) {
    (void)event;
    if (keyspace_store_flushing()) return REDISMODULE_OK;
    int hash = type == REDISMODULE_NOTIFY_HASH, live = snapshots_live();
    size_t len;
    const char *k = RedisModule_StringPtrLen(key, &len);
    int db = RedisModule_GetSelectedDb(ctx);
    if (!hash) changes_key_event(db, k, len); /* a stream capture knew to have room may not have it now */
    if (type == REDISMODULE_NOTIFY_STREAM) return REDISMODULE_OK; /* no database is a stream */
    if (cache_is_empty() && !live) return REDISMODULE_OK;
    if (live) snapshots_key_changed(db, k, len, SNAPSHOT_CHANGED);
    if (hash && strcmp(event, "hset") == 0) cache_key_hset(db, key);
    else if (hash) cache_key_changed(db, k, len);
    else cache_forget_key(db, k, len);
    return REDISMODULE_OK;
}

/* Whether name is HSET, HMSET or HSETNX: the commands whose "hset" event
 * says a hash's fields were set, and which name them. */
static int sets_hash_fields(const char *name, size_t len) {
    return (len == 4 && strncasecmp(name, "hset", 4) == 0) || (len == 5 && strncasecmp(name, "hmset", 5) == 0) ||
           (len == 6 && strncasecmp(name, "hsetnx", 6) == 0);
}

/* Every command passes here before Redis decides whether it runs,
 * whoever sends it (a client, the master's link on a replica, a script's
 * redis.call, a module's RedisModule_Call), and commands queued in MULTI
 * pass when queued, not at EXEC. ACL and EXEC forget the ACL checks acl.c
 * remembers. Of HSET, HMSET and HSETNX to a key with
 * a cached connection, cache.c keeps the key argument and the pages they
 * name, so that the "hset" event of the one that runs lets the
 * connection's next snapshot drop only those (cache_hset_filtered). */
static void on_command(RedisModuleCommandFilterCtx *f) {
    int argc = RedisModule_CommandFilterArgsCount(f);
    size_t len;
    const char *name = RedisModule_StringPtrLen(RedisModule_CommandFilterArgGet(f, 0), &len);
    acl_note_command(name, len);
    if (argc < 2) return;
    RedisModuleString *key = RedisModule_CommandFilterArgGet(f, 1);
    if (argc < 4 || !sets_hash_fields(name, len)) {
        cache_other_filtered(key);
        return;
    }
    if (cache_is_empty()) return;
    uint32_t pages[32];
    int n = 0;
    for (int i = 2; i + 1 < argc && n >= 0; i += 2) {
        size_t flen;
        const char *field = RedisModule_StringPtrLen(RedisModule_CommandFilterArgGet(f, i), &flen);
        if (n == (int)(sizeof(pages) / sizeof(pages[0])) || kvsql_field_parse(field, flen, &pages[n]) != 0) n = -1;
        else n++;
    }
    cache_hset_filtered(key, pages, n);
}

static void on_flush(RedisModuleCtx *ctx, RedisModuleEvent e, uint64_t sub, void *data) {
    (void)ctx;
    (void)e;
    if (sub != REDISMODULE_SUBEVENT_FLUSHDB_END) return; /* fired at the start and at the end: act once */
    cache_forget_db(((RedisModuleFlushInfo *)data)->dbnum);
    snapshots_db_gone(((RedisModuleFlushInfo *)data)->dbnum);
    changes_streams_forget();
}

static void on_swapdb(RedisModuleCtx *ctx, RedisModuleEvent e, uint64_t sub, void *data) {
    (void)ctx;
    (void)e;
    (void)sub;
    RedisModuleSwapDbInfo *info = data;
    cache_forget_db(info->dbnum_first);
    cache_forget_db(info->dbnum_second);
    snapshots_db_gone(info->dbnum_first);
    snapshots_db_gone(info->dbnum_second);
    changes_streams_forget();
}

/* Loading an RDB/AOF, a full resync, a role change: start afresh.
 * At shutdown, the same closes every connection before the process ends. */
static void on_dataset_change(RedisModuleCtx *ctx, RedisModuleEvent e, uint64_t sub, void *data) {
    (void)ctx;
    (void)e;
    (void)sub;
    (void)data;
    cache_forget_all();
    snapshots_db_gone(-1);
    changes_streams_forget();
}

/* At shutdown: no worker may still be inside SQLite when the process ends. */
static void on_shutdown(RedisModuleCtx *ctx, RedisModuleEvent e, uint64_t sub, void *data) {
    workers_shutdown();
    on_dataset_change(ctx, e, sub, data);
}

/* Ten times a second, a bounded step: Redis drops the keys of a cluster
 * slot it lost without any event, so look for connections whose hash
 * changed. */
#define SWEEP_EVERY_MS 100

static void on_sweep_timer(RedisModuleCtx *ctx, void *data) {
    cache_sweep(ctx);
    RedisModule_CreateTimer(ctx, SWEEP_EVERY_MS, on_sweep_timer, data);
}

static int subscribe(RedisModuleCtx *ctx) {
    static const RedisModuleEvent flush = {REDISMODULE_EVENT_FLUSHDB, 1};
    static const RedisModuleEvent swapdb = {REDISMODULE_EVENT_SWAPDB, 1};
    static const RedisModuleEvent loading = {REDISMODULE_EVENT_LOADING, 1};
    static const RedisModuleEvent role = {REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED, 1};
    static const RedisModuleEvent shutdown = {REDISMODULE_EVENT_SHUTDOWN, 1};
    /* The classes whose events can change a hash or remove it; a key that
     * became another type is refused as WRONGTYPE, and it can only become
     * a hash again through one of these (or the length check, cache.c).
     * And streams: one whose last ID is set anew may have no room for
     * capture's entries (changes.c). */
    const int classes = REDISMODULE_NOTIFY_GENERIC | REDISMODULE_NOTIFY_HASH | REDISMODULE_NOTIFY_EXPIRED |
                        REDISMODULE_NOTIFY_EVICTED | REDISMODULE_NOTIFY_STREAM;
    if (RedisModule_SubscribeToKeyspaceEvents(ctx, classes, on_key_event) != REDISMODULE_OK ||
        RedisModule_SubscribeToServerEvent(ctx, flush, on_flush) != REDISMODULE_OK ||
        RedisModule_SubscribeToServerEvent(ctx, swapdb, on_swapdb) != REDISMODULE_OK ||
        RedisModule_SubscribeToServerEvent(ctx, loading, on_dataset_change) != REDISMODULE_OK ||
        RedisModule_SubscribeToServerEvent(ctx, role, on_dataset_change) != REDISMODULE_OK ||
        RedisModule_SubscribeToServerEvent(ctx, shutdown, on_shutdown) != REDISMODULE_OK ||
        !RedisModule_RegisterCommandFilter(ctx, on_command, 0))
        return REDISMODULE_ERR;
    RedisModule_CreateTimer(ctx, SWEEP_EVERY_MS, on_sweep_timer, NULL);
    return REDISMODULE_OK;
}

/* ---- INFO kvsql ------------------------------------------------------ */

/* errors_sqlite_<class> for every class met, errors_err, errors_other. */
static void info_errors(RedisModuleInfoCtx *ctx, const exec_stats *es) {
    long long total = es->errors_usage + es->errors_other;
    for (int i = 0; i < 32; i++) total += es->errors_by_code[i];
    RedisModule_InfoAddFieldLongLong(ctx, "errors", total);
    RedisModule_InfoAddFieldLongLong(ctx, "errors_err", es->errors_usage);
    for (int i = 1; i < 32; i++) {
        const char *name = exec_code_name(i);
        if (!name || !es->errors_by_code[i]) continue;
        char field[48], *p = field + snprintf(field, sizeof(field), "errors_sqlite_%s", name);
        for (char *q = field + 14; q < p; q++) *q = (char)(*q - 'A' + 'a');
        RedisModule_InfoAddFieldLongLong(ctx, field, es->errors_by_code[i]);
    }
    RedisModule_InfoAddFieldLongLong(ctx, "errors_other", es->errors_other);
}

/* Worker threads and the calls moved to them. */
static void info_workers(RedisModuleInfoCtx *ctx) {
    worker_stats ws = workers_get_stats();
    offload_stats os = offload_get_stats();
    RedisModule_InfoAddFieldLongLong(ctx, "worker_threads", ws.threads);
    RedisModule_InfoAddFieldLongLong(ctx, "worker_calls_running", ws.running);
    RedisModule_InfoAddFieldLongLong(ctx, "worker_calls_queued", ws.queued);
    RedisModule_InfoAddFieldLongLong(ctx, "offloaded_calls", os.calls);
    RedisModule_InfoAddFieldLongLong(ctx, "offload_restarts", os.restarts);
    RedisModule_InfoAddFieldLongLong(ctx, "offload_locked_runs", os.locked_runs);
    RedisModule_InfoAddFieldLongLong(ctx, "offload_conflicts", os.conflicts);
    RedisModule_InfoAddFieldLongLong(ctx, "offload_run_here", os.run_here);
    RedisModule_InfoAddFieldLongLong(ctx, "offload_staged_writes", os.staged);
    RedisModule_InfoAddFieldLongLong(ctx, "offload_staged_replica_waits", os.staged_waits);
    RedisModule_InfoAddFieldLongLong(ctx, "offload_pause_waits", os.pause_waits);
}

static void info(RedisModuleInfoCtx *ctx, int for_crash_report) {
    (void)for_crash_report;
    cache_stats st = cache_get_stats();
    exec_stats es = exec_get_stats();
    RedisModule_InfoAddSection(ctx, "");
    RedisModule_InfoAddFieldCString(ctx, "version", MODULE_VERSION_TEXT);
    RedisModule_InfoAddFieldCString(ctx, "sqlite_version", sqlite3_libversion());
    RedisModule_InfoAddFieldLongLong(ctx, "connections", st.connections);
    RedisModule_InfoAddFieldLongLong(ctx, "connections_opened", st.connections_opened);
    RedisModule_InfoAddFieldLongLong(ctx, "sweep_max_step_us", cache_sweep_max_step_us());
    RedisModule_InfoAddFieldLongLong(ctx, "statements_prepared", st.statements_prepared);
    RedisModule_InfoAddFieldLongLong(ctx, "statement_cache_hits", st.statement_cache_hits);
    RedisModule_InfoAddFieldLongLong(ctx, "statement_cache_bytes", st.statement_cache_bytes);
    RedisModule_InfoAddFieldLongLong(ctx, "snapshots_renewed", st.snapshots_renewed);
    RedisModule_InfoAddFieldLongLong(ctx, "snapshots_reset_cache", st.snapshots_reset_cache);
    RedisModule_InfoAddFieldLongLong(ctx, "snapshots_pages_dropped", st.snapshots_pages_dropped);
    RedisModule_InfoAddFieldLongLong(ctx, "sqlite_memory", budget_memory_used());
    RedisModule_InfoAddFieldLongLong(ctx, "page_cache_bytes", kvsql_pcache_bytes());
    RedisModule_InfoAddFieldLongLong(ctx, "timeouts", es.timeouts);
    RedisModule_InfoAddFieldLongLong(ctx, "kills", es.kills);
    RedisModule_InfoAddFieldLongLong(ctx, "memory_stops", es.memory_stops);
    RedisModule_InfoAddFieldLongLong(ctx, "stay_stops", es.stay_stops);
    info_workers(ctx);
    leasewait_stats lw = leasewait_get_stats();
    RedisModule_InfoAddFieldLongLong(ctx, "lease_waits", lw.waits);
    RedisModule_InfoAddFieldLongLong(ctx, "lease_wait_timeouts", lw.timeouts);
    info_errors(ctx, &es);
}

/* ---- commands --------------------------------------------------------- */

static const RedisModuleCommandInfoVersion info_version = {
    1, sizeof(RedisModuleCommandHistoryEntry), sizeof(RedisModuleCommandKeySpec), sizeof(RedisModuleCommandArg),
};

/* The arguments COMMAND DOCS shows: [key] [options] sql [arg ...]. */
#define OPTIONAL REDISMODULE_CMD_ARG_OPTIONAL
#define SQL_ARGS                                                                                              \
    {"typed", REDISMODULE_ARG_TYPE_PURE_TOKEN, -1, "TYPED", "Each value as [type, text].", "1.1.0", OPTIONAL,  \
     NULL, NULL, NULL},                                                                                             \
        {"map", REDISMODULE_ARG_TYPE_PURE_TOKEN, -1, "MAP", "Each row as a map: column name -> value.",        \
         "1.1.0", OPTIONAL, NULL, NULL, NULL},                                                                      \
        {"named", REDISMODULE_ARG_TYPE_PURE_TOKEN, -1, "NAMED", "Arguments are name value pairs.", "1.1.0",   \
         OPTIONAL, NULL, NULL, NULL},                                                                               \
        {"spec", REDISMODULE_ARG_TYPE_STRING, -1, "TYPES",                                                    \
         "One letter per value: a(uto) i(nteger) r(eal) t(ext) b(lob) n(ull).", "1.1.0", OPTIONAL, NULL,      \
         NULL, NULL},                                                                                               \
        {"sql", REDISMODULE_ARG_TYPE_STRING, -1, NULL, "One or more SQL statements.", NULL, 0, NULL, NULL, NULL},   \
        {"arg", REDISMODULE_ARG_TYPE_STRING, -1, NULL, "Values of the parameters.", NULL,                     \
         OPTIONAL | REDISMODULE_CMD_ARG_MULTIPLE, NULL, NULL, NULL},                                          \
        {0}

static RedisModuleCommandArg keyed_args[] = {
    {"key", REDISMODULE_ARG_TYPE_KEY, 0, NULL, "The hash that holds the database.", NULL, 0, NULL, NULL, NULL},
    SQL_ARGS};
static RedisModuleCommandArg keyless_args[] = {SQL_ARGS};
/* SQL.CHANGES key [ON [MAXLEN [=|~] n] | OFF | STATUS] (changes.c) */
static RedisModuleCommandArg changes_args[] = {
    {"key", REDISMODULE_ARG_TYPE_KEY, 0, NULL, "The hash that holds the database.", NULL, 0, NULL, NULL, NULL},
    {"action", REDISMODULE_ARG_TYPE_STRING, -1, NULL, "ON [MAXLEN [=|~] n], OFF or STATUS (the default).", NULL,
     OPTIONAL | REDISMODULE_CMD_ARG_MULTIPLE, NULL, NULL, NULL},
    {0}};

/* SQL.DROP key [FORCE] (drop.c) */
static RedisModuleCommandArg drop_args[] = {
    {"key", REDISMODULE_ARG_TYPE_KEY, 0, NULL, "The hash that holds the database.", NULL, 0, NULL, NULL, NULL},
    {"force", REDISMODULE_ARG_TYPE_PURE_TOKEN, -1, "FORCE", "Even while a writer holds the lease.", "1.2.0",
     OPTIONAL, NULL, NULL, NULL},
    {0}};

/* Arity, summary, arguments and the key spec (argument 1, with key_flags;
 * none when 0), so COMMAND DOCS, ACL key permissions and cluster clients
 * see them. */
static int describe(RedisModuleCtx *ctx, const char *name, int arity, const char *summary, uint64_t key_flags,
                    RedisModuleCommandArg *args, const char *acl_categories) {
    RedisModuleCommand *cmd = RedisModule_GetCommand(ctx, name);
    RedisModuleCommandKeySpec specs[2];
    memset(specs, 0, sizeof(specs)); /* a zeroed entry ends the list */
    specs[0].flags = key_flags;
    specs[0].begin_search_type = REDISMODULE_KSPEC_BS_INDEX;
    specs[0].bs.index.pos = 1;
    specs[0].find_keys_type = REDISMODULE_KSPEC_FK_RANGE;
    specs[0].fk.range.lastkey = 0;
    specs[0].fk.range.keystep = 1;
    RedisModuleCommandInfo info;
    memset(&info, 0, sizeof(info));
    info.version = &info_version;
    info.summary = summary;
    info.complexity = "Depends on the SQL.";
    info.since = "1.0.0";
    info.arity = arity;
    info.key_specs = key_flags ? specs : NULL;
    info.args = args;
    if (!cmd || RedisModule_SetCommandInfo(cmd, &info) != REDISMODULE_OK) return REDISMODULE_ERR;
    if (RedisModule_SetCommandACLCategories) /* Redis 7.2 and later */
        RedisModule_SetCommandACLCategories(cmd, acl_categories);
    return REDISMODULE_OK;
}

static int create_commands(RedisModuleCtx *ctx) {
    const uint64_t reads = REDISMODULE_CMD_KEY_RO | REDISMODULE_CMD_KEY_ACCESS;
    const uint64_t writes = REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_ACCESS | REDISMODULE_CMD_KEY_UPDATE;
    if (RedisModule_CreateCommand(ctx, "sql", cmd_sql, "write deny-oom", 0, 0, 0) != REDISMODULE_OK ||
        RedisModule_CreateCommand(ctx, "sql.exec", cmd_sql_exec, "write deny-oom", 1, 1, 1) != REDISMODULE_OK ||
        RedisModule_CreateCommand(ctx, "sql.query", cmd_sql_query, "readonly", 1, 1, 1) != REDISMODULE_OK ||
        RedisModule_CreateCommand(ctx, "sql.kill", cmd_sql_kill, "allow-busy deny-script", 0, 0, 0) != REDISMODULE_OK ||
        RedisModule_CreateCommand(ctx, "sql.changes", cmd_sql_changes, "write deny-oom", 1, 1, 1) != REDISMODULE_OK ||
        RedisModule_CreateCommand(ctx, "sql.drop", cmd_sql_drop, "write", 1, 1, 1) != REDISMODULE_OK)
        return REDISMODULE_ERR;
    if (describe(ctx, "sql", -2, "Runs SQL on the database at _sql:redis_db.", 0, keyless_args, "write slow") !=
            REDISMODULE_OK ||
        describe(ctx, "sql.exec", -3, "Runs SQL on the database stored in a hash.", writes, keyed_args,
                 "write slow") != REDISMODULE_OK ||
        describe(ctx, "sql.query", -3, "Runs read-only SQL on the database stored in a hash.", reads, keyed_args,
                 "read slow") != REDISMODULE_OK ||
        describe(ctx, "sql.kill", 1, "Stops the SQL that is running.", 0, NULL, "slow") != REDISMODULE_OK ||
        describe(ctx, "sql.changes", -2, "Turns row change capture into the stream T:changes on or off.", writes,
                 changes_args, "write slow") != REDISMODULE_OK ||
        describe(ctx, "sql.drop", -2, "Removes a database and all its auxiliary keys in one step.",
                 REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_DELETE, drop_args, "write slow") != REDISMODULE_OK)
        return REDISMODULE_ERR;
    return REDISMODULE_OK;
}

/* kvsql takes no load arguments: its settings are configs. A word after
 * the module's path is a mistake worth stopping for, not ignoring. */
static int refuse_load_arguments(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (argc == 0) return REDISMODULE_OK;
    size_t len;
    const char *arg = RedisModule_StringPtrLen(argv[0], &len);
    RedisModule_Log(ctx, "warning",
                    "kvsql: unknown load argument '%.100s': kvsql takes no load arguments; set its configs after "
                    "--loadmodule as --kvsql.NAME VALUE, or with CONFIG SET (docs/COMMANDS.md, Configs)",
                    arg);
    return REDISMODULE_ERR;
}

__attribute__((visibility("default"))) int RedisModule_OnLoad(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    const char *missing = NULL;
    if (redis_api_init(ctx, MODULE_NAME, MODULE_VERSION, &missing) != REDISMODULE_OK) {
        if (RedisModule_Log) RedisModule_Log(ctx, "warning", "kvsql: this Redis lacks %s", missing);
        return REDISMODULE_ERR;
    }
    if (refuse_load_arguments(ctx, argv, argc) != REDISMODULE_OK) return REDISMODULE_ERR;
    int rc = setup_sqlite();
    if (rc != SQLITE_OK) {
        RedisModule_Log(ctx, "warning", "kvsql: cannot set up SQLite: %s", sqlite3_errstr(rc));
        return REDISMODULE_ERR;
    }
    /* We signal a key as modified only when a command really changed it. */
    RedisModule_SetModuleOptions(ctx, REDISMODULE_OPTION_NO_IMPLICIT_SIGNAL_MODIFIED);
    cache_init(ctx);
    call_rerun = exec_run_here; /* the commands, for offload.c and leasewait.c (call.h) */
    if (create_commands(ctx) != REDISMODULE_OK || subscribe(ctx) != REDISMODULE_OK ||
        settings_register(ctx) != REDISMODULE_OK || RedisModule_RegisterInfoFunc(ctx, info) != REDISMODULE_OK) {
        RedisModule_Log(ctx, "warning", "kvsql: cannot register commands, events or configs");
        return REDISMODULE_ERR;
    }
    return REDISMODULE_OK;
}
