/* change_entry.h - one captured row change and how it is written to the
 * stream T:changes: values as typed JSON, named by the table's columns,
 * and the entry's field/value list (docs/FORMAT.md, "The changes
 * stream"). No Redis API: change_log.c keeps a transaction's entries for
 * the module (module/store/changes.c writes them with XADD) and for the library
 * (client/capture.c; client/hash/store_redis.c sends them in the commit script),
 * so both write the same entries. */
#ifndef KVSQL_CHANGE_ENTRY_H
#define KVSQL_CHANGE_ENTRY_H

#include "sqlite.h"
#include <stddef.h>

enum { CHANGE_INSERT, CHANGE_UPDATE, CHANGE_DELETE, CHANGE_SCHEMA };

/* One change. Until resolved the values are bare JSON pairs by storage
 * position; resolving makes the key, new and old JSON texts. */
typedef struct change_entry {
    int op;
    char *table;
    sqlite3_int64 rowid;
    int depth;               /* sqlite3_preupdate_depth: 0 made by the statement itself, more by triggers */
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

/* The columns of the tables entries were resolved against. */
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
 * from db; *trusted is set while kvsql's own query is prepared, so that
 * the caller's authorizer lets it past; NULL when there is none): sets
 * key, newj and oldj. 1 when resolved; 0 when the table no longer exists
 * (e is freed); -1 when its columns could not be read (out of memory, or
 * SQLite stopped the query: the call is being stopped), e kept. */
int change_entry_resolve(change_entry *e, change_tables *tables, sqlite3 *db, int *trusted);
void change_tables_forget(change_tables *tables);

/* The fields of resolved entry e but its version, as field/value pairs in
 * the stream's order: op, then table key new old, or sql. Returns how many
 * strings it put in fv (they point into e). The version comes first in the
 * stream; the writer adds it (it knows the commit's version). */
#define CHANGE_FIELDS_MAX 10
int change_entry_fields(const change_entry *e, const char *fv[CHANGE_FIELDS_MAX]);

#endif
