/* result.c - buffered statement rows and their Redis reply; see result.h.
 *
 * Encoding in rows, one value after another: a type byte (SQLITE_INTEGER,
 * SQLITE_FLOAT, SQLITE_TEXT, SQLITE_BLOB, SQLITE_NULL), then for INTEGER
 * and FLOAT 8 bytes (the int64 or the double), for TEXT/BLOB a 4-byte
 * length and the bytes, for NULL nothing. A REAL is put in words only at
 * reply time: RESP3 clients get it as a double, others as the shortest
 * decimal that reads back exactly. */
#include "module/commands/result.h"

#include "real_text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Buffers larger than this are freed after a call rather than kept. */
#define KEEP_BYTES (1 << 20)

static int reserve(bytes *b, size_t more) {
    if (b->len + more <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more) cap *= 2;
    unsigned char *p = sqlite3_realloc64(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int append(bytes *b, const void *data, size_t n) {
    if (reserve(b, n) != 0) return SQLITE_NOMEM;
    if (n) memcpy(b->p + b->len, data, n);
    b->len += n;
    return SQLITE_OK;
}

static void reset_bytes(bytes *b) {
    if (b->cap > KEEP_BYTES) {
        sqlite3_free(b->p);
        b->p = NULL;
        b->cap = 0;
    }
    b->len = 0;
}

void result_reset(result *r) {
    r->ncols = 0;
    r->nrows = 0;
    reset_bytes(&r->head);
    reset_bytes(&r->first);
    reset_bytes(&r->rows);
}

void result_free(result *r) {
    sqlite3_free(r->head.p);
    sqlite3_free(r->first.p);
    sqlite3_free(r->rows.p);
    memset(r, 0, sizeof(*r));
}

/* Appends s and its NUL; lower-cased when asked (declared types: SQLite
 * reports "int" declared as INT). */
static int append_cstr(bytes *b, const char *s, int lower) {
    size_t n = s ? strlen(s) : 0;
    if (reserve(b, n + 1) != 0) return SQLITE_NOMEM;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        b->p[b->len++] = (unsigned char)(lower && c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    b->p[b->len++] = 0;
    return SQLITE_OK;
}

int result_begin(result *r, sqlite3_stmt *stmt) {
    result_reset(r);
    r->ncols = sqlite3_column_count(stmt);
    for (int i = 0; i < r->ncols; i++) {
        if (append_cstr(&r->head, sqlite3_column_name(stmt, i), 0) != SQLITE_OK ||
            append_cstr(&r->head, sqlite3_column_decltype(stmt, i), 1) != SQLITE_OK)
            return SQLITE_NOMEM;
    }
    return SQLITE_OK;
}

static int add_value(result *r, sqlite3_stmt *stmt, int i) {
    unsigned char type = (unsigned char)sqlite3_column_type(stmt, i);
    if (append(&r->rows, &type, 1) != SQLITE_OK) return SQLITE_NOMEM;
    if (type == SQLITE_NULL) return SQLITE_OK;
    if (type == SQLITE_INTEGER) {
        sqlite3_int64 v = sqlite3_column_int64(stmt, i);
        return append(&r->rows, &v, 8);
    }
    if (type == SQLITE_FLOAT) {
        double d = sqlite3_column_double(stmt, i);
        return append(&r->rows, &d, 8);
    }
    const void *p = type == SQLITE_BLOB ? sqlite3_column_blob(stmt, i) : (const void *)sqlite3_column_text(stmt, i);
    uint32_t n = (uint32_t)sqlite3_column_bytes(stmt, i);
    if (!p && n) return SQLITE_NOMEM;
    if (append(&r->rows, &n, 4) != SQLITE_OK) return SQLITE_NOMEM;
    return append(&r->rows, p, n);
}

int result_add_row(result *r, sqlite3_stmt *stmt) {
    for (int i = 0; i < r->ncols; i++) {
        if (r->nrows == 0) {
            unsigned char t = (unsigned char)sqlite3_column_type(stmt, i);
            if (append(&r->first, &t, 1) != SQLITE_OK) return SQLITE_NOMEM;
        }
        int rc = add_value(r, stmt, i);
        if (rc != SQLITE_OK) return rc;
    }
    r->nrows++;
    return SQLITE_OK;
}

static const char *storage_class(int type) {
    switch (type) {
    case SQLITE_INTEGER: return "int";
    case SQLITE_FLOAT: return "real";
    case SQLITE_TEXT: return "text";
    case SQLITE_BLOB: return "blob";
    default: return "null";
    }
}

/* [[name, type], ...]: the declared type, else row 1's storage class. */
static void reply_header(result *r, RedisModuleCtx *ctx) {
    RedisModule_ReplyWithArray(ctx, r->ncols);
    const char *at = (const char *)r->head.p;
    for (int i = 0; i < r->ncols; i++) {
        const char *name = at;
        const char *type = name + strlen(name) + 1;
        at = type + strlen(type) + 1;
        if (!type[0] && r->nrows) type = storage_class(r->first.p[i]);
        RedisModule_ReplyWithArray(ctx, 2);
        RedisModule_ReplyWithStringBuffer(ctx, name, strlen(name));
        RedisModule_ReplyWithStringBuffer(ctx, type, strlen(type));
    }
}

static const char *type_name(int type) {
    switch (type) {
    case SQLITE_INTEGER: return "integer";
    case SQLITE_FLOAT: return "real";
    case SQLITE_TEXT: return "text";
    case SQLITE_BLOB: return "blob";
    default: return "null";
    }
}

/* One value, decoded from the buffer. */
typedef struct value {
    int type;
    long long i;
    double d;
    const char *p; /* TEXT, BLOB */
    uint32_t n;
} value;

/* Reads the value at *at and moves past it. */
static value next_value(const result *r, size_t *at) {
    const unsigned char *p = r->rows.p;
    value v = {p[(*at)++], 0, 0, NULL, 0};
    if (v.type == SQLITE_INTEGER) {
        memcpy(&v.i, p + *at, 8);
        *at += 8;
    } else if (v.type == SQLITE_FLOAT) {
        memcpy(&v.d, p + *at, 8);
        *at += 8;
    } else if (v.type != SQLITE_NULL) {
        memcpy(&v.n, p + *at, 4);
        v.p = (const char *)p + *at + 4;
        *at += 4 + (size_t)v.n;
    }
    return v;
}

/* The default reply of a value: integer, nil, bulk string; a REAL as a
 * RESP3 double for RESP3 clients, else as its shortest decimal. */
static void reply_value(RedisModuleCtx *ctx, const value *v, int *resp3) {
    char text[40];
    switch (v->type) {
    case SQLITE_NULL: RedisModule_ReplyWithNull(ctx); break;
    case SQLITE_INTEGER: RedisModule_ReplyWithLongLong(ctx, v->i); break;
    case SQLITE_FLOAT:
        if (*resp3 < 0) /* asked once per reply, and only when a REAL is in it */
            *resp3 = (RedisModule_GetContextFlags(ctx) & REDISMODULE_CTX_FLAGS_RESP3) != 0;
        if (*resp3) {
            RedisModule_ReplyWithDouble(ctx, v->d);
            break;
        }
        kvsql_real_text(v->d, text);
        RedisModule_ReplyWithStringBuffer(ctx, text, strlen(text));
        break;
    default: RedisModule_ReplyWithStringBuffer(ctx, v->p, v->n);
    }
}

/* The TYPED reply of a value: [type, text], text nil for NULL. Integers
 * and REALs as decimal text, so no client rounds them. */
static void reply_typed_value(RedisModuleCtx *ctx, const value *v) {
    const char *name = type_name(v->type);
    char text[40];
    RedisModule_ReplyWithArray(ctx, 2);
    RedisModule_ReplyWithStringBuffer(ctx, name, strlen(name));
    switch (v->type) {
    case SQLITE_NULL: RedisModule_ReplyWithNull(ctx); return;
    case SQLITE_INTEGER: snprintf(text, sizeof(text), "%lld", v->i); break;
    case SQLITE_FLOAT: kvsql_real_text(v->d, text); break;
    default: RedisModule_ReplyWithStringBuffer(ctx, v->p, v->n); return;
    }
    RedisModule_ReplyWithStringBuffer(ctx, text, strlen(text));
}

/* The column names, one after another in r->head: moves past name i's type too. */
static const char *next_name(const char **at) {
    const char *name = *at;
    const char *type = name + strlen(name) + 1;
    *at = type + strlen(type) + 1;
    return name;
}

static void reply_row(result *r, RedisModuleCtx *ctx, size_t *at, int format, int *resp3) {
    const char *names = (const char *)r->head.p;
    if (format & RESULT_MAP) RedisModule_ReplyWithMap(ctx, r->ncols);
    else RedisModule_ReplyWithArray(ctx, r->ncols);
    for (int i = 0; i < r->ncols; i++) {
        if (format & RESULT_MAP) {
            const char *name = next_name(&names);
            RedisModule_ReplyWithStringBuffer(ctx, name, strlen(name));
        }
        value v = next_value(r, at);
        if (format & RESULT_TYPED) reply_typed_value(ctx, &v);
        else reply_value(ctx, &v, resp3);
    }
}

void result_reply(result *r, RedisModuleCtx *ctx, int format) {
    int resp3 = -1; /* not known yet */
    RedisModule_ReplyWithArray(ctx, 1 + r->nrows);
    reply_header(r, ctx);
    size_t at = 0;
    for (long long row = 0; row < r->nrows; row++) reply_row(r, ctx, &at, format, &resp3);
}
