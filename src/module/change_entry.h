/* change_entry.h - one captured row change and how it is written to the
 * stream T:changes: values as typed JSON, named by the table's columns,
 * and the XADD of the entry's fields (docs/FORMAT.md, "The changes
 * stream"). Used only by changes.c, which decides what to capture and
 * when to write it. */
#ifndef KVSQL_CHANGE_ENTRY_H
#define KVSQL_CHANGE_ENTRY_H

#include "module/guard.h"
#include "module/redis_api.h"

#include <sqlite3.h>

enum { CHANGE_INSERT, CHANGE_UPDATE, CHANGE_DELETE, CHANGE_SCHEMA };

/* One change. Until resolved the values are bare JSON pairs by storage
 * position; resolving makes the key, new and old JSON texts. */
typedef struct change_entry {
    int op;
    char *table;
    sqlite3_int64 rowid;
    int nraw;
    char **rawold, **rawnew; /* NULL when the operation has no such side */
    char *key, *newj, *oldj; /* resolved JSON */
    char *sql;               /* schema entries */
} change_entry;

/* What the capture knows of a table: its columns. */
typedef struct change_columns {
    char *table;
    int ncols, without_rowid;
    char **names;
    int *hidden, *pk; /* per column: PRAGMA table_xinfo's hidden and pk */
    int *real;        /* per column: REAL affinity (SQLite stores 100.0 as 100) */
} change_columns;

/* The columns of the tables a call's entries were resolved against. */
typedef struct change_tables {
    change_columns *t;
    size_t n;
} change_tables;

/* Fills the zeroed e from inside SQLite's preupdate hook on db: op, table,
 * rowid and, as asked, the old and new values. 0, or -1 (out of memory). */
int change_entry_from_hook(change_entry *e, sqlite3 *db, int op, const char *table, sqlite3_int64 rowid,
                           int with_old, int with_new);
/* Makes the zeroed e a schema entry for the DDL text sql. 0, or -1. */
int change_entry_schema(change_entry *e, const char *sql);
void change_entry_free(change_entry *e);

/* Names e's values by its table's columns (looked up in tables, else read
 * from db with guard g letting the query past): sets key, newj and oldj.
 * 1 when resolved; 0 when the table no longer exists (e is freed); -1 out
 * of memory. */
int change_entry_resolve(change_entry *e, change_tables *tables, sqlite3 *db, guard *g);
void change_tables_forget(change_tables *tables);

/* XADD stream [MAXLEN trim maxlen] * version v op op, propagated; maxlen ""
 * for no trimming. The marker entries: on, off, commit. */
void change_xadd_marker(RedisModuleCtx *ctx, RedisModuleString *stream, const char *maxlen, const char *trim,
                        const char *version, const char *op);
/* The same with e's fields: table, key, new, old (or sql). */
void change_xadd_entry(RedisModuleCtx *ctx, RedisModuleString *stream, const char *maxlen, const char *trim,
                       const char *version, const change_entry *e);

#endif
