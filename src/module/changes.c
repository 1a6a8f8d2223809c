/* changes.c - change data capture into the stream T:changes; see changes.h
 * and docs/FORMAT.md ("The changes stream").
 *
 * While a write call runs on a database whose capture is on, SQLite's
 * preupdate hook records each row change of the main database: its table,
 * operation, rowid, and old and new values, each value already encoded as
 * the typed JSON pair ["integer","1"]. After each statement exec.c calls
 * changes_stmt_end, which names the values by column (PRAGMA table_xinfo),
 * follows BEGIN/SAVEPOINT/RELEASE/ROLLBACK [TO] so that changes a rollback
 * undid are dropped, and adds a schema entry after DDL. At the end of a
 * call that wrote pages, store_keyspace.c calls changes_write: one XADD per
 * entry, each propagated (RedisModule_Call "!") in the MULTI/EXEC that
 * carries the pages, so the stream holds exactly the committed changes. A
 * call that fails writes nothing at all, pages or entries. */
/* Debian's libsqlite3 is built with it; the declarations need the macro. */
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include "changes.h"

#include "format.h"
#include "utf8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { OP_INSERT, OP_UPDATE, OP_DELETE, OP_SCHEMA, OP_COMMIT };
static const char *const op_names[] = {"insert", "update", "delete", "schema", "commit"};

/* One change. Until resolved the values are bare JSON pairs by storage
 * position; resolving makes the key, new and old JSON texts. */
typedef struct entry {
    int op;
    char *table;
    sqlite3_int64 rowid;
    int nraw;
    char **rawold, **rawnew; /* NULL when the operation has no such side */
    char *key, *newj, *oldj; /* resolved JSON */
    char *sql;               /* schema entries */
} entry;

/* What the capture knows of a table: its columns. */
typedef struct colinfo {
    char *table;
    int ncols, without_rowid;
    char **names;
    int *hidden, *pk; /* per column: PRAGMA table_xinfo's hidden and pk */
    int *real;        /* per column: REAL affinity (SQLite stores 100.0 as 100) */
} colinfo;

typedef struct savepoint {
    char *name;
    size_t pos;
} savepoint;

static struct {
    int active;
    sqlite3 *db;
    guard *g;
    char maxlen[24]; /* "" (no trimming) or the count */
    char trim[2];    /* "~" or "=" */
    RedisModuleString *stream;
    entry *e;
    size_t n, cap;
    size_t stmt_start; /* entries before the running statement */
    int failed;        /* out of memory in the hook */
    int was_autocommit;
    int ddl;
    sqlite3_int64 schema_before;
    savepoint *sp;
    size_t nsp, capsp;
    size_t txn_start;
    colinfo *ci;
    size_t nci;
} cur;

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

static void entry_free(entry *e) {
    sqlite3_free(e->table);
    free_strs(e->rawold, e->nraw);
    free_strs(e->rawnew, e->nraw);
    sqlite3_free(e->key);
    sqlite3_free(e->newj);
    sqlite3_free(e->oldj);
    sqlite3_free(e->sql);
    memset(e, 0, sizeof(*e));
}

static void truncate_entries(size_t n) {
    while (cur.n > n) entry_free(&cur.e[--cur.n]);
}

static entry *new_entry(void) {
    if (cur.n == cur.cap) {
        size_t cap = cur.cap ? cur.cap * 2 : 16;
        entry *e = sqlite3_realloc64(cur.e, cap * sizeof(*e));
        if (!e) return NULL;
        cur.e = e;
        cur.cap = cap;
    }
    entry *e = &cur.e[cur.n++];
    memset(e, 0, sizeof(*e));
    return e;
}

static void forget_columns(void) {
    for (size_t i = 0; i < cur.nci; i++) {
        colinfo *c = &cur.ci[i];
        free_strs(c->names, c->ncols);
        sqlite3_free(c->hidden);
        sqlite3_free(c->pk);
        sqlite3_free(c->real);
        sqlite3_free(c->table);
    }
    sqlite3_free(cur.ci);
    cur.ci = NULL;
    cur.nci = 0;
}

static void drop_savepoints(size_t keep) {
    while (cur.nsp > keep) sqlite3_free(cur.sp[--cur.nsp].name);
}

/* ---- typed values as JSON ------------------------------------------------ */

static int valid_utf8(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t len = utf8_sequence(s + i, n - i);
        if (!len) return 0;
        i += len;
    }
    return 1;
}

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

/* The shortest decimal that reads back as the same double, with a point
 * or exponent so it never reads as an integer ("100.0"), or Inf/-Inf. */
