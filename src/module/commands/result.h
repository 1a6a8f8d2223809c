/* result.h - the rows of a statement, held until the command's reply.
 *
 * A call's reply is its last statement's result, and it may only be sent
 * once every statement has succeeded: an error in row 50 must not leave 49
 * rows half-sent. So exec.c collects the rows here, then result_reply()
 * writes them in the kvsql reply shape (docs/COMMANDS.md). One result is
 * reused from call to call, so a point query allocates nothing here. */
#ifndef KVSQL_RESULT_H
#define KVSQL_RESULT_H

#include "module/redis_api.h"

#include <sqlite3.h>

typedef struct bytes {
    unsigned char *p;
    size_t len, cap;
} bytes;

typedef struct result {
    int ncols;
    long long nrows;
    bytes head;  /* per column: name, NUL, declared type in lower case, NUL */
    bytes first; /* per column: storage class of row 1 (one byte) */
    bytes rows;  /* the values, row after row (see result.c) */
} result;

/* Empties r for the next statement, keeping its buffers (up to a bound). */
void result_reset(result *r);
/* Frees r's buffers (a result that is not reused: a worker's call). */
void result_free(result *r);
/* Takes the column names and declared types of a prepared statement. */
int result_begin(result *r, sqlite3_stmt *stmt);
/* Appends the current row of stmt. Returns SQLITE_OK or SQLITE_NOMEM. */
int result_add_row(result *r, sqlite3_stmt *stmt);
/* Reply formats (docs/COMMANDS.md), or'ed; 0 is the default reply. */
#define RESULT_TYPED 1 /* each value as [type, text] */
#define RESULT_MAP 2   /* each row as a map: column name -> value */
/* Replies [header, row...]: the kvsql reply shape, in the given format. */
void result_reply(result *r, RedisModuleCtx *ctx, int format);

#endif
