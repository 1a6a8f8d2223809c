/* kvsql_keys.h - the `kvsql` tool's work on a database's keys as a whole
 * (the database hash and every auxiliary key of the format, and a spread
 * database's run keys): listing the databases of a server or cluster,
 * and removing one.
 *
 * Used by tools/kvsql.c (ls, rm, mv). Goes through the library's
 * connection code (src/client/net/conn.c), so credentials, Redis Cluster
 * routing and every connection option of the library apply. The names of
 * the auxiliary keys come from their one owner, src/format.h. */
#ifndef KVSQL_TOOLS_KEYS_H
#define KVSQL_TOOLS_KEYS_H

#include "client/config.h"

#include <stddef.h>
#include <stdio.h>

/* Removes the database at key and all its auxiliary keys (and, for a
 * spread database, its run keys): refused when the key holds another
 * type, when a writer holds the lease or the module is writing it (unless
 * force), and when expect_version is not NULL and the database's version
 * is another. A one-hash database goes in one script; a spread one is
 * checked and its lease taken in one script, then its run keys go in
 * batches and its home keys last (kvsql_keys.c). Returns the number of
 * keys removed (0: there was no database), or -1 with why in err. */
long keys_remove(const kvsql_redis_config *cfg, const char *key, int force, const char *expect_version, char *err,
                 size_t errlen);

/* The database's version (T:v, "0" when missing) into out, and in
 * *spread whether key is a spread database's page map; 1 when a writer
 * holds its lease now, 0 when not, -1 with why in err. */
int keys_state(const kvsql_redis_config *cfg, const char *key, char *out, size_t outlen, int *spread, char *err,
               size_t errlen);

/* Prints every database of the server, or of every master of a Redis
 * Cluster, sorted by key: key, layout, pages, size, version. Returns the
 * number listed, or -1 with why in err. */
long keys_list(const kvsql_redis_config *cfg, FILE *out, char *err, size_t errlen);

#endif
