/* change_entry.c - a captured row change and its encoding for the stream
 * T:changes; see change_entry.h and docs/FORMAT.md ("The changes stream").
 *
 * Called by change_log.c, which keeps a transaction's entries for the
 * module (module/store/changes.c) and the library (client/capture.c): from SQLite's
 * preupdate hook (the values, each already the typed JSON pair
 * ["integer","1"]), then to name the values by column (PRAGMA
 * table_xinfo), and by whoever writes the stream for the entry's
 * field/value list. No Redis API: the module and the library write the
 * same bytes. */
/* Debian's libsqlite3 is built with it; the declarations need the macro. */
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include "change_entry.h"
#include "sqlite.h"

#include "real_text.h"
#include "utf8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const op_names[] = {"insert", "update", "delete", "schema"};

static const char null_json[] = "[\"null\",null]";

/* ---- small helpers ------------------------------------------------------ */

static char *dup_str(const char *s, size_t len) {
    char *p = sqlite3_malloc64(len + 1);
    if (!p) return NULL;
    memcpy(p, s, len);
    p[len] = 0;
    return p;
}

static void free_strs(char **v, int n) {
    if (!v) return;
    for (int i = 0; i < n; i++) sqlite3_free(v[i]);
    sqlite3_free(v);
}

/* The text built in out, or NULL (and out freed) when out of memory. */
static char *finish(sqlite3_str *out) {
    if (sqlite3_str_errcode(out)) {
        sqlite3_free(sqlite3_str_finish(out));
        return NULL;
    }
    return sqlite3_str_finish(out);
}

void change_entry_free(change_entry *e) {
    sqlite3_free(e->table);
    free_strs(e->rawold, e->nraw);
    free_strs(e->rawnew, e->nraw);
    sqlite3_free(e->key);
    sqlite3_free(e->newj);
    sqlite3_free(e->oldj);
    sqlite3_free(e->sql);
    memset(e, 0, sizeof(*e));
}

/* ---- typed values as JSON ------------------------------------------------ */

/* A JSON string of valid UTF-8 text. */
static void json_string(sqlite3_str *out, const char *s, size_t n) {
    sqlite3_str_appendchar(out, 1, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') sqlite3_str_appendf(out, "\\%c", c);
        else if (c < 0x20) sqlite3_str_appendf(out, "\\u%04x", c);
        else sqlite3_str_appendchar(out, 1, (char)c);
    }
    sqlite3_str_appendchar(out, 1, '"');
}

static void hex(sqlite3_str *out, const unsigned char *p, size_t n) {
    static const char digits[] = "0123456789abcdef";
    sqlite3_str_appendchar(out, 1, '"');
    for (size_t i = 0; i < n; i++) {
        sqlite3_str_appendchar(out, 1, digits[p[i] >> 4]);
        sqlite3_str_appendchar(out, 1, digits[p[i] & 15]);
    }
    sqlite3_str_appendchar(out, 1, '"');
}

static void text_json(sqlite3_str *out, sqlite3_value *v) {
    const unsigned char *p = sqlite3_value_text(v);
    size_t n = (size_t)sqlite3_value_bytes(v);
    sqlite3_str_appendall(out, "[\"text\",");
    if (utf8_valid(p, n)) json_string(out, (const char *)p, n);
    else {
        hex(out, p, n);
        sqlite3_str_appendall(out, ",\"hex\"");
    }
    sqlite3_str_appendchar(out, 1, ']');
}

/* ["type","text"]: the TYPED reply's pair (docs/COMMANDS.md); a BLOB in
 * lower-case hex, TEXT that is not valid UTF-8 as ["text","<hex>","hex"];
 * v NULL is null. */
