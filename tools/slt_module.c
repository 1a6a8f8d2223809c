/* slt_module.c - kvsql-slt's engine for the Redis module (kvsql.so).
 *
 * Created by main (tools/slt.c) for --engine module, driven by the script
 * runner (tools/slt_script.c). Each script gets its own key, deleted
 * before and after it; every record, statement or query, is sent as
 *     SQL.EXEC <key> <sql>
 * The reply is an integer for SQL without columns, else an array
 * [header, row, row...] with header [[name, type]...] and values that are
 * integers (INTEGER), nil (NULL) or bulk strings (a REAL as SQLite renders
 * it to text, TEXT, BLOB). Values are rendered by the converter
 * (tools/slt_value.c) exactly as the in-process engines render them. An
 * error reply is an SQL error; a broken connection stops the run. */
#include "slt.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define COMMAND_TIMEOUT_SECONDS 120

typedef struct module_state {
    redisContext *redis;
    slt_converter *conv;
    char where[300]; /* host:port, for messages */
    char key[4200];
} module_state;

static module_state *state_of(slt_engine *e) {
    return (module_state *)e->state;
}

/* Sends argv; NULL with err set when the connection broke. */
static redisReply *send_command(module_state *s, int argc, const char **argv, char *err, size_t errlen) {
    size_t lens[4];
    for (int i = 0; i < argc; i++) lens[i] = strlen(argv[i]);
    redisReply *reply = redisCommandArgv(s->redis, argc, argv, lens);
    if (!reply) snprintf(err, errlen, "redis at %s: %s", s->where, s->redis->errstr[0] ? s->redis->errstr : "no reply");
    return reply;
}

static int send_sql(module_state *s, const char *sql, redisReply **reply, char *err, size_t errlen) {
    const char *argv[] = {"SQL.EXEC", s->key, sql};
    *reply = send_command(s, 3, argv, err, errlen);
    if (!*reply) return SLT_FATAL;
    if ((*reply)->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "%s", (*reply)->str);
        freeReplyObject(*reply);
        *reply = NULL;
        return SLT_SQL_ERROR;
    }
    return SLT_OK;
}

static int delete_key(module_state *s, char *err, size_t errlen) {
    const char *argv[] = {"DEL", s->key};
    redisReply *reply = send_command(s, 2, argv, err, errlen);
    if (!reply) return SLT_FATAL;
    int bad = reply->type == REDIS_REPLY_ERROR;
    if (bad) snprintf(err, errlen, "DEL %s: %s", s->key, reply->str);
    freeReplyObject(reply);
    return bad ? SLT_FATAL : SLT_OK;
}

/* ---- engine calls ------------------------------------------------------ */

static int module_begin_file(slt_engine *e, const char *path, char *err, size_t errlen) {
    module_state *s = state_of(e);
    snprintf(s->key, sizeof(s->key), "kvsql-slt:%s", path);
    return delete_key(s, err, errlen);
}

static void module_end_file(slt_engine *e) {
    module_state *s = state_of(e);
    char err[256];
    if (s->key[0] && s->redis && !s->redis->err) delete_key(s, err, sizeof(err));
    s->key[0] = 0;
}

static int module_statement(slt_engine *e, const char *sql, char *err, size_t errlen) {
    redisReply *reply;
    int rc = send_sql(state_of(e), sql, &reply, err, errlen);
    if (reply) freeReplyObject(reply);
    return rc;
}

/* Renders one value of the reply by its type letter. */
static char *convert_value(module_state *s, const redisReply *v, char type) {
    switch (v->type) {
    case REDIS_REPLY_NIL: return slt_convert_null();
    case REDIS_REPLY_INTEGER: return slt_convert_integer(s->conv, v->integer, type);
    case REDIS_REPLY_STRING: return slt_convert_string(s->conv, v->str, v->len, type);
    default: return NULL;
    }
}

static int add_row(module_state *s, const redisReply *row, const char *types, slt_rows *out, char *err,
                   size_t errlen) {
    if (row->type != REDIS_REPLY_ARRAY || (long long)row->elements != out->ncols) {
        snprintf(err, errlen, "malformed SQL.EXEC reply: a row is not an array of %d values", out->ncols);
        return SLT_SQL_ERROR;
    }
    for (int i = 0; i < out->ncols; i++) {
        const redisReply *v = row->element[i];
        if (v->type != REDIS_REPLY_NIL && v->type != REDIS_REPLY_INTEGER && v->type != REDIS_REPLY_STRING) {
            snprintf(err, errlen, "malformed SQL.EXEC reply: value of reply type %d", v->type);
            return SLT_SQL_ERROR;
        }
        char *text = convert_value(s, v, slt_type_of_column(types, i));
        if (!text || slt_rows_add(out, text) != 0) {
            snprintf(err, errlen, "out of memory rendering a value");
            return SLT_FATAL;
        }
    }
    return SLT_OK;
}

