/* heavy_work.h - what the files of heavy.h share: counting a function's
 * work and stopping it when the call must stop (heavy.c's functions,
 * heavy_private.c's), and the functions SQLite itself runs on a private
 * connection (heavy_private.c). Included by those files only. */
#ifndef KVSQL_MODULE_HEAVY_WORK_H
#define KVSQL_MODULE_HEAVY_WORK_H

#include "module/connections/heavy.h"

#include <sqlite3.h>
#include <stdint.h>

/* Units of work (bytes or characters looked at) between two ticks: a few
 * hundred microseconds at most. */
#define CHECK_EVERY 65536

typedef struct effort {
    const heavy_conf *conf;
    uint64_t done, next_check;
} effort;

static inline effort effort_of(sqlite3_context *ctx) {
    effort e = {sqlite3_user_data(ctx), 0, CHECK_EVERY};
    return e;
}

/* Counts units of work; non-zero when the call must stop. */
static inline int must_stop(effort *e, uint64_t units) {
    e->done += units;
    if (e->done < e->next_check) return 0;
    e->next_check = e->done + CHECK_EVERY;
    return e->conf->tick && e->conf->tick();
}

/* The function's error when the call was stopped (exec.c reports why). */
static inline void result_stopped(sqlite3_context *ctx) {
    sqlite3_result_error(ctx, "interrupted", -1);
    sqlite3_result_error_code(ctx, SQLITE_INTERRUPT);
}

/* printf(F, ...) and format(F, ...), and json_patch(T, P): SQLite's own,
 * once their inputs are known to be cheap enough (heavy_private.c). */
void heavy_call_printf(sqlite3_context *ctx, int argc, sqlite3_value **argv);
void heavy_call_json_patch(sqlite3_context *ctx, int argc, sqlite3_value **argv);

#endif
