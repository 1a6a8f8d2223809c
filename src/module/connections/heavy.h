/* heavy.h - built-in SQL functions whose work grows faster than their
 * input, replaced on module connections by versions the call's time limit
 * can stop (or whose input is bounded).
 *
 * One call of instr, replace, trim/ltrim/rtrim with a character set,
 * LIKE/GLOB, json_patch or printf/format (whose %c repeats count on past
 * the length limit) runs inside a single virtual machine step, so
 * the progress handler never sees it; on values of SQLITE_LIMIT_LENGTH
 * bytes SQLite's own versions run for hours. The versions here keep the
 * same results and call tick() now and then while they work; json_patch,
 * and printf, which are not re-implemented, are refused (printf: NULL, as
 * SQLite's) when their inputs could take long, and otherwise run SQLite's
 * own on a private connection of the calling thread (printf's plain
 * conversions through sqlite3_str_appendf, one at a time);
 * FTS5's snippet() and highlight() are replaced too (fts5_snippet.c).
 * guard_install() (guard.c) installs them on every connection; the audit
 * behind the list is in docs/SECURITY.md. Free of the Redis API. */
#ifndef KVSQL_HEAVY_H
#define KVSQL_HEAVY_H

#include <sqlite3.h>

typedef struct heavy_conf {
    int (*tick)(void);       /* non-zero: stop the function (budget_tick); NULL: never */
    int case_sensitive_like; /* PRAGMA case_sensitive_like, kept by guard.c */
} heavy_conf;

/* Replaces the functions on db; conf must outlive the connection. */
int heavy_install(sqlite3 *db, heavy_conf *conf);

/* The value PRAGMA case_sensitive_like=value sets, read as SQLite reads
 * a boolean pragma argument. */
int heavy_pragma_boolean(const char *value);

/* Most work json_patch may do: members of the target times bytes of the
 * patch (about 0.35 ns each with SQLite 3.40). */
#define HEAVY_JSON_PATCH_MAX_WORK (1LL << 26)

#endif
