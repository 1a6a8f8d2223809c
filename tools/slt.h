/* slt.h - the parts of kvsql-slt, our sqllogictest runner, that its files
 * share: the engine interface, query results and value rendering.
 *
 * kvsql-slt (main in tools/slt.c) reads test scripts (tools/slt_script.c)
 * and runs each record on one engine: native SQLite or our VFS on the
 * memory store or the redis VFS (tools/slt_sqlite.c), or the Redis module over hiredis
 * (tools/slt_module.c). Every engine renders values the same way
 * (tools/slt_value.c), so their results compare line for line. */
#ifndef KVSQL_SLT_H
#define KVSQL_SLT_H

#include <sqlite3.h>
#include <stddef.h>

/* What one engine call came to. */
enum {
    SLT_OK = 0,        /* it ran */
    SLT_SQL_ERROR = 1, /* the SQL failed: a result a record may expect */
    SLT_FATAL = 2      /* the engine itself broke (lost connection, no memory): stop */
};

/* A query's rendered values, row after row: ncols values per row. */
typedef struct slt_rows {
    char **values;
    size_t n, cap;
    int ncols;
} slt_rows;

/* Appends a value the rows take ownership of; -1 (and frees it) when out
 * of memory. */
int slt_rows_add(slt_rows *r, char *value);
void slt_rows_clear(slt_rows *r);

/* The type letter for column i of a query typed `types`: 'T' past its end,
 * so that a query with more columns than letters still renders. */
char slt_type_of_column(const char *types, int i);

/* One database engine. Calls that fail write why into err. */
typedef struct slt_engine slt_engine;
struct slt_engine {
    const char *name;
    /* A fresh empty database for the script at path. */
    int (*begin_file)(slt_engine *e, const char *path, char *err, size_t errlen);
    /* Runs every statement of sql. */
    int (*statement)(slt_engine *e, const char *sql, char *err, size_t errlen);
    /* Runs a query, rendering values by the type letters into out. */
    int (*query)(slt_engine *e, const char *sql, const char *types, slt_rows *out, char *err, size_t errlen);
    /* Drops the file's database. */
    void (*end_file)(slt_engine *e);
    void (*destroy)(slt_engine *e);
    void *state;
};

/* tools/slt_sqlite.c */
slt_engine *slt_native_engine(void);
slt_engine *slt_memory_engine(void);
/* The redis VFS (libkvsql's code, linked in) on the server at host:port:
 * NULL with err set when it cannot be reached. */
slt_engine *slt_vfs_engine(const char *host, int port, char *err, size_t errlen);

/* tools/slt_module.c: NULL with err set when the server cannot be reached. */
slt_engine *slt_module_engine(const char *host, int port, char *err, size_t errlen);

/* ---- value rendering (tools/slt_value.c) ------------------------------- */

/* Renders column col of the current row by its type letter, as the
 * original sqllogictest does for SQLite: NULL as "NULL"; I as the 32-bit
 * sqlite3_column_int; R as "%.3f" of sqlite3_column_double; T as the text,
 * "" as "(empty)"; then every byte outside printable ASCII becomes '@',
 * a NUL inside a TEXT or BLOB too. Returns a malloc'd string, NULL when
 * out of memory. */
char *slt_render_column(sqlite3_stmt *stmt, int col, char type);

/* Renders values that arrive without SQLite (the module's reply) exactly
 * as slt_render_column would have rendered them in place, by handing them
 * to SQLite: a private in-memory connection running "SELECT ?1". */
typedef struct slt_converter slt_converter;
slt_converter *slt_converter_new(void);
void slt_converter_free(slt_converter *c);
char *slt_convert_null(void);
char *slt_convert_integer(slt_converter *c, sqlite3_int64 v, char type);
/* A string value: a REAL as SQLite renders it to text, TEXT or BLOB. */
char *slt_convert_string(slt_converter *c, const char *p, size_t n, char type);

/* MD5 (OpenSSL) over each value followed by "\n", as 32 hex digits. */
int slt_md5_values(char *const *values, size_t n, char hex[33]);

/* ---- scripts (tools/slt_script.c) -------------------------------------- */

/* What one script came to. */
typedef struct slt_file_result {
    long passed, failed, skipped; /* records: statements and queries */
    int halted_at;                /* line of a `halt` that stopped it, or 0 */
    double engine_seconds;        /* spent in the engine's statements and queries */
    double reference_seconds;     /* and in the reference engine's */
    int first_failure_line;       /* 0: none */
    char first_failure[1024];     /* what that record expected and got */
    int fatal;                    /* the engine broke: the run must stop */
    char error[1024];             /* why the file could not be run, or "" */
} slt_file_result;

/* A monotonic clock, in seconds. */
double slt_now(void);

/* The engine name that skipif/onlyif records are matched against. */
#define SLT_ENGINE_NAME "sqlite"

/* Runs the script at path on a fresh database of engine e, checking each
 * record against the script and, when ref is not NULL, against the same
 * record run on a fresh database of ref. Returns 0, or -1 when the file
 * cannot be read or an engine broke: then res->error says why, and the
 * record it broke on, if any, counts as failed. */
int slt_run_file(slt_engine *e, slt_engine *ref, const char *path, slt_file_result *res);

#endif
