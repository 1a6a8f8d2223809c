/* guard.h - what SQL may do inside redis-server.
 *
 * SQL in the module runs inside a shared server: it must not reach the
 * host's files or load code, and must not switch the connection into modes
 * that would break kvsql's storage (journal_mode, locking_mode). cache.c
 * installs the guard on every connection it opens; docs/SECURITY.md lists
 * what it refuses. */
#ifndef KVSQL_GUARD_H
#define KVSQL_GUARD_H

#include <sqlite3.h>

/* Sets the authorizer and defensive options. Returns an SQLite code. */
int guard_install(sqlite3 *db);

#endif