static char *typed_json(sqlite3_value *v) {
    sqlite3_str *out = sqlite3_str_new(NULL);
    char num[40];
    switch (v ? sqlite3_value_type(v) : SQLITE_NULL) {
    case SQLITE_INTEGER: sqlite3_str_appendf(out, "[\"integer\",\"%lld\"]", sqlite3_value_int64(v)); break;
    case SQLITE_FLOAT:
        kvsql_real_text(sqlite3_value_double(v), num);
        sqlite3_str_appendf(out, "[\"real\",\"%s\"]", num);
        break;
    case SQLITE_TEXT: text_json(out, v); break;
    case SQLITE_BLOB: {
        const void *p = sqlite3_value_blob(v);
        sqlite3_str_appendall(out, "[\"blob\",");
        hex(out, p, (size_t)sqlite3_value_bytes(v));
        sqlite3_str_appendchar(out, 1, ']');
        break;
    }
    default: sqlite3_str_appendall(out, null_json);
    }
    return finish(out);
}

/* ---- building entries ------------------------------------------------------ */

/* The values of one side of the running preupdate (old or new), or NULL
 * (failed). */
static char **take_values(sqlite3 *db, int n, int old) {
    char **v = sqlite3_malloc64(sizeof(*v) * (size_t)(n ? n : 1));
    if (!v) return NULL;
    memset(v, 0, sizeof(*v) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) {
        sqlite3_value *val = NULL;
        int rc = old ? sqlite3_preupdate_old(db, i, &val) : sqlite3_preupdate_new(db, i, &val);
        v[i] = typed_json(rc == SQLITE_OK ? val : NULL);
        if (!v[i]) {
            free_strs(v, n);
            return NULL;
        }
    }
    return v;
}

int change_entry_from_hook(change_entry *e, sqlite3 *db, int op, const char *table, sqlite3_int64 rowid,
                           int with_old, int with_new) {
    e->op = op;
    e->rowid = rowid;
    e->nraw = sqlite3_preupdate_count(db);
    e->depth = sqlite3_preupdate_depth(db);
    e->table = dup_str(table, strlen(table));
    if (with_old) e->rawold = take_values(db, e->nraw, 1);
    if (with_new) e->rawnew = take_values(db, e->nraw, 0);
    return !e->table || (with_old && !e->rawold) || (with_new && !e->rawnew) ? -1 : 0;
}

int change_entry_schema(change_entry *e, const char *sql) {
    e->op = CHANGE_SCHEMA;
    size_t len = strlen(sql);
    while (len && (sql[len - 1] == ';' || sql[len - 1] == ' ' || sql[len - 1] == '\n')) len--;
    e->sql = dup_str(sql, len);
    return e->sql ? 0 : -1;
}

/* ---- columns ------------------------------------------------------------------ */

/* Prepares kvsql's own query with *trusted set (the caller's authorizer
 * lets it past while set; NULL: no such flag). */
static int prepare_trusted(sqlite3 *db, int *trusted, const char *sql, sqlite3_stmt **st) {
    if (trusted) *trusted = 1;
    int rc = sqlite3_prepare_v2(db, sql, -1, st, NULL);
    if (trusted) *trusted = 0;
    return rc;
}

/* Whether type names word anywhere, in any case. */
static int type_has(const char *type, const char *word) {
    size_t n = strlen(word);
    for (; *type; type++)
        if (sqlite3_strnicmp(type, word, (int)n) == 0) return 1;
    return 0;
}

/* SQLite's rule for REAL affinity of a declared type (section 3.1 of
 * https://sqlite.org/datatype3.html). */
static int real_affinity(const char *type) {
    if (!type) return 0;
    if (type_has(type, "INT") || type_has(type, "CHAR") || type_has(type, "CLOB") || type_has(type, "TEXT") ||
        type_has(type, "BLOB"))
        return 0;
    return type_has(type, "REAL") || type_has(type, "FLOA") || type_has(type, "DOUB");
}

static void free_columns(change_columns *c) {
    free_strs(c->names, c->ncols);
    sqlite3_free(c->hidden);
    sqlite3_free(c->pk);
    sqlite3_free(c->real);
    sqlite3_free(c->table);
}

/* Room for cap columns in c's arrays; 0, or -1. */
static int grow_columns(change_columns *c, int cap) {
    char **names = sqlite3_realloc64(c->names, sizeof(char *) * (size_t)cap);
    if (names) c->names = names;
    int *h = sqlite3_realloc64(c->hidden, sizeof(int) * (size_t)cap);
    if (h) c->hidden = h;
    int *pk = sqlite3_realloc64(c->pk, sizeof(int) * (size_t)cap);
    if (pk) c->pk = pk;
    int *real = sqlite3_realloc64(c->real, sizeof(int) * (size_t)cap);
    if (real) c->real = real;
    return !names || !h || !pk || !real ? -1 : 0;
}