static void real_text(double v, char out[40]) {
    if (v > 1.7976931348623157e308 || v < -1.7976931348623157e308) {
        strcpy(out, v < 0 ? "-Inf" : "Inf");
        return;
    }
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(out, 32, "%.*g", digits, v);
        if (strtod(out, NULL) == v) break;
    }
    if (!strpbrk(out, ".ni")) {
        char *e = strchr(out, 'e');
        size_t at = e ? (size_t)(e - out) : strlen(out);
        memmove(out + at + 2, out + at, strlen(out + at) + 1);
        memcpy(out + at, ".0", 2);
    }
}

/* ["type","text"]: the TYPED reply's pair (docs/COMMANDS.md); a BLOB in
 * lower-case hex, TEXT that is not valid UTF-8 as ["text","<hex>","hex"]. */
static char *typed_json(sqlite3_value *v) {
    sqlite3_str *out = sqlite3_str_new(NULL);
    char num[40];
    switch (v ? sqlite3_value_type(v) : SQLITE_NULL) {
    case SQLITE_INTEGER: sqlite3_str_appendf(out, "[\"integer\",\"%lld\"]", sqlite3_value_int64(v)); break;
    case SQLITE_FLOAT:
        real_text(sqlite3_value_double(v), num);
        sqlite3_str_appendf(out, "[\"real\",\"%s\"]", num);
        break;
    case SQLITE_TEXT: {
        const unsigned char *p = sqlite3_value_text(v);
        size_t n = (size_t)sqlite3_value_bytes(v);
        sqlite3_str_appendall(out, "[\"text\",");
        if (valid_utf8(p, n)) json_string(out, (const char *)p, n);
        else {
            hex(out, p, n);
            sqlite3_str_appendall(out, ",\"hex\"");
        }
        sqlite3_str_appendchar(out, 1, ']');
        break;
    }
    case SQLITE_BLOB: {
        const void *p = sqlite3_value_blob(v);
        sqlite3_str_appendall(out, "[\"blob\",");
        hex(out, p, (size_t)sqlite3_value_bytes(v));
        sqlite3_str_appendchar(out, 1, ']');
        break;
    }
    default: sqlite3_str_appendall(out, "[\"null\",null]");
    }
    if (sqlite3_str_errcode(out)) {
        sqlite3_free(sqlite3_str_finish(out));
        return NULL;
    }
    return sqlite3_str_finish(out);
}

/* ---- the preupdate hook ---------------------------------------------------- */

/* The values of one side of the change (old or new), or NULL (failed). */
static char **take_values(sqlite3 *db, int n, int old) {
    char **v = sqlite3_malloc64(sizeof(*v) * (size_t)(n ? n : 1));
    if (!v) return NULL;
    memset(v, 0, sizeof(*v) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) {
        sqlite3_value *val = NULL;
        int rc = old ? sqlite3_preupdate_old(db, i, &val) : sqlite3_preupdate_new(db, i, &val);
        v[i] = rc == SQLITE_OK ? typed_json(val) : dup_str("[\"null\",null]", 13);
        if (!v[i]) {
            free_strs(v, n);
            return NULL;
        }
    }
    return v;
}

static int record(sqlite3 *db, int op, const char *table, sqlite3_int64 rowid, int with_old, int with_new) {
    entry *e = new_entry();
    if (!e) return -1;
    e->op = op;
    e->rowid = rowid;
    e->nraw = sqlite3_preupdate_count(db);
    e->table = dup_str(table, strlen(table));
    if (with_old) e->rawold = take_values(db, e->nraw, 1);
    if (with_new) e->rawnew = take_values(db, e->nraw, 0);
    return !e->table || (with_old && !e->rawold) || (with_new && !e->rawnew) ? -1 : 0;
}

static void on_preupdate(void *arg, sqlite3 *db, int op, const char *dbname, const char *table, sqlite3_int64 key1,
                         sqlite3_int64 key2) {
    (void)arg;
    if (!cur.active || cur.failed || strcmp(dbname, "main") != 0) return; /* TEMP tables are not stored */
    int rc;
    if (op == SQLITE_INSERT) rc = record(db, OP_INSERT, table, key2, 0, 1);
    else if (op == SQLITE_DELETE) rc = record(db, OP_DELETE, table, key1, 1, 0);
    else if (key1 == key2) rc = record(db, OP_UPDATE, table, key1, 1, 1);
    else /* the rowid changed: a delete and an insert */
        rc = record(db, OP_DELETE, table, key1, 1, 0) || record(db, OP_INSERT, table, key2, 0, 1) ? -1 : 0;
    if (rc != 0) cur.failed = 1;
}

/* ---- columns ------------------------------------------------------------------ */

/* Runs kvsql's own query past the guard. */
static int prepare_trusted(const char *sql, sqlite3_stmt **st) {
    cur.g->trusted = 1;
    int rc = sqlite3_prepare_v2(cur.db, sql, -1, st, NULL);
    cur.g->trusted = 0;
    return rc;
}

/* SQLite's rule for REAL affinity of a declared type (section 3.1 of
 * https://sqlite.org/datatype3.html). */
