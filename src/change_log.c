/* change_log.c - a transaction's captured row changes (change_log.h).
 *
 * Called by module/store/changes.c (around each call and statement of the
 * module) and client/capture.c (fed by SQLite's hooks on a library
 * connection). Entries are recorded by the preupdate hook, named by
 * column (change_entry.c), and cut back when SQLite undoes what made
 * them: ROLLBACK drops the transaction's, ROLLBACK TO a savepoint's. */
/* Debian's libsqlite3 is built with it; the declarations need the macro. */
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include "change_log.h"
#include "sqlite.h"

#include <string.h>
#include <strings.h>

/* ---- entries ---------------------------------------------------------------- */

void change_log_truncate(change_log *log, size_t n) {
    while (log->n > n) change_entry_free(&log->e[--log->n]);
}

static change_entry *new_entry(change_log *log) {
    if (log->n == log->cap) {
        size_t cap = log->cap ? log->cap * 2 : 16;
        change_entry *e = sqlite3_realloc64(log->e, cap * sizeof(*e));
        if (!e) return NULL;
        log->e = e;
        log->cap = cap;
    }
    change_entry *e = &log->e[log->n++];
    memset(e, 0, sizeof(*e));
    return e;
}

static void drop_savepoints(change_log *log, size_t keep) {
    while (log->nsp > keep) sqlite3_free(log->sp[--log->nsp].name);
}

static int record(change_log *log, sqlite3 *db, int op, const char *table, sqlite3_int64 rowid, int with_old,
                  int with_new) {
    change_entry *e = new_entry(log);
    return e ? change_entry_from_hook(e, db, op, table, rowid, with_old, with_new) : -1;
}

void change_log_record(change_log *log, sqlite3 *db, int op, const char *table, sqlite3_int64 key1,
                       sqlite3_int64 key2) {
    if (log->failed) return;
    int rc;
    if (op == SQLITE_INSERT) rc = record(log, db, CHANGE_INSERT, table, key2, 0, 1);
    else if (op == SQLITE_DELETE) rc = record(log, db, CHANGE_DELETE, table, key1, 1, 0);
    else if (key1 == key2) rc = record(log, db, CHANGE_UPDATE, table, key1, 1, 1);
    else /* the rowid changed: a delete and an insert */
        rc = record(log, db, CHANGE_DELETE, table, key1, 1, 0) || record(log, db, CHANGE_INSERT, table, key2, 0, 1)
                 ? -1
                 : 0;
    if (rc != 0) log->failed = 1;
}

/* Names the values of the entries from `from` on. An entry of a table
 * that no longer exists (its DROP TABLE deleted the rows it cascaded
 * from) is dropped: the schema entry that follows removes it. */
int change_log_resolve_from(change_log *log, size_t from, sqlite3 *db, int *trusted) {
    size_t w = from, i = from;
    int rc = 0;
    for (; i < log->n && rc >= 0; i++) {
        rc = change_entry_resolve(&log->e[i], &log->tables, db, trusted);
        if (rc) log->e[w++] = log->e[i]; /* resolved, or (-1) still to free */
    }
    while (i < log->n) log->e[w++] = log->e[i++]; /* out of memory: keep the rest for freeing */
    log->n = w;
    return rc < 0 ? -1 : 0;
}

int change_log_add_schema(change_log *log, const char *sql) {
    change_entry *e = new_entry(log);
    return e ? change_entry_schema(e, sql) : -1;
}

void change_log_reset(change_log *log) {
    change_log_truncate(log, 0);
    drop_savepoints(log, 0);
    change_tables_forget(&log->tables);
    log->stmt_start = log->txn_start = 0;
    log->failed = 0;
}

void change_log_free(change_log *log) {
    change_log_reset(log);
    sqlite3_free(log->e);
    sqlite3_free(log->sp);
    memset(log, 0, sizeof(*log));
}

/* ---- SQL text ------------------------------------------------------------------ */

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

const char *change_sql_first_word(const char *sql, char *out, size_t cap) {
    const char *p = sql ? sql : "";
    next_token(&p, out, cap);
    return p;
}

int change_sql_is(const char *word, const char *kw) {
    return strcasecmp(word, kw) == 0;
}

int change_sql_is_ddl(const char *first) {
    return change_sql_is(first, "CREATE") || change_sql_is(first, "DROP") || change_sql_is(first, "ALTER");
}

