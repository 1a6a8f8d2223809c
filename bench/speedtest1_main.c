/* speedtest1_main.c - main() of the speedtest1 binary that `make bench` builds.
 *
 * bench/run compiles SQLite's test/speedtest1.c (from Debian's sqlite3
 * source package, fetched into bench/work/, never committed) with
 * -Dmain=speedtest1_main and links it with this file, kvsql's core objects
 * and libkvsql.so, so that `--vfs kvsql-memory` (kvsql_register()) and
 * `--vfs redis` (kvsql_register_redis(); the server from KVSQL_DEFAULT,
 * the database name is the key) find our VFSes before speedtest1 parses its
 * options. With --memdb the same binary runs SQLite's own in-memory
 * database, the baseline.
 *
 * Round trips per test, without touching speedtest1.c: speedtest1 reads
 * the default VFS's clock when each test begins and ends. A clock VFS
 * registered here as the default (the system's default VFS but for
 * xCurrentTimeInt64; registered after the redis VFS, so it stays the
 * default whatever KVSQL_DEFAULT says) prints, at each of those readings, the round trips
 * of the redis database open then to stderr, `kvsql_round_trips N`;
 * bench/run pairs them with the tests. */
#include "kvsql_core.h"

#include <stdio.h>
#include <string.h>

int speedtest1_main(int argc, char **argv);

static sqlite3_vfs clock_vfs;
static int (*system_time)(sqlite3_vfs *, sqlite3_int64 *);
static sqlite3 *redis_db; /* the connection on the redis VFS, while open */

static int time_and_trips(sqlite3_vfs *vfs, sqlite3_int64 *t) {
    kvsql_redis_stats st;
    if (redis_db && kvsql_redis_stats_get(redis_db, "main", &st) == SQLITE_OK)
        fprintf(stderr, "kvsql_round_trips %lld\n", (long long)st.round_trips);
    return system_time(vfs, t);
}

static int forget_db(unsigned type, void *ctx, void *p, void *x) {
    (void)type, (void)ctx, (void)x;
    if (p == redis_db) redis_db = NULL;
    return 0;
}

/* Every connection opened: remember it when it is on the redis VFS. */
static int note_db(sqlite3 *db, char **err, const void *api) {
    (void)err, (void)api;
    kvsql_redis_stats st;
    if (kvsql_redis_stats_get(db, "main", &st) != SQLITE_OK) return SQLITE_OK;
    redis_db = db;
    return sqlite3_trace_v2(db, SQLITE_TRACE_CLOSE, forget_db, NULL);
}

static int register_clock(void) {
    sqlite3_vfs *sys = sqlite3_vfs_find("unix"); /* not redis, which KVSQL_DEFAULT made the default */
    if (!sys) sys = sqlite3_vfs_find(NULL);
    if (!sys || sys->iVersion < 2 || !sys->xCurrentTimeInt64) return SQLITE_OK; /* no counts, still runs */
    clock_vfs = *sys;
    clock_vfs.zName = "speedtest1-clock";
    system_time = sys->xCurrentTimeInt64;
    clock_vfs.xCurrentTimeInt64 = time_and_trips;
    int rc = sqlite3_vfs_register(&clock_vfs, 1);
    if (rc == SQLITE_OK) rc = sqlite3_auto_extension((void (*)(void))note_db);
    return rc;
}

int main(int argc, char **argv) {
    int rc = kvsql_register();
    if (rc == SQLITE_OK) rc = kvsql_register_redis(0);
    if (rc == SQLITE_OK) rc = register_clock();
    if (rc != SQLITE_OK) {
        fprintf(stderr, "speedtest1: registering the VFSes failed: %s %s\n", sqlite3_errstr(rc), kvsql_errmsg(NULL));
        return 1;
    }
    return speedtest1_main(argc, argv);
}