static int real_affinity(const char *type) {
    if (!type) return 0;
    char up[64];
    size_t n = 0;
    for (; type[n] && n + 1 < sizeof(up); n++) up[n] = (char)(type[n] >= 'a' && type[n] <= 'z' ? type[n] - 32 : type[n]);
    up[n] = 0;
    if (strstr(up, "INT") || strstr(up, "CHAR") || strstr(up, "CLOB") || strstr(up, "TEXT") || strstr(up, "BLOB"))
        return 0;
    return strstr(up, "REAL") || strstr(up, "FLOA") || strstr(up, "DOUB");
}

static int load_columns(colinfo *c) {
    sqlite3_stmt *st;
    if (prepare_trusted("SELECT name, hidden, pk, type FROM pragma_table_xinfo(?1, 'main')", &st) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, c->table, -1, SQLITE_STATIC);
    int cap = 0, rc = 0;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        if (c->ncols == cap) {
            cap = cap ? cap * 2 : 8;
            char **names = sqlite3_realloc64(c->names, sizeof(char *) * (size_t)cap);
            if (names) c->names = names;
            int *h = sqlite3_realloc64(c->hidden, sizeof(int) * (size_t)cap);
            if (h) c->hidden = h;
            int *pk = sqlite3_realloc64(c->pk, sizeof(int) * (size_t)cap);
            if (pk) c->pk = pk;
            int *real = sqlite3_realloc64(c->real, sizeof(int) * (size_t)cap);
            if (real) c->real = real;
            if (!names || !h || !pk || !real) rc = -1;
        }
        if (rc) break;
        const char *name = (const char *)sqlite3_column_text(st, 0);
        c->names[c->ncols] = dup_str(name ? name : "", name ? strlen(name) : 0);
        c->hidden[c->ncols] = sqlite3_column_int(st, 1);
        c->pk[c->ncols] = sqlite3_column_int(st, 2);
        c->real[c->ncols] = real_affinity((const char *)sqlite3_column_text(st, 3));
        if (!c->names[c->ncols++]) rc = -1;
    }
    sqlite3_finalize(st);
    if (rc || c->ncols == 0) return -1;
    if (prepare_trusted("SELECT wr FROM pragma_table_list(?1) WHERE schema = 'main'", &st) != SQLITE_OK) return -1;
    sqlite3_bind_text(st, 1, c->table, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) c->without_rowid = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return 0;
}

/* The columns of table, from the cache or the schema; NULL when the table
 * no longer exists (or out of memory). */
static colinfo *columns(const char *table) {
    for (size_t i = 0; i < cur.nci; i++)
        if (strcmp(cur.ci[i].table, table) == 0) return &cur.ci[i];
    colinfo *ci = sqlite3_realloc64(cur.ci, sizeof(*ci) * (cur.nci + 1));
    if (!ci) return NULL;
    cur.ci = ci;
    colinfo *c = &ci[cur.nci];
    memset(c, 0, sizeof(*c));
    c->table = dup_str(table, strlen(table));
    if (!c->table || load_columns(c) != 0) {
        free_strs(c->names, c->ncols);
        sqlite3_free(c->hidden);
        sqlite3_free(c->pk);
        sqlite3_free(c->real);
        sqlite3_free(c->table);
        return NULL;
    }
    cur.nci++;
    return c;
}

/* ---- resolving entries ------------------------------------------------------- */

/* {"col":["type","text"],...} of one side; generated columns left out. */
static char *side_json(const colinfo *c, char **raw, int nraw) {
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
        const char *v = at < nraw && raw[at] ? raw[at] : "[\"null\",null]";
        if (c->real[i] && strncmp(v, "[\"integer\",\"", 12) == 0) { /* stored as an integer, read as REAL */
            char num[40];
            real_text((double)strtoll(v + 12, NULL, 10), num);
            sqlite3_str_appendf(out, "[\"real\",\"%s\"]", num);
        } else sqlite3_str_appendall(out, v);
    }
    sqlite3_str_appendchar(out, 1, '}');
    if (sqlite3_str_errcode(out)) {
        sqlite3_free(sqlite3_str_finish(out));
        return NULL;
    }
    return sqlite3_str_finish(out);
}

/* The key: [rowid] of a rowid table, the PRIMARY KEY's values in its
 * order for a WITHOUT ROWID table. */
