/* change_log.h - the row changes of one transaction on one connection, as
 * capture keeps them until the commit writes them to T:changes
 * (docs/FORMAT.md, "The changes stream"), and the reading of SQL text that
 * follows savepoints and rollbacks. No Redis API: used by the module
 * (module/store/changes.c, around each call and statement) and by the library
 * (client/capture.c, fed by SQLite's trace and preupdate hooks), so both
 * capture the same entries. */
#ifndef KVSQL_CHANGE_LOG_H
#define KVSQL_CHANGE_LOG_H

#include "change_entry.h"

#include "sqlite.h"
#include <stddef.h>

typedef struct change_savepoint {
    char *name;
    size_t pos; /* entries before it */
} change_savepoint;

typedef struct change_log {
    change_entry *e;
    size_t n, cap;
    size_t stmt_start; /* entries before the running statement */
    size_t txn_start;  /* entries before the transaction (BEGIN, SAVEPOINT in autocommit) */
    int failed;        /* out of memory in the hook: the commit must fail */
    change_savepoint *sp;
    size_t nsp, capsp;
    change_tables tables; /* the columns entries were resolved against */
} change_log;

/* Records the running preupdate of db (SQLite's op, rowids key1 and key2)
 * as one entry, or two (a delete and an insert) when the rowid changed.
 * TEMP tables are the caller's to skip. Sets log->failed when out of memory. */
void change_log_record(change_log *log, sqlite3 *db, int op, const char *table, sqlite3_int64 key1,
                       sqlite3_int64 key2);
/* Names the values of entries from..n-1 (change_entry_resolve); drops
 * those of tables that no longer exist. 0, or -1 when some could not be
 * named (out of memory, or the call is being stopped): the caller must
 * fail the transaction, whose entries are incomplete. */
int change_log_resolve_from(change_log *log, size_t from, sqlite3 *db, int *trusted);
/* Appends a schema entry for the DDL text sql. 0, or -1. */
int change_log_add_schema(change_log *log, const char *sql);
/* Drops the entries from n on. */
void change_log_truncate(change_log *log, size_t n);
/* After a transaction control statement (BEGIN, COMMIT, END, SAVEPOINT,
 * RELEASE, ROLLBACK [TO]) succeeded: keeps the entries in step with what
 * SQLite kept. was_autocommit: whether the connection was in autocommit
 * before it. 0, or -1 when it cannot follow (a savepoint it never saw). */
int change_log_follow(change_log *log, const char *sql, int was_autocommit);
/* Empties the log for the next transaction, keeping its buffers. */
void change_log_reset(change_log *log);
/* Frees everything. */
void change_log_free(change_log *log);

/* Reading SQL text. The first word of sql (a keyword, dequoted) into out;
 * returns the text after it. */
const char *change_sql_first_word(const char *sql, char *out, size_t cap);
/* Whether word is keyword kw, in any case. */
int change_sql_is(const char *word, const char *kw);
/* CREATE [TEMP] TABLE [IF NOT EXISTS] [schema.]name AS ...: its rows would
 * not be captured (SQLite copies them without the hooks). */
int change_sql_creates_table_as(const char *sql);
/* The table or view an INSERT, REPLACE, UPDATE or DELETE names (not one
 * that starts with WITH): 1 with its name in out, else 0. */
int change_sql_dml_target(const char *sql, char *out, size_t cap);
/* CREATE, DROP or ALTER: may change the schema. */
int change_sql_is_ddl(const char *first_word);

#endif