/* One row of PRAGMA table_xinfo (cid, name, type, notnull, dflt_value,
 * pk, hidden) into column c->ncols; 0, or -1. */
static int add_column(change_columns *c, sqlite3_stmt *st) {
    const char *name = (const char *)sqlite3_column_text(st, 1);
    c->names[c->ncols] = dup_str(name ? name : "", name ? strlen(name) : 0);
    c->hidden[c->ncols] = sqlite3_column_int(st, 6);
    c->pk[c->ncols] = sqlite3_column_int(st, 5);
    c->real[c->ncols] = real_affinity((const char *)sqlite3_column_text(st, 2));
    return c->names[c->ncols++] ? 0 : -1;
}

/* PRAGMA main.<pragma>('<table>') prepared past the guard. The pragmas
 * themselves, not their table-valued functions (pragma_table_xinfo(...)),
 * which prepare the same pragma again inside: half the work, and this
 * runs for every table a call changes with capture on. */
static int prepare_pragma(sqlite3 *db, int *trusted, const char *pragma, const char *table, sqlite3_stmt **st) {
    char *sql = sqlite3_mprintf("PRAGMA main.%s(%Q)", pragma, table);
    if (!sql) return SQLITE_NOMEM;
    int rc = prepare_trusted(db, trusted, sql, st);
    sqlite3_free(sql);
    return rc;
}

/* 0: read; 1: the table no longer exists (no columns); -1: not read
 * (out of memory, or SQLite stopped the query: a call that was
 * interrupted, or must move). A query that ended early must never pass
 * for a table without columns or with fewer than it has. */
static int load_columns(change_columns *c, sqlite3 *db, int *trusted) {
    sqlite3_stmt *st;
    if (prepare_pragma(db, trusted, "table_xinfo", c->table, &st) != SQLITE_OK) return -1;
    int cap = 0, rc = 0, step = SQLITE_DONE;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        if (c->ncols == cap) rc = grow_columns(c, cap = cap ? cap * 2 : 8);
        if (rc) break;
        rc = add_column(c, st);
    }
    sqlite3_finalize(st);
    if (rc || step != SQLITE_DONE) return -1;
    if (c->ncols == 0) return 1;
    if (prepare_pragma(db, trusted, "table_list", c->table, &st) != SQLITE_OK) return -1;
    step = sqlite3_step(st);
    if (step == SQLITE_ROW) c->without_rowid = sqlite3_column_int(st, 4); /* schema name type ncol wr */
    sqlite3_finalize(st);
    return step == SQLITE_ROW || step == SQLITE_DONE ? 0 : -1;
}

/* The columns of table, from tables or the schema; NULL with *gone set
 * when the table no longer exists, NULL with *gone 0 when they could not
 * be read (load_columns). */
static change_columns *columns(change_tables *tables, sqlite3 *db, int *trusted, const char *table, int *gone) {
    *gone = 0;
    for (size_t i = 0; i < tables->n; i++)
        if (strcmp(tables->t[i].table, table) == 0) return &tables->t[i];
    change_columns *t = sqlite3_realloc64(tables->t, sizeof(*t) * (tables->n + 1));
    if (!t) return NULL;
    tables->t = t;
    change_columns *c = &t[tables->n];
    memset(c, 0, sizeof(*c));
    c->table = dup_str(table, strlen(table));
    int rc = c->table ? load_columns(c, db, trusted) : -1;
    if (rc != 0) {
        free_columns(c);
        *gone = rc > 0;
        return NULL;
    }
    tables->n++;
    return c;
}

void change_tables_forget(change_tables *tables) {
    for (size_t i = 0; i < tables->n; i++) free_columns(&tables->t[i]);
    sqlite3_free(tables->t);
    tables->t = NULL;
    tables->n = 0;
}

/* ---- resolving entries ------------------------------------------------------- */