/* Turns the reply [header, row, row...] (or an integer) into rows. */
static int read_rows(module_state *s, const redisReply *reply, const char *types, slt_rows *out, char *err,
                     size_t errlen) {
    if (reply->type == REDIS_REPLY_INTEGER) {
        out->ncols = 0; /* SQL without columns */
        return SLT_OK;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 || reply->element[0]->type != REDIS_REPLY_ARRAY) {
        snprintf(err, errlen, "malformed SQL.EXEC reply: neither an integer nor [header, row...] (type %d)",
                 reply->type);
        return SLT_SQL_ERROR;
    }
    out->ncols = (int)reply->element[0]->elements;
    for (size_t r = 1; r < reply->elements; r++) {
        int rc = add_row(s, reply->element[r], types, out, err, errlen);
        if (rc != SLT_OK) return rc;
    }
    return SLT_OK;
}

static int module_query(slt_engine *e, const char *sql, const char *types, slt_rows *out, char *err,
                        size_t errlen) {
    module_state *s = state_of(e);
    redisReply *reply;
    int rc = send_sql(s, sql, &reply, err, errlen);
    if (rc != SLT_OK) return rc;
    rc = read_rows(s, reply, types, out, err, errlen);
    freeReplyObject(reply);
    return rc;
}

/* ---- setup ------------------------------------------------------------- */

static void module_destroy(slt_engine *e) {
    if (!e) return;
    module_state *s = state_of(e);
    if (s) {
        module_end_file(e);
        if (s->redis) redisFree(s->redis);
        slt_converter_free(s->conv);
        free(s);
    }
    free(e);
}

static int connect_redis(module_state *s, const char *host, int port, char *err, size_t errlen) {
    struct timeval connect_timeout = {10, 0}, command_timeout = {COMMAND_TIMEOUT_SECONDS, 0};
    snprintf(s->where, sizeof(s->where), "%s:%d", host, port);
    s->redis = redisConnectWithTimeout(host, port, connect_timeout);
    if (!s->redis || s->redis->err) {
        snprintf(err, errlen, "cannot connect to redis at %s: %s", s->where,
                 s->redis ? s->redis->errstr : "out of memory");
        return -1;
    }
    if (redisSetTimeout(s->redis, command_timeout) != REDIS_OK) {
        snprintf(err, errlen, "cannot set a timeout on the connection to %s", s->where);
        return -1;
    }
    return 0;
}

/* Whether the server knows SQL.EXEC: else every record would fail alike. */
static int check_module_loaded(module_state *s, char *err, size_t errlen) {
    const char *argv[] = {"COMMAND", "INFO", "SQL.EXEC"};
    redisReply *reply = send_command(s, 3, argv, err, errlen);
    if (!reply) return -1;
    int missing = reply->type != REDIS_REPLY_ARRAY || reply->elements != 1 ||
                  reply->element[0]->type != REDIS_REPLY_ARRAY;
    if (missing) snprintf(err, errlen, "redis at %s has no SQL.EXEC command: is kvsql.so loaded?", s->where);
    freeReplyObject(reply);
    return missing ? -1 : 0;
}

slt_engine *slt_module_engine(const char *host, int port, char *err, size_t errlen) {
    slt_engine *e = calloc(1, sizeof(*e));
    module_state *s = calloc(1, sizeof(*s));
    if (!e || !s) {
        free(e);
        free(s);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    *e = (slt_engine){"module", module_begin_file, module_statement, module_query, module_end_file,
                      module_destroy, s};
    if (!(s->conv = slt_converter_new())) {
        snprintf(err, errlen, "cannot open the in-memory SQLite that renders values");
        module_destroy(e);
        return NULL;
    }
    if (connect_redis(s, host, port, err, errlen) != 0 || check_module_loaded(s, err, errlen) != 0) {
        module_destroy(e);
        return NULL;
    }
    return e;
}
