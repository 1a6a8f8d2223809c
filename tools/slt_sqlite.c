/* slt_sqlite.c - the in-process engines of kvsql-slt.
 *
 * Created by main (tools/slt.c) for --engine native, memory and vfs,
 * driven by the script runner (tools/slt_script.c).
 *   native: plain SQLite on a fresh temporary file, the reference. Only
 *           synchronous=OFF differs from the defaults: it changes no
 *           result, and spares a disk flush per statement.
 *   memory: our VFS on the in-process memory store (kvsql_open).
 *   vfs:    the redis VFS of libkvsql (src/client/) on a redis-server,
 *           a fresh key per file, deleted before and after it.
 * Both run statements with sqlite3_exec and a query's first statement with
 * sqlite3_prepare_v2, as the original sqllogictest does for SQLite. */
#include "format.h"
#include "kvsql_core.h"
#include "slt.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct sqlite_state {
    sqlite3 *db;
    kvsql_store *store; /* memory engine */
    char path[4096];    /* native engine: the temporary file, "" when none */
    char host[256];     /* vfs engine: the server */
    int port;
    char key[64];       /* vfs engine: the file's key, "" when none */
    unsigned files;
} sqlite_state;

static sqlite_state *state_of(slt_engine *e) {
    return (sqlite_state *)e->state;
}

/* ---- statements and queries on a connection ---------------------------- */

static int report_sqlite_error(sqlite3 *db, int rc, char *err, size_t errlen) {
    snprintf(err, errlen, "%s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    return (rc & 0xff) == SQLITE_NOMEM ? SLT_FATAL : SLT_SQL_ERROR;
}

static int run_statement(slt_engine *e, const char *sql, char *err, size_t errlen) {
    sqlite3 *db = state_of(e)->db;
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc == SQLITE_OK) return SLT_OK;
    snprintf(err, errlen, "%s", msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return (rc & 0xff) == SQLITE_NOMEM ? SLT_FATAL : SLT_SQL_ERROR;
}

/* Renders every column of the statement's current row into out. */
static int add_row(sqlite3_stmt *stmt, const char *types, slt_rows *out, char *err, size_t errlen) {
    for (int i = 0; i < out->ncols; i++) {
        char *v = slt_render_column(stmt, i, slt_type_of_column(types, i));
        if (!v || slt_rows_add(out, v) != 0) {
            snprintf(err, errlen, "out of memory rendering a value");
            return SLT_FATAL;
        }
    }
    return SLT_OK;
}

static int run_query(slt_engine *e, const char *sql, const char *types, slt_rows *out, char *err,
                     size_t errlen) {
    sqlite3 *db = state_of(e)->db;
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK) return report_sqlite_error(db, rc, err, errlen);
    if (!stmt) {
        snprintf(err, errlen, "the query has no SQL statement");
        return SLT_SQL_ERROR;
    }
    out->ncols = sqlite3_column_count(stmt);
    int result = SLT_OK;
    while (result == SLT_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) result = add_row(stmt, types, out, err, errlen);
    if (result == SLT_OK && rc != SQLITE_DONE) result = report_sqlite_error(db, rc, err, errlen);
    sqlite3_finalize(stmt);
    return result;
}

static void close_db(sqlite_state *s) {
    sqlite3_close(s->db);
    s->db = NULL;
}

static void destroy(slt_engine *e) {
    if (!e) return;
    e->end_file(e);
    free(e->state);
    free(e);
}

static slt_engine *engine_new(const char *name, int (*begin)(slt_engine *, const char *, char *, size_t),
                              void (*end)(slt_engine *)) {
    slt_engine *e = calloc(1, sizeof(*e));
    sqlite_state *s = calloc(1, sizeof(*s));
    if (!e || !s) {
        free(e);
        free(s);
        return NULL;
    }
    *e = (slt_engine){name, begin, run_statement, run_query, end, destroy, s};
    return e;
}

/* ---- native: a temporary file ------------------------------------------ */

static void remove_temp_files(sqlite_state *s) {
    if (!s->path[0]) return;
    char journal[sizeof(s->path) + 16];
    snprintf(journal, sizeof(journal), "%s-journal", s->path);
    unlink(s->path);
    unlink(journal);
    s->path[0] = 0;
}

static void native_end_file(slt_engine *e) {
    sqlite_state *s = state_of(e);
    close_db(s);
    remove_temp_files(s);
}

static int make_temp_file(sqlite_state *s, char *err, size_t errlen) {
    const char *dir = getenv("TMPDIR");
    snprintf(s->path, sizeof(s->path), "%s/kvsql-slt-XXXXXX", dir && dir[0] ? dir : "/tmp");
    int fd = mkstemp(s->path);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a temporary file %s: %m", s->path);
        s->path[0] = 0;
        return -1;
    }
    close(fd);
    return 0;
}

