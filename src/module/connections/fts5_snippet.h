/* fts5_snippet.h - FTS5's snippet() and highlight() auxiliary functions in
 * versions whose time grows as n log n in the phrase matches of a row
 * (SQLite's own are quadratic, inside one step) and that the call's time
 * limit can stop.
 * heavy_install() (heavy.c) installs it on every module connection. Free
 * of the Redis API. */
#ifndef KVSQL_FTS5_SNIPPET_H
#define KVSQL_FTS5_SNIPPET_H

#include "module/connections/heavy.h"

#include <sqlite3.h>

/* Replaces snippet() and highlight() in db's FTS5 (nothing to do without FTS5); conf
 * (its tick) must outlive the connection. */
int fts5_snippet_install(sqlite3 *db, heavy_conf *conf);

#endif