static char *key_json(const colinfo *c, const entry *e) {
    sqlite3_str *out = sqlite3_str_new(NULL);
    if (!c->without_rowid) {
        sqlite3_str_appendf(out, "[[\"integer\",\"%lld\"]]", e->rowid);
    } else {
        char **raw = e->rawold ? e->rawold : e->rawnew;
        sqlite3_str_appendchar(out, 1, '[');
        for (int k = 1; k <= c->ncols; k++) {
            int storage = 0;
            for (int i = 0; i < c->ncols; i++) {
                if (c->hidden[i] == 2) continue;
                if (c->pk[i] == k) {
                    if (k > 1) sqlite3_str_appendchar(out, 1, ',');
                    sqlite3_str_appendall(out, storage < e->nraw && raw[storage] ? raw[storage] : "null");
                }
                storage++;
            }
        }
        sqlite3_str_appendchar(out, 1, ']');
    }
    if (sqlite3_str_errcode(out)) {
        sqlite3_free(sqlite3_str_finish(out));
        return NULL;
    }
    return sqlite3_str_finish(out);
}

/* Names the values of the entries the statement made. An entry of a table
 * that no longer exists (its DROP TABLE deleted the rows it cascaded
 * from) is dropped: the schema entry that follows removes it. */
static int resolve_from(size_t from) {
    size_t w = from;
    for (size_t i = from; i < cur.n; i++) {
        entry *e = &cur.e[i];
        if (e->op >= OP_SCHEMA || e->key) {
            cur.e[w++] = *e;
            continue;
        }
        colinfo *c = columns(e->table);
        if (!c) {
            entry_free(e);
            continue;
        }
        e->key = key_json(c, e);
        if (e->rawnew) e->newj = side_json(c, e->rawnew, e->nraw);
        if (e->rawold) e->oldj = side_json(c, e->rawold, e->nraw);
        free_strs(e->rawold, e->nraw);
        free_strs(e->rawnew, e->nraw);
        e->rawold = e->rawnew = NULL;
        if (!e->key || (e->op != OP_DELETE && !e->newj) || (e->op != OP_INSERT && !e->oldj)) return -1;
        cur.e[w++] = *e;
    }
    cur.n = w;
    return 0;
}

/* ---- statements: transactions, savepoints, DDL ------------------------------ */

/* The next token of SQL text at *p: a word or identifier (dequoted) in
 * out; returns 0 at the end. Comments and spaces are skipped. */
static int next_token(const char **p, char *out, size_t cap) {
    const char *s = *p;
    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f') s++;
        if (s[0] == '-' && s[1] == '-') {
            while (*s && *s != '\n') s++;
        } else if (s[0] == '/' && s[1] == '*') {
            const char *end = strstr(s + 2, "*/");
            s = end ? end + 2 : s + strlen(s);
        } else break;
    }
    size_t n = 0;
    if (*s == '"' || *s == '`' || *s == '\'' || *s == '[') {
        char close = *s == '[' ? ']' : *s;
        for (s++; *s; s++) {
            if (*s == close) {
                if (close != ']' && s[1] == close) s++; /* a doubled quote */
                else {
                    s++;
                    break;
                }
            }
            if (n + 1 < cap) out[n++] = *s;
        }
    } else {
        while (*s && (*s == '_' || (*s >= '0' && *s <= '9') || ((*s | 32) >= 'a' && (*s | 32) <= 'z') ||
                      (unsigned char)*s >= 0x80)) {
            if (n + 1 < cap) out[n++] = *s;
            s++;
        }
        if (n == 0 && *s && *s != ';') out[n++] = *s++; /* punctuation: one character */
    }
    out[n] = 0;
    *p = s;
    return n > 0;
}

static int is(const char *word, const char *kw) {
    return strcasecmp(word, kw) == 0;
}

/* The topmost savepoint named name (SQLite compares them case-blind). */
static long find_savepoint(const char *name) {
    for (size_t i = cur.nsp; i-- > 0;)
        if (strcasecmp(cur.sp[i].name, name) == 0) return (long)i;
    return -1;
}

static int push_savepoint(const char *name) {
    if (cur.nsp == cur.capsp) {
        size_t cap = cur.capsp ? cur.capsp * 2 : 8;
        savepoint *sp = sqlite3_realloc64(cur.sp, cap * sizeof(*sp));
        if (!sp) return -1;
        cur.sp = sp;
        cur.capsp = cap;
    }
    cur.sp[cur.nsp].name = dup_str(name, strlen(name));
    cur.sp[cur.nsp].pos = cur.n;
    return cur.sp[cur.nsp++].name ? 0 : -1;
}

/* After a transaction control statement succeeded: keeps the entries in
 * step with what SQLite kept. Returns 0, or -1 when it cannot follow. */