static int native_begin_file(slt_engine *e, const char *path, char *err, size_t errlen) {
    sqlite_state *s = state_of(e);
    (void)path;
    native_end_file(e);
    if (make_temp_file(s, err, errlen) != 0) return SLT_FATAL;
    int rc = sqlite3_open_v2(s->path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_exec(s->db, "PRAGMA synchronous=OFF", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", s->path, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        native_end_file(e);
        return SLT_FATAL;
    }
    return SLT_OK;
}

slt_engine *slt_native_engine(void) {
    return engine_new("native", native_begin_file, native_end_file);
}

/* ---- memory: our VFS on the memory store ------------------------------- */

static void memory_end_file(slt_engine *e) {
    sqlite_state *s = state_of(e);
    close_db(s);
    kvsql_store_free(s->store);
    s->store = NULL;
}

static int memory_begin_file(slt_engine *e, const char *path, char *err, size_t errlen) {
    sqlite_state *s = state_of(e);
    (void)path;
    memory_end_file(e);
    int rc = kvsql_memory_store_new(&s->store);
    if (rc == SQLITE_OK) rc = kvsql_open(s->store, &s->db);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open a database on the memory store: %s (%s)", sqlite3_errstr(rc),
                 s->store ? kvsql_store_errmsg(s->store) : "no store");
        memory_end_file(e);
        return SLT_FATAL;
    }
    return SLT_OK;
}

slt_engine *slt_memory_engine(void) {
    return engine_new("memory", memory_begin_file, memory_end_file);
}

/* ---- vfs: the redis VFS of the library ---------------------------------- */

/* Deletes the file's key and its auxiliary keys (format.h, docs/FORMAT.md). */
static int delete_vfs_key(sqlite_state *s, char *err, size_t errlen) {
    enum { NAUX = KVSQL_AUX_COUNT };
    char names[NAUX][sizeof(s->key) + 16];
    const char *argv[NAUX + 2] = {"DEL", s->key};
    for (int i = 0; i < NAUX; i++) {
        kvsql_aux_key(names[i], sizeof(names[i]), s->key, strlen(s->key), kvsql_aux_all[i]);
        argv[i + 2] = names[i];
    }
    struct timeval tv = {10, 0};
    redisContext *c = redisConnectWithTimeout(s->host, s->port, tv);
    int rc = SLT_FATAL;
    if (c && !c->err) {
        redisReply *r = redisCommandArgv(c, NAUX + 2, argv, NULL);
        if (r && r->type == REDIS_REPLY_INTEGER) rc = SLT_OK;
        else snprintf(err, errlen, "DEL %s on %s:%d: %s", s->key, s->host, s->port, r ? r->str : c->errstr);
        freeReplyObject(r);
    } else {
        snprintf(err, errlen, "cannot connect to redis at %s:%d: %s", s->host, s->port, c ? c->errstr : "out of memory");
    }
    if (c) redisFree(c);
    return rc;
}

static void vfs_end_file(slt_engine *e) {
    sqlite_state *s = state_of(e);
    char err[256];
    close_db(s);
    if (s->key[0]) delete_vfs_key(s, err, sizeof(err));
    s->key[0] = 0;
}

static int vfs_begin_file(slt_engine *e, const char *path, char *err, size_t errlen) {
    sqlite_state *s = state_of(e);
    (void)path;
    vfs_end_file(e);
    snprintf(s->key, sizeof(s->key), "kvsql-slt-vfs:%d:%u", (int)getpid(), ++s->files);
    if (delete_vfs_key(s, err, errlen) != SLT_OK) return SLT_FATAL;
    char uri[512];
    snprintf(uri, sizeof(uri), "file:%s?vfs=redis&redis=%s:%d", s->key, s->host, s->port);
    int rc = sqlite3_open_v2(uri, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_exec(s->db, "PRAGMA user_version", NULL, NULL, NULL); /* connects */
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s (%s)", uri, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc),
                 kvsql_errmsg(s->db));
        close_db(s);
        return SLT_FATAL;
    }
    return SLT_OK;
}

slt_engine *slt_vfs_engine(const char *host, int port, char *err, size_t errlen) {
    int rc = kvsql_register_redis(0);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot register the redis VFS: %s", kvsql_errmsg(NULL));
        return NULL;
    }
    slt_engine *e = engine_new("vfs", vfs_begin_file, vfs_end_file);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    sqlite_state *s = state_of(e);
    snprintf(s->host, sizeof(s->host), "%s", host);
    s->port = port;
    snprintf(s->key, sizeof(s->key), "kvsql-slt-vfs:%d:probe", (int)getpid());
    if (delete_vfs_key(s, err, errlen) != SLT_OK) { /* the server answers */
        e->destroy(e);
        return NULL;
    }
    s->key[0] = 0;
    return e;
}
