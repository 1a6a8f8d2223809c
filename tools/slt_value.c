/* slt_value.c - how kvsql-slt renders query values, and the MD5 of them.
 *
 * Called by the engines (tools/slt_sqlite.c, tools/slt_module.c) to turn
 * each value into the text a test script expects, and by the script runner
 * (tools/slt_script.c) to hash results. All rendering goes through one
 * function on an SQLite statement column, so that the in-process engines
 * and the module, whose values arrive over the network, cannot differ in
 * how a value prints: only in which value they produced. */
#include "slt.h"

#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- result rows ------------------------------------------------------- */

int slt_rows_add(slt_rows *r, char *value) {
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        char **v = realloc(r->values, cap * sizeof(*v));
        if (!v) {
            free(value);
            return -1;
        }
        r->values = v;
        r->cap = cap;
    }
    r->values[r->n++] = value;
    return 0;
}

void slt_rows_clear(slt_rows *r) {
    for (size_t i = 0; i < r->n; i++) free(r->values[i]);
    free(r->values);
    memset(r, 0, sizeof(*r));
}

char slt_type_of_column(const char *types, int i) {
    return i < (int)strlen(types) ? types[i] : 'T';
}

/* ---- rendering --------------------------------------------------------- */

/* A malloc'd, NUL-terminated copy of s[0..n) with every byte outside
 * printable ASCII (a NUL too) as '@'. */
static char *printable_copy_n(const char *s, size_t n) {
    char *out = malloc(n + 1);
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = (c < ' ' || c > '~') ? '@' : (char)c;
    }
    out[n] = 0;
    return out;
}

static char *printable_copy(const char *s) {
    return printable_copy_n(s, strlen(s));
}

static char *render_formatted(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* Formats with SQLite's printf, as the original runner does. */
static char *render_formatted(const char *format, ...) {
    va_list ap;
    va_start(ap, format);
    char *s = sqlite3_vmprintf(format, ap);
    va_end(ap);
    if (!s) return NULL;
    char *out = printable_copy(s);
    sqlite3_free(s);
    return out;
}

static char *render_text(sqlite3_stmt *stmt, int col) {
    const char *text = (const char *)sqlite3_column_text(stmt, col);
    if (!text) {
        if (sqlite3_errcode(sqlite3_db_handle(stmt)) == SQLITE_NOMEM) return NULL;
        text = ""; /* a zero-length BLOB */
    }
    int n = sqlite3_column_bytes(stmt, col);
    return n > 0 ? printable_copy_n(text, (size_t)n) : printable_copy("(empty)");
}

char *slt_render_column(sqlite3_stmt *stmt, int col, char type) {
    if (sqlite3_column_type(stmt, col) == SQLITE_NULL) return printable_copy("NULL");
    switch (type) {
    case 'I': return render_formatted("%d", sqlite3_column_int(stmt, col));
    case 'R': return render_formatted("%.3f", sqlite3_column_double(stmt, col));
    default: return render_text(stmt, col);
    }
}

/* ---- values from elsewhere --------------------------------------------- */

struct slt_converter {
    sqlite3 *db;
    sqlite3_stmt *select; /* SELECT ?1 */
};

slt_converter *slt_converter_new(void) {
    slt_converter *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    if (sqlite3_open(":memory:", &c->db) != SQLITE_OK ||
        sqlite3_prepare_v2(c->db, "SELECT ?1", -1, &c->select, NULL) != SQLITE_OK) {
        slt_converter_free(c);
        return NULL;
    }
    return c;
}

void slt_converter_free(slt_converter *c) {
    if (!c) return;
    sqlite3_finalize(c->select);
    sqlite3_close(c->db);
    free(c);
}

/* Renders the value bound to ?1, then unbinds it. */
static char *render_bound(slt_converter *c, char type) {
    char *out = NULL;
    if (sqlite3_step(c->select) == SQLITE_ROW) out = slt_render_column(c->select, 0, type);
    sqlite3_reset(c->select);
    sqlite3_clear_bindings(c->select);
    return out;
}

char *slt_convert_null(void) {
    return printable_copy("NULL");
}

char *slt_convert_integer(slt_converter *c, sqlite3_int64 v, char type) {
    sqlite3_bind_int64(c->select, 1, v);
    return render_bound(c, type);
}

/* Whether text is how SQLite renders the REAL d: as sqlite3_column_text
 * does (15 significant digits), or with the 17 that round-trip exactly. */
static int renders_as(slt_converter *c, double d, const char *text) {
    char buf[64];
    int same = 0;
    sqlite3_bind_double(c->select, 1, d);
    if (sqlite3_step(c->select) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(c->select, 0);
        same = t && strcmp(t, text) == 0;
    }
    sqlite3_reset(c->select);
    sqlite3_clear_bindings(c->select);
    if (!same) same = strcmp(sqlite3_snprintf(sizeof(buf), buf, "%!.17g", d), text) == 0;
    return same;
}

/* Whether p[0..n) is a REAL as SQLite renders it (see renders_as); *d gets
 * its value. The module sends REALs so; a TEXT of the same spelling is
 * taken for a REAL too, which renders the same for T and R and, for I,
 * differs only for an exponent form such as "1.0e+20". */
static int is_real_rendering(slt_converter *c, const char *p, size_t n, double *d) {
    char buf[64];
    if (n == 0 || n >= sizeof(buf)) return 0;
    if (!(p[0] == '-' || p[0] == 'I' || (p[0] >= '0' && p[0] <= '9'))) return 0;
    memcpy(buf, p, n);
    buf[n] = 0;
    char *end;
    *d = strtod(buf, &end);
    return *end == 0 && renders_as(c, *d, buf);
}

char *slt_convert_string(slt_converter *c, const char *p, size_t n, char type) {
    double d;
    if (is_real_rendering(c, p, n, &d)) sqlite3_bind_double(c->select, 1, d);
    else if (memchr(p, 0, n)) sqlite3_bind_blob(c->select, 1, p, (int)n, SQLITE_STATIC);
    else sqlite3_bind_text(c->select, 1, p, (int)n, SQLITE_STATIC);
    return render_bound(c, type);
}

/* ---- hashing ----------------------------------------------------------- */

int slt_md5_values(char *const *values, size_t n, char hex[33]) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL);
    for (size_t i = 0; ok && i < n; i++)
        ok = EVP_DigestUpdate(ctx, values[i], strlen(values[i])) && EVP_DigestUpdate(ctx, "\n", 1);
    ok = ok && EVP_DigestFinal_ex(ctx, digest, &len) && len == 16;
    EVP_MD_CTX_free(ctx);
    if (!ok) return -1;
    for (unsigned int i = 0; i < len; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    return 0;
}