/* {"col":["type","text"],...} of one side; generated columns left out. */
static char *side_json(const change_columns *c, char **raw, int nraw) {
    sqlite3_str *out = sqlite3_str_new(NULL);
    sqlite3_str_appendchar(out, 1, '{');
    int storage = 0, first = 1;
    for (int i = 0; i < c->ncols; i++) {
        if (c->hidden[i] == 2) continue; /* virtual generated: not stored */
        int at = storage++;
        if (c->hidden[i] != 0) continue; /* stored generated: computed anew */
        if (!first) sqlite3_str_appendchar(out, 1, ',');
        first = 0;
        json_string(out, c->names[i], strlen(c->names[i]));
        sqlite3_str_appendchar(out, 1, ':');
        const char *v = at < nraw && raw[at] ? raw[at] : null_json;
        if (c->real[i] && strncmp(v, "[\"integer\",\"", 12) == 0) { /* stored as an integer, read as REAL */
            char num[40];
            kvsql_real_text((double)strtoll(v + 12, NULL, 10), num);
            sqlite3_str_appendf(out, "[\"real\",\"%s\"]", num);
        } else sqlite3_str_appendall(out, v);
    }
    sqlite3_str_appendchar(out, 1, '}');
    return finish(out);
}

/* The PRIMARY KEY's values of a WITHOUT ROWID table's entry, in its order. */
static void primary_key_json(sqlite3_str *out, const change_columns *c, const change_entry *e) {
    char **raw = e->rawold ? e->rawold : e->rawnew;
    sqlite3_str_appendchar(out, 1, '[');
    for (int k = 1; k <= c->ncols; k++) {
        int storage = 0;
        for (int i = 0; i < c->ncols; i++) {
            if (c->hidden[i] == 2) continue;
            if (c->pk[i] == k) {
                if (k > 1) sqlite3_str_appendchar(out, 1, ',');
                sqlite3_str_appendall(out, storage < e->nraw && raw[storage] ? raw[storage] : null_json);
            }
            storage++;
        }
    }
    sqlite3_str_appendchar(out, 1, ']');
}

/* The key: [rowid] of a rowid table, the PRIMARY KEY's values in its
 * order for a WITHOUT ROWID table. */
static char *key_json(const change_columns *c, const change_entry *e) {
    sqlite3_str *out = sqlite3_str_new(NULL);
    if (!c->without_rowid) sqlite3_str_appendf(out, "[[\"integer\",\"%lld\"]]", e->rowid);
    else primary_key_json(out, c, e);
    return finish(out);
}

int change_entry_resolve(change_entry *e, change_tables *tables, sqlite3 *db, int *trusted) {
    if (e->op >= CHANGE_SCHEMA || e->key) return 1;
    int gone;
    change_columns *c = columns(tables, db, trusted, e->table, &gone);
    if (!c && !gone) return -1; /* not read: the caller fails, never drops the entry */
    if (!c) {
        change_entry_free(e);
        return 0;
    }
    e->key = key_json(c, e);
    if (e->rawnew) e->newj = side_json(c, e->rawnew, e->nraw);
    if (e->rawold) e->oldj = side_json(c, e->rawold, e->nraw);
    free_strs(e->rawold, e->nraw);
    free_strs(e->rawnew, e->nraw);
    e->rawold = e->rawnew = NULL;
    if (!e->key || (e->op != CHANGE_DELETE && !e->newj) || (e->op != CHANGE_INSERT && !e->oldj)) return -1;
    return 1;
}

/* ---- the stream entry's fields ---------------------------------------------- */

int change_entry_fields(const change_entry *e, const char *fv[CHANGE_FIELDS_MAX]) {
    int n = 0;
    fv[n++] = "op", fv[n++] = op_names[e->op];
    if (e->op == CHANGE_SCHEMA) {
        fv[n++] = "sql";
        fv[n++] = e->sql;
        return n;
    }
    fv[n++] = "table", fv[n++] = e->table, fv[n++] = "key", fv[n++] = e->key;
    if (e->newj) fv[n++] = "new", fv[n++] = e->newj;
    if (e->oldj) fv[n++] = "old", fv[n++] = e->oldj;
    return n;
}