static int follow_transaction(const char *sql, const char *first) {
    char w[256];
    const char *p = sql;
    next_token(&p, w, sizeof(w)); /* the first word again */
    if (is(first, "BEGIN")) {
        cur.txn_start = cur.stmt_start;
        drop_savepoints(0);
    } else if (is(first, "COMMIT") || is(first, "END")) {
        drop_savepoints(0);
    } else if (is(first, "SAVEPOINT")) {
        if (!next_token(&p, w, sizeof(w))) return -1;
        if (cur.was_autocommit) {
            cur.txn_start = cur.stmt_start;
            drop_savepoints(0);
        }
        return push_savepoint(w);
    } else if (is(first, "RELEASE")) {
        if (!next_token(&p, w, sizeof(w))) return -1;
        if (is(w, "SAVEPOINT") && !next_token(&p, w, sizeof(w))) return -1;
        long i = find_savepoint(w);
        if (i < 0) return -1;
        drop_savepoints((size_t)i);
    } else if (is(first, "ROLLBACK")) {
        int more = next_token(&p, w, sizeof(w));
        if (more && is(w, "TRANSACTION")) more = next_token(&p, w, sizeof(w));
        forget_columns(); /* the rollback may have undone DDL */
        if (!more || !is(w, "TO")) { /* the whole transaction */
            truncate_entries(cur.txn_start);
            drop_savepoints(0);
            return 0;
        }
        if (!next_token(&p, w, sizeof(w))) return -1;
        if (is(w, "SAVEPOINT") && !next_token(&p, w, sizeof(w))) return -1;
        long i = find_savepoint(w);
        if (i < 0) return -1;
        truncate_entries(cur.sp[i].pos);
        drop_savepoints((size_t)i + 1);
    }
    return 0;
}

