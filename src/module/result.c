/* result.c - buffered statement rows and their Redis reply; see result.h.
 *
 * Encoding in buf, one value after another: a type byte (SQLITE_INTEGER,
 * SQLITE_FLOAT, SQLITE_TEXT, SQLITE_BLOB, SQLITE_NULL), then for INTEGER
 * 8 bytes, for FLOAT/TEXT/BLOB a 4-byte length and the bytes (a REAL as
 * text that reads back exactly), for NULL nothing. */
#include "result.h"

#include <stdlib.h>
#include <string.h>

void result_init(result *r) {
    memset(r, 0, sizeof(*r));
}

static void free_names(char **v, int n) {
    if (!v) return;
    for (int i = 0; i < n; i++) sqlite3_free(v[i]);
    sqlite3_free(v);
}

void result_clear(result *r) {
    free_names(r->names, r->ncols);
    free_names(r->types, r->ncols);
    sqlite3_free(r->buf);
    result_init(r);
}

/* Declared types in lower case: SQLite reports "int" declared as INT. */
static char *lower_copy(const char *s) {
    char *c = sqlite3_mprintf("%s", s);
    for (char *p = c; p && *p; p++)
        if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
    return c;
}

int result_begin(result *r, sqlite3_stmt *stmt) {
    result_clear(r);
    int n = sqlite3_column_count(stmt);
    r->names = sqlite3_malloc64(sizeof(char *) * (n + 1));
    r->types = sqlite3_malloc64(sizeof(char *) * (n + 1));
    if (!r->names || !r->types) return SQLITE_NOMEM;
    memset(r->names, 0, sizeof(char *) * (n + 1));
    memset(r->types, 0, sizeof(char *) * (n + 1));
    r->ncols = n;
    for (int i = 0; i < n; i++) {
        const char *name = sqlite3_column_name(stmt, i);
        const char *type = sqlite3_column_decltype(stmt, i);
        r->names[i] = sqlite3_mprintf("%s", name ? name : "");
        r->types[i] = type ? lower_copy(type) : NULL; /* else filled from row 1 */
        if (!r->names[i] || (type && !r->types[i])) return SQLITE_NOMEM;
    }
    return SQLITE_OK;
}

static int reserve(result *r, size_t more) {
    if (r->len + more <= r->cap) return 0;
    size_t cap = r->cap ? r->cap : 256;
    while (cap < r->len + more) cap *= 2;
    unsigned char *b = sqlite3_realloc64(r->buf, cap);
    if (!b) return -1;
    r->buf = b;
    r->cap = cap;
    return 0;
}

static int put_bytes(result *r, int type, const void *p, uint32_t n) {
    if (reserve(r, 5 + (size_t)n) != 0) return SQLITE_NOMEM;
    r->buf[r->len++] = (unsigned char)type;
    memcpy(r->buf + r->len, &n, 4);
    if (n) memcpy(r->buf + r->len + 4, p, n);
    r->len += 4 + (size_t)n;
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

/* The shortest of SQLite's renderings (15 to 17 digits) that reads back
 * as exactly the same double: "1.5", "100.0", "0.30000000000000004". */
static void real_to_text(double v, char out[40]) {
    for (int digits = 15; digits <= 17; digits++) {
        sqlite3_snprintf(40, out, "%!.*g", digits, v);
        if (strtod(out, NULL) == v) return;
    }
}

static int add_value(result *r, sqlite3_stmt *stmt, int i) {
    int type = sqlite3_column_type(stmt, i);
    if (type == SQLITE_INTEGER) {
        sqlite3_int64 v = sqlite3_column_int64(stmt, i);
        if (reserve(r, 9) != 0) return SQLITE_NOMEM;
        r->buf[r->len++] = SQLITE_INTEGER;
        memcpy(r->buf + r->len, &v, 8);
        r->len += 8;
        return SQLITE_OK;
    }
    if (type == SQLITE_NULL) {
        if (reserve(r, 1) != 0) return SQLITE_NOMEM;
        r->buf[r->len++] = SQLITE_NULL;
        return SQLITE_OK;
    }
    if (type == SQLITE_FLOAT) {
        char text[40];
        real_to_text(sqlite3_column_double(stmt, i), text);
        return put_bytes(r, SQLITE_FLOAT, text, (uint32_t)strlen(text));
    }
    const void *p = type == SQLITE_BLOB ? sqlite3_column_blob(stmt, i) : (const void *)sqlite3_column_text(stmt, i);
    int n = sqlite3_column_bytes(stmt, i);
    if (!p && n) return SQLITE_NOMEM;
    return put_bytes(r, type, p, (uint32_t)n);
}

int result_add_row(result *r, sqlite3_stmt *stmt) {
    for (int i = 0; i < r->ncols; i++) {
        if (!r->types[i] && !(r->types[i] = sqlite3_mprintf("%s", storage_class(sqlite3_column_type(stmt, i)))))
            return SQLITE_NOMEM;
        int rc = add_value(r, stmt, i);
        if (rc != SQLITE_OK) return rc;
    }
    r->nrows++;
    return SQLITE_OK;
}

static void reply_header(result *r, RedisModuleCtx *ctx) {
    RedisModule_ReplyWithArray(ctx, r->ncols);
    for (int i = 0; i < r->ncols; i++) {
        const char *type = r->types[i] ? r->types[i] : "";
        RedisModule_ReplyWithArray(ctx, 2);
        RedisModule_ReplyWithStringBuffer(ctx, r->names[i], strlen(r->names[i]));
        RedisModule_ReplyWithStringBuffer(ctx, type, strlen(type));
    }
}

/* Replies one value at *at and moves past it. */
static void reply_value(result *r, RedisModuleCtx *ctx, size_t *at) {
    int type = r->buf[(*at)++];
    if (type == SQLITE_NULL) {
        RedisModule_ReplyWithNull(ctx);
        return;
    }
    if (type == SQLITE_INTEGER) {
        long long v;
        memcpy(&v, r->buf + *at, 8);
        *at += 8;
        RedisModule_ReplyWithLongLong(ctx, v);
        return;
    }
    uint32_t n;
    memcpy(&n, r->buf + *at, 4);
    RedisModule_ReplyWithStringBuffer(ctx, (const char *)r->buf + *at + 4, n);
    *at += 4 + (size_t)n;
}

void result_reply(result *r, RedisModuleCtx *ctx) {
    RedisModule_ReplyWithArray(ctx, 1 + r->nrows);
    reply_header(r, ctx);
    size_t at = 0;
    for (long long row = 0; row < r->nrows; row++) {
        RedisModule_ReplyWithArray(ctx, r->ncols);
        for (int i = 0; i < r->ncols; i++) reply_value(r, ctx, &at);
    }
}
