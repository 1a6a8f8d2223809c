/* kvsql_keys.h - the `kvsql` tool's work on a database's keys as a whole
 * (the database hash and every auxiliary key of the format): listing the
 * databases of a server or cluster, and removing one in one atomic step.
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

/* Removes the database at key and all its auxiliary keys in one script:
 * refused when the key holds another type, when a writer holds the lease
 * or the module is writing it (unless force), and when expect_version is
 * not NULL and the database's version is another. Returns the number of
 * keys removed (0: there was no database), or -1 with why in err. */
long keys_remove(const kvsql_redis_config *cfg, const char *key, int force, const char *expect_version, char *err,
                 size_t errlen);

/* The database's version (T:v, "0" when missing) into out; 1 when a
 * writer holds its lease now, 0 when not, -1 with why in err. */
int keys_state(const kvsql_redis_config *cfg, const char *key, char *out, size_t outlen, char *err, size_t errlen);

/* Prints every database of the server, or of every master of a Redis
 * Cluster, sorted by key: key, layout, pages, size, version. Returns the
 * number listed, or -1 with why in err. */
long keys_list(const kvsql_redis_config *cfg, FILE *out, char *err, size_t errlen);

#endif