/* PRAGMA main.schema_version, read past the guard; -1 on failure. */
static sqlite3_int64 schema_version(void) {
    sqlite3_stmt *st;
    sqlite3_int64 v = -1;
    if (prepare_trusted("PRAGMA main.schema_version", &st) != SQLITE_OK) return -1;
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* CREATE [TEMP] TABLE [IF NOT EXISTS] [schema.]name AS ... */
static int creates_table_as(const char *sql) {
    char w[256];
    const char *p = sql;
    next_token(&p, w, sizeof(w));
    if (!next_token(&p, w, sizeof(w))) return 0;
    if ((is(w, "TEMP") || is(w, "TEMPORARY")) && !next_token(&p, w, sizeof(w))) return 0;
    if (!is(w, "TABLE") || !next_token(&p, w, sizeof(w))) return 0;
    if (is(w, "IF")) {
        next_token(&p, w, sizeof(w));
        next_token(&p, w, sizeof(w));
        if (!next_token(&p, w, sizeof(w))) return 0;
    }
    if (!next_token(&p, w, sizeof(w))) return 0; /* after the name */
    if (is(w, ".")) {
        next_token(&p, w, sizeof(w));
        if (!next_token(&p, w, sizeof(w))) return 0;
    }
    return is(w, "AS");
}

static int fail(char *err, size_t errlen, const char *msg) {
    snprintf(err, errlen, "ERR kvsql changes: %s", msg);
    return SQLITE_ERROR;
}

int changes_stmt_begin(sqlite3_stmt *stmt, char *err, size_t errlen) {
    if (!cur.active) return SQLITE_OK;
    char first[32];
    const char *p = sqlite3_sql(stmt);
    if (!p) return SQLITE_OK;
    next_token(&p, first, sizeof(first));
    if (is(first, "VACUUM"))
        return fail(err, errlen,
                    "VACUUM is refused while capture is on: it renumbers the rowids the stream names. Run "
                    "SQL.CHANGES key OFF, VACUUM, then SQL.CHANGES key ON (consumers see the restart)");
    cur.stmt_start = cur.n;
    cur.was_autocommit = sqlite3_get_autocommit(cur.db);
    cur.ddl = is(first, "CREATE") || is(first, "DROP") || is(first, "ALTER");
    if (cur.ddl && (cur.schema_before = schema_version()) < 0) return fail(err, errlen, "cannot read the schema");
    return SQLITE_OK;
}

static int add_schema_entry(const char *sql) {
    entry *e = new_entry();
    if (!e) return -1;
    e->op = OP_SCHEMA;
    size_t len = strlen(sql);
    while (len && (sql[len - 1] == ';' || sql[len - 1] == ' ' || sql[len - 1] == '\n')) len--;
    e->sql = dup_str(sql, len);
    return e->sql ? 0 : -1;
}

int changes_stmt_end(sqlite3_stmt *stmt, char *err, size_t errlen) {
    if (!cur.active) return SQLITE_OK;
    if (cur.failed) return fail(err, errlen, "out of memory while capturing the changes");
    const char *sql = sqlite3_sql(stmt);
    char first[32];
    const char *p = sql ? sql : "";
    next_token(&p, first, sizeof(first));
    if (resolve_from(cur.stmt_start) != 0) return fail(err, errlen, "out of memory while capturing the changes");
    if (sqlite3_stmt_readonly(stmt) && follow_transaction(sql ? sql : "", first) != 0)
        return fail(err, errlen, "cannot follow this transaction statement");
    if (cur.ddl) {
        sqlite3_int64 v = schema_version();
        if (v < 0) return fail(err, errlen, "cannot read the schema");
        if (v != cur.schema_before) {
            forget_columns();
            if (creates_table_as(sql))
                return fail(err, errlen,
                            "CREATE TABLE ... AS SELECT is refused while capture is on (its rows would not be "
                            "captured): create the table, then INSERT INTO ... SELECT");
            if (add_schema_entry(sql) != 0) return fail(err, errlen, "out of memory");
        }
    }
    return SQLITE_OK;
}

/* ---- the call ---------------------------------------------------------------- */

static RedisModuleString *aux_name(RedisModuleCtx *ctx, RedisModuleString *keyname, const char *suffix) {
    size_t len;
    const char *k = RedisModule_StringPtrLen(keyname, &len);
    char buf[256];
    size_t n = kvsql_aux_key(buf, sizeof(buf), k, len, suffix);
    if (n < sizeof(buf)) return RedisModule_CreateString(ctx, buf, n);
    char *big = RedisModule_Alloc(n + 1);
    kvsql_aux_key(big, n + 1, k, len, suffix);
    RedisModuleString *s = RedisModule_CreateString(ctx, big, n);
    RedisModule_Free(big);
    return s;
}

/* A field of the open configuration hash into out ("" when missing). */
static void config_field(RedisModuleKey *key, const char *field, char *out, size_t cap) {
    RedisModuleString *v = NULL;
    out[0] = 0;
    RedisModule_HashGet(key, REDISMODULE_HASH_CFIELDS, field, &v, NULL);
    if (!v) return;
    size_t len;
    const char *p = RedisModule_StringPtrLen(v, &len);
    snprintf(out, cap, "%.*s", (int)(len < cap ? len : cap - 1), p);
    RedisModule_FreeString(NULL, v);
}

/* Reads T:changes:cfg: non-zero when capture is on (maxlen/trim filled). */
static int read_config(RedisModuleCtx *ctx, RedisModuleString *keyname, char *maxlen, char *trim) {
    RedisModuleString *name = aux_name(ctx, keyname, CHANGES_AUX_CONFIG);
    RedisModuleKey *key = RedisModule_OpenKey(ctx, name, REDISMODULE_READ | REDISMODULE_OPEN_KEY_NOTOUCH);
    int on = key && RedisModule_KeyType(key) == REDISMODULE_KEYTYPE_HASH;
    if (on) {
        config_field(key, "maxlen", maxlen, 24);
        config_field(key, "trim", trim, 2);
        if (strcmp(maxlen, "0") == 0) maxlen[0] = 0;
        if (strcmp(trim, "=") != 0) strcpy(trim, "~");
    }
    if (key) RedisModule_CloseKey(key);
    RedisModule_FreeString(ctx, name);
    return on;
}

void changes_call_begin(RedisModuleCtx *ctx, RedisModuleString *keyname, sqlite3 *db, guard *g) {
    if (!read_config(ctx, keyname, cur.maxlen, cur.trim)) return;
    cur.active = 1;
    cur.db = db;
    cur.g = g;
    cur.stream = aux_name(ctx, keyname, CHANGES_AUX_STREAM);
    cur.n = cur.txn_start = cur.stmt_start = 0;
    cur.failed = 0;
    sqlite3_preupdate_hook(db, on_preupdate, NULL);
}

void changes_call_end(void) {
    if (!cur.active) return;
    sqlite3_preupdate_hook(cur.db, NULL, NULL);
    truncate_entries(0);
    sqlite3_free(cur.e);
    cur.e = NULL;
    cur.cap = 0;
    drop_savepoints(0);
    sqlite3_free(cur.sp);
    cur.sp = NULL;
    cur.capsp = 0;
    forget_columns();
    RedisModule_FreeString(NULL, cur.stream);
    cur.stream = NULL;
    cur.active = 0;
}

/* ---- the write: XADD, propagated with the pages ---------------------------- */

static int stream_usable(RedisModuleCtx *ctx, RedisModuleString *stream) {
    RedisModuleKey *key = RedisModule_OpenKey(ctx, stream, REDISMODULE_READ | REDISMODULE_OPEN_KEY_NOTOUCH);
    int type = key ? RedisModule_KeyType(key) : REDISMODULE_KEYTYPE_EMPTY;
    if (key) RedisModule_CloseKey(key);
    return type == REDISMODULE_KEYTYPE_EMPTY || type == REDISMODULE_KEYTYPE_STREAM;
}

int changes_check_write(RedisModuleCtx *ctx, char *err, size_t errlen) {
    if (!cur.active || stream_usable(ctx, cur.stream)) return 0;
    size_t len;
    const char *s = RedisModule_StringPtrLen(cur.stream, &len);
    snprintf(err, errlen, "ERR kvsql changes: '%.*s' holds another type than a stream: nothing was written",
             (int)(len > 200 ? 200 : len), s);
    return -1;
}

/* XADD stream [MAXLEN ~|= n] * field value ...; propagated. */
static void xadd(RedisModuleCtx *ctx, RedisModuleString *stream, const char *maxlen, const char *trim,
                 const char *const *fv, int nfv) {
    RedisModuleString *argv[24];
    int n = 0;
    argv[n++] = stream;
    if (maxlen[0]) {
        argv[n++] = RedisModule_CreateString(ctx, "MAXLEN", 6);
        argv[n++] = RedisModule_CreateString(ctx, trim, 1);
        argv[n++] = RedisModule_CreateString(ctx, maxlen, strlen(maxlen));
    }
    argv[n++] = RedisModule_CreateString(ctx, "*", 1);
    for (int i = 0; i < nfv && n < 24; i++) argv[n++] = RedisModule_CreateString(ctx, fv[i], strlen(fv[i]));
    RedisModuleCallReply *r = RedisModule_Call(ctx, "XADD", "!v", argv, (size_t)n);
    if (r) RedisModule_FreeCallReply(r);
    for (int i = 1; i < n; i++) RedisModule_FreeString(ctx, argv[i]);
}

/* The decimal value of a string key ("0" when missing). */
static void read_counter(RedisModuleCtx *ctx, RedisModuleString *key, char out[24]) {
    RedisModuleCallReply *r = RedisModule_Call(ctx, "GET", "s", key);
    size_t len = 0;
    const char *p = r && RedisModule_CallReplyType(r) == REDISMODULE_REPLY_STRING ? RedisModule_CallReplyStringPtr(r, &len)
                                                                                  : NULL;
    snprintf(out, 24, "%.*s", p ? (int)(len < 23 ? len : 23) : 1, p ? p : "0");
    if (r) RedisModule_FreeCallReply(r);
}

void changes_write(RedisModuleCtx *ctx, RedisModuleString *version_key) {
    if (!cur.active) return;
    char version[24];
    read_counter(ctx, version_key, version);
    if (cur.n == 0) { /* pages changed, no row did (PRAGMA user_version, ANALYZE, ...) */
        const char *fv[] = {"version", version, "op", "commit"};
        xadd(ctx, cur.stream, cur.maxlen, cur.trim, fv, 4);
        return;
    }
    for (size_t i = 0; i < cur.n; i++) {
        entry *e = &cur.e[i];
        const char *fv[12] = {"version", version, "op", op_names[e->op]};
        int n = 4;
        if (e->op == OP_SCHEMA) {
            fv[n++] = "sql";
            fv[n++] = e->sql;
        } else {
            fv[n++] = "table", fv[n++] = e->table, fv[n++] = "key", fv[n++] = e->key;
            if (e->newj) fv[n++] = "new", fv[n++] = e->newj;
            if (e->oldj) fv[n++] = "old", fv[n++] = e->oldj;
        }
        xadd(ctx, cur.stream, cur.maxlen, cur.trim, fv, n);
    }
}

/* ---- SQL.CHANGES ---------------------------------------------------------------- */

static int is_arg(RedisModuleString *s, const char *word) {
    size_t len;
    const char *p = RedisModule_StringPtrLen(s, &len);
    return len == strlen(word) && strncasecmp(p, word, len) == 0;
}

/* ON [MAXLEN [=|~] n]: the count in maxlen and the trim; 0, or -1. */
static int parse_on(RedisModuleString **argv, int argc, char *maxlen, char *trim) {
    strcpy(maxlen, "0");
    strcpy(trim, "~");
    if (argc == 0) return 0;
    if (!is_arg(argv[0], "MAXLEN") || argc < 2 || argc > 3) return -1;
    if (argc == 3) {
        if (!is_arg(argv[1], "=") && !is_arg(argv[1], "~")) return -1;
        trim[0] = RedisModule_StringPtrLen(argv[1], NULL)[0];
    }
    size_t len;
    const char *p = RedisModule_StringPtrLen(argv[argc - 1], &len);
    if (len == 0 || len > 18) return -1;
    for (size_t i = 0; i < len; i++)
        if (p[i] < '0' || p[i] > '9') return -1;
    snprintf(maxlen, 24, "%.*s", (int)len, p);
    snprintf(maxlen, 24, "%lld", strtoll(maxlen, NULL, 10)); /* no leading zeros */
    return 0;
}

static int reply_status(RedisModuleCtx *ctx, RedisModuleString *keyname, RedisModuleString *stream) {
    char maxlen[24] = "", trim[2] = "", version[24];
    int on = read_config(ctx, keyname, maxlen, trim);
    RedisModuleString *vkey = aux_name(ctx, keyname, ":v");
    read_counter(ctx, vkey, version);
    RedisModule_FreeString(ctx, vkey);
    RedisModuleCallReply *r = RedisModule_Call(ctx, "XLEN", "s", stream);
    long long xlen = r && RedisModule_CallReplyType(r) == REDISMODULE_REPLY_INTEGER ? RedisModule_CallReplyInteger(r) : 0;
    if (r) RedisModule_FreeCallReply(r);
    size_t len;
    const char *s = RedisModule_StringPtrLen(stream, &len);
    RedisModule_ReplyWithArray(ctx, 10);
    RedisModule_ReplyWithSimpleString(ctx, "capture");
    RedisModule_ReplyWithSimpleString(ctx, on ? "on" : "off");
    RedisModule_ReplyWithSimpleString(ctx, "maxlen");
    if (on && maxlen[0]) {
        char text[28];
        snprintf(text, sizeof(text), "%s %s", trim, maxlen);
        RedisModule_ReplyWithSimpleString(ctx, text);
    } else RedisModule_ReplyWithNull(ctx);
    RedisModule_ReplyWithSimpleString(ctx, "stream");
    RedisModule_ReplyWithStringBuffer(ctx, s, len);
    RedisModule_ReplyWithSimpleString(ctx, "length");
    RedisModule_ReplyWithLongLong(ctx, xlen);
    RedisModule_ReplyWithSimpleString(ctx, "version");
    RedisModule_ReplyWithLongLong(ctx, strtoll(version, NULL, 10));
    return REDISMODULE_OK;
}

/* A marker entry: op on/off, with the version as it stands. */
static void add_marker(RedisModuleCtx *ctx, RedisModuleString *keyname, RedisModuleString *stream, const char *op,
                       const char *maxlen, const char *trim) {
    char version[24];
    RedisModuleString *vkey = aux_name(ctx, keyname, ":v");
    read_counter(ctx, vkey, version);
    RedisModule_FreeString(ctx, vkey);
    const char *fv[] = {"version", version, "op", op};
    xadd(ctx, stream, strcmp(maxlen, "0") == 0 ? "" : maxlen, trim, fv, 4);
}

static int set_capture(RedisModuleCtx *ctx, RedisModuleString *keyname, RedisModuleString *stream,
                       RedisModuleString *cfg, int on, const char *maxlen, const char *trim) {
    char old_max[24] = "", old_trim[2] = "";
    int was_on = read_config(ctx, keyname, old_max, old_trim);
    RedisModuleKey *k = RedisModule_OpenKey(ctx, cfg, REDISMODULE_READ | REDISMODULE_OPEN_KEY_NOTOUCH);
    int type = k ? RedisModule_KeyType(k) : REDISMODULE_KEYTYPE_EMPTY;
    if (k) RedisModule_CloseKey(k);
    if ((type != REDISMODULE_KEYTYPE_EMPTY && type != REDISMODULE_KEYTYPE_HASH) || !stream_usable(ctx, stream))
        return RedisModule_ReplyWithError(ctx, "WRONGTYPE kvsql changes: T:changes must be a stream and "
                                               "T:changes:cfg a hash (docs/FORMAT.md)");
    if (on) {
        RedisModuleCallReply *r = RedisModule_Call(ctx, "HSET", "!scccc", cfg, "maxlen", maxlen, "trim", trim);
        if (r) RedisModule_FreeCallReply(r);
        if (!was_on) add_marker(ctx, keyname, stream, "on", maxlen, trim);
    } else if (was_on) {
        add_marker(ctx, keyname, stream, "off", old_max[0] ? old_max : "0", old_trim);
        RedisModuleCallReply *r = RedisModule_Call(ctx, "DEL", "!s", cfg);
        if (r) RedisModule_FreeCallReply(r);
    }
    return RedisModule_ReplyWithSimpleString(ctx, "OK");
}

int cmd_sql_changes(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (argc < 2) return RedisModule_WrongArity(ctx);
    char maxlen[24], trim[2];
    int on = argc >= 3 && is_arg(argv[2], "ON"), off = argc == 3 && is_arg(argv[2], "OFF");
    int status = argc == 2 || (argc == 3 && is_arg(argv[2], "STATUS"));
    if (on && parse_on(argv + 3, argc - 3, maxlen, trim) != 0)
        return RedisModule_ReplyWithError(ctx, "ERR SQL.CHANGES key ON [MAXLEN [=|~] n]: n a whole number "
                                               "(0: no limit)");
    if (!on && !off && !status)
        return RedisModule_ReplyWithError(ctx, "ERR SQL.CHANGES key [ON [MAXLEN [=|~] n] | OFF | STATUS]");
    RedisModuleString *stream = aux_name(ctx, argv[1], CHANGES_AUX_STREAM);
    RedisModuleString *cfg = aux_name(ctx, argv[1], CHANGES_AUX_CONFIG);
    int rc = status ? reply_status(ctx, argv[1], stream) : set_capture(ctx, argv[1], stream, cfg, on, maxlen, trim);
    RedisModule_FreeString(ctx, stream);
    RedisModule_FreeString(ctx, cfg);
    return rc;
}
