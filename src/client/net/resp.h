/* resp.h - commands in RESP, formatted by hand, queued on a link
 * (client/net/transport.h).
 *
 * The one formatter of the library's hot commands: used by client/net/conn.c
 * (a store's scripts) and client/net/nodes.c (batches to many nodes), and
 * kvsql_put_decimal by whoever makes decimal arguments. hiredis 0.14 formats
 * with sdscatfmt, which was a third of the client's instructions of a warm
 * point select (bench/PROFILE.md); these write the same bytes. */
#ifndef KVSQL_CLIENT_RESP_H
#define KVSQL_CLIENT_RESP_H

#include "client/net/transport.h"

#include <stddef.h>

/* Writes n in decimal at p, no NUL; returns the end. Commands and
 * begin's arguments are made by hand: snprintf was a sixth of the client's
 * instructions of a warm point select (bench/PROFILE.md). */
char *kvsql_put_decimal(char *p, unsigned long long n);

/* Queues a command of argc arguments (lengths from lens, or strlen when
 * lens is NULL) on l in RESP. REDIS_OK with its size in *bytes (when not
 * NULL), or REDIS_ERR when out of memory. */
int kvsql_resp_append(kvsql_link *l, int argc, const char **argv, const size_t *lens, size_t *bytes);

#endif
