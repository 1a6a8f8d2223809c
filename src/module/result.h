/* result.h - the rows of a statement, held until the command's reply.
 *
 * A call's reply is its last statement's result, and it may only be sent
 * once every statement has succeeded: an error in row 50 must not leave 49
 * rows half-sent. So exec.c collects the rows here, then result_reply()
 * writes them in the kvsql reply shape (docs/COMMANDS.md). */
#ifndef KVSQL_RESULT_H
#define KVSQL_RESULT_H

#include "module/redis_api.h"

#include <sqlite3.h>

typedef struct result {
    int ncols;
    char **names;     /* ncols column names */
    char **types;     /* ncols declared types, or storage class of row 1 */
    long long nrows;
    unsigned char *buf; /* the values, row after row (see result.c) */
    size_t len, cap;
} result;

void result_init(result *r);
void result_clear(result *r);
/* Takes the column names and declared types of a prepared statement. */
int result_begin(result *r, sqlite3_stmt *stmt);
/* Appends the current row of stmt. Returns SQLITE_OK or SQLITE_NOMEM. */
int result_add_row(result *r, sqlite3_stmt *stmt);
void result_reply(result *r, RedisModuleCtx *ctx);

#endif
