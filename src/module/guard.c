/* guard.c - the SQLite authorizer and options of module connections.
 * See guard.h; called by cache.c when a connection opens. */
#include "guard.h"

#include <string.h>
#include <strings.h>

/* Pragmas refused whether read or set: they name host paths or reach
 * outside the database. */
static const char *const denied_pragmas[] = {
    "temp_store_directory", "data_store_directory", "mmap_size", NULL,
};

/* Pragmas that may be read but not set: kvsql's storage depends on them. */
static const char *const fixed_pragmas[] = {
    "journal_mode", "locking_mode", "temp_store", "cache_size", NULL,
};

static int listed(const char *const *list, const char *name) {
    for (int i = 0; list[i]; i++)
        if (strcasecmp(list[i], name) == 0) return 1;
    return 0;
}

static int authorize(void *arg, int action, const char *a, const char *b, const char *db,
                     const char *trigger) {
    (void)arg;
    (void)db;
    (void)trigger;
    switch (action) {
    case SQLITE_ATTACH:
        /* A file name would reach the host's filesystem; "" is the temporary
         * database VACUUM attaches, ":memory:" touches no file. */
        return a && (a[0] == 0 || strcmp(a, ":memory:") == 0) ? SQLITE_OK : SQLITE_DENY;
    case SQLITE_PRAGMA:
        if (listed(denied_pragmas, a)) return SQLITE_DENY;
        if (b && listed(fixed_pragmas, a)) return SQLITE_DENY;
        return SQLITE_OK;
    case SQLITE_FUNCTION:
        if (b && strcasecmp(b, "load_extension") == 0) return SQLITE_DENY;
        return SQLITE_OK;
    default:
        return SQLITE_OK;
    }
}

int guard_install(sqlite3 *db) {
    int rc = sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, (int *)0);
    if (rc == SQLITE_OK) rc = sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)0);
    if (rc == SQLITE_OK) rc = sqlite3_set_authorizer(db, authorize, NULL);
    return rc;
}