int change_sql_creates_table_as(const char *sql) {
    char w[256];
    const char *p = sql;
    next_token(&p, w, sizeof(w));
    if (!change_sql_is(w, "CREATE") || !next_token(&p, w, sizeof(w))) return 0;
    if ((change_sql_is(w, "TEMP") || change_sql_is(w, "TEMPORARY")) && !next_token(&p, w, sizeof(w))) return 0;
    if (!change_sql_is(w, "TABLE") || !next_token(&p, w, sizeof(w))) return 0;
    if (change_sql_is(w, "IF")) {
        next_token(&p, w, sizeof(w));
        next_token(&p, w, sizeof(w));
        if (!next_token(&p, w, sizeof(w))) return 0;
    }
    if (!next_token(&p, w, sizeof(w))) return 0; /* after the name */
    if (change_sql_is(w, ".")) {
        next_token(&p, w, sizeof(w));
        if (!next_token(&p, w, sizeof(w))) return 0;
    }
    return change_sql_is(w, "AS");
}

int change_sql_dml_target(const char *sql, char *out, size_t cap) {
    char w[256];
    const char *p = sql;
    if (!next_token(&p, w, sizeof(w))) return 0;
    int insert = change_sql_is(w, "INSERT") || change_sql_is(w, "REPLACE"), del = change_sql_is(w, "DELETE");
    if (!insert && !del && !change_sql_is(w, "UPDATE")) return 0;
    if (!next_token(&p, out, cap)) return 0;
    if (change_sql_is(out, "OR") && (!next_token(&p, out, cap) || !next_token(&p, out, cap))) return 0;
    if ((insert && change_sql_is(out, "INTO")) || (del && change_sql_is(out, "FROM")))
        if (!next_token(&p, out, cap)) return 0;
    const char *q = p;
    if (next_token(&q, w, sizeof(w)) && change_sql_is(w, ".")) { /* schema.name */
        p = q;
        if (!next_token(&p, out, cap)) return 0;
    }
    return 1;
}

/* ---- savepoints and rollbacks ---------------------------------------------- */

/* The topmost savepoint named name (SQLite compares them case-blind). */
static long find_savepoint(const change_log *log, const char *name) {
    for (size_t i = log->nsp; i-- > 0;)
        if (strcasecmp(log->sp[i].name, name) == 0) return (long)i;
    return -1;
}

static int push_savepoint(change_log *log, const char *name) {
    if (log->nsp == log->capsp) {
        size_t cap = log->capsp ? log->capsp * 2 : 8;
        change_savepoint *sp = sqlite3_realloc64(log->sp, cap * sizeof(*sp));
        if (!sp) return -1;
        log->sp = sp;
        log->capsp = cap;
    }
    log->sp[log->nsp].name = sqlite3_mprintf("%s", name);
    log->sp[log->nsp].pos = log->n;
    return log->sp[log->nsp++].name ? 0 : -1;
}

/* ROLLBACK [TRANSACTION] [TO [SAVEPOINT] name]; p after ROLLBACK. */
static int follow_rollback(change_log *log, const char *p) {
    char w[256];
    int more = next_token(&p, w, sizeof(w));
    if (more && change_sql_is(w, "TRANSACTION")) more = next_token(&p, w, sizeof(w));
    change_tables_forget(&log->tables); /* the rollback may have undone DDL */
    if (!more || !change_sql_is(w, "TO")) { /* the whole transaction */
        change_log_truncate(log, log->txn_start);
        drop_savepoints(log, 0);
        return 0;
    }
    if (!next_token(&p, w, sizeof(w))) return -1;
    if (change_sql_is(w, "SAVEPOINT") && !next_token(&p, w, sizeof(w))) return -1;
    long i = find_savepoint(log, w);
    if (i < 0) return -1;
    change_log_truncate(log, log->sp[i].pos);
    drop_savepoints(log, (size_t)i + 1);
    return 0;
}

int change_log_follow(change_log *log, const char *sql, int was_autocommit) {
    char first[32], w[256];
    const char *p = change_sql_first_word(sql, first, sizeof(first));
    if (change_sql_is(first, "BEGIN")) {
        log->txn_start = log->stmt_start;
        drop_savepoints(log, 0);
    } else if (change_sql_is(first, "COMMIT") || change_sql_is(first, "END")) {
        drop_savepoints(log, 0);
    } else if (change_sql_is(first, "SAVEPOINT")) {
        if (!next_token(&p, w, sizeof(w))) return -1;
        if (was_autocommit) {
            log->txn_start = log->stmt_start;
            drop_savepoints(log, 0);
        }
        return push_savepoint(log, w);
    } else if (change_sql_is(first, "RELEASE")) {
        if (!next_token(&p, w, sizeof(w))) return -1;
        if (change_sql_is(w, "SAVEPOINT") && !next_token(&p, w, sizeof(w))) return -1;
        long i = find_savepoint(log, w);
        if (i < 0) return -1;
        drop_savepoints(log, (size_t)i);
    } else if (change_sql_is(first, "ROLLBACK")) {
        return follow_rollback(log, p);
    }
    return 0;
}
