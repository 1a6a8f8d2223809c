/* speedtest1_main.c - main() of the speedtest1 binary that `make bench` builds.
 *
 * bench/run compiles SQLite's test/speedtest1.c (from Debian's sqlite3
 * source package, fetched into bench/work/, never committed) with
 * -Dmain=speedtest1_main and links it with this file and kvsql's core
 * objects, so `--vfs kvsql-memory` finds our VFS: kvsql_register() runs
 * before speedtest1 parses its options. With --memdb the same binary runs
 * SQLite's own in-memory database, the baseline. */
#include "kvsql.h"

#include <stdio.h>

int speedtest1_main(int argc, char **argv);

int main(int argc, char **argv) {
    int rc = kvsql_register();
    if (rc != SQLITE_OK) {
        fprintf(stderr, "speedtest1: kvsql_register failed: %s\n", sqlite3_errstr(rc));
        return 1;
    }
    return speedtest1_main(argc, argv);
}
