/* guard.h - what SQL may do inside redis-server.
 *
 * SQL in the module runs inside a shared server: it must not reach the
 * host's files, load code, see or set addresses or change process-wide
 * state, must not switch the connection into modes that would break
 * kvsql's storage, and one call's settings must not reach the next call on
 * the same cached connection (TEMP objects may, up to a bound). cache.c installs the guard on every
 * connection it opens and exec.c brackets every call with
 * guard_call_begin/guard_call_end; docs/SECURITY.md lists what is allowed,
 * reset or refused, and why. Free of the Redis API, so the fuzz targets
 * (tests/fuzz/) run the same guard. */
#ifndef KVSQL_GUARD_H
#define KVSQL_GUARD_H

#include "module/connections/heavy.h"

#include <stddef.h>

#include <sqlite3.h>

typedef struct guard {
    /* Set by the authorizer while statements are prepared: */
    unsigned notes;   /* count of settings noted since the connection opened */
    unsigned reset;   /* bit i: resettable setting i was set in this call */
    int must_close;   /* the call made state only closing undoes (ATTACH,
                       * per-database settings) */
    int temp_written; /* the call created or changed TEMP objects */
    unsigned temp_notes; /* statements prepared that write TEMP objects (never reset) */
    int trusted;      /* kvsql's own SQL runs: allow it, note nothing */
    int (*tick)(void); /* if set, called now and then while preparing: non-zero stops */
    sqlite3_int64 changes_at_begin; /* sqlite3_total_changes64() when the call began */
    heavy_conf heavy; /* the stoppable functions' state (heavy.c): tick, case_sensitive_like */
} guard;

/* Reads this libsqlite3's defaults of the settings a call may change, from
 * a fresh kvsql connection. Once, before any guard_install. */
int guard_init(void);

/* Sets the authorizer, database switches and function overrides of db,
 * with g as their state (zeroed by the caller). Returns an SQLite code. */
int guard_install(sqlite3 *db, guard *g);

/* Every call on a connection: begin before its first statement, end after
 * its last. guard_call_end puts back what the call changed; it returns
 * non-zero when the connection must be closed instead, also when the
 * call left TEMP objects of more than max_temp_bytes. */
void guard_call_begin(sqlite3 *db, guard *g);
int guard_call_end(sqlite3 *db, guard *g, long long max_temp_bytes);

/* Whether SQL text may use db's TEMP objects, which live in this
 * connection only (so a call that may use them cannot move to a worker
 * thread's connection): it names one of them (any word of the text,
 * string literals included, equal to one's name, ASCII case folded),
 * says temp, temporary or pragma (which lists every schema), or, unless
 * readonly, db has TEMP triggers, which writes to main tables fire.
 * Also 1 when db has more than GUARD_TEMP_NAMES_MAX TEMP objects, one
 * whose name is not a plain word, or they cannot be read. 0 without any
 * TEMP object. */
#define GUARD_TEMP_NAMES_MAX 64
int guard_may_use_temp(sqlite3 *db, guard *g, const char *text, size_t len, int readonly);

/* Runs kvsql's own SQL (connection settings) past the guard. */
int guard_exec_trusted(sqlite3 *db, guard *g, const char *sql);
/* An integer pragma's value read past the guard, or -1. */
sqlite3_int64 guard_read_pragma(sqlite3 *db, guard *g, const char *sql);

#endif
