/* transport.h - the byte stream between the `redis` VFS and one Redis
 * node: a plain hiredis connection, or a TLS session (OpenSSL) when the
 * configuration asks for TLS (tls=1, rediss://).
 *
 * Used by client/net/conn.c (the store's connection), client/hash/store_read.c
 * (its pipelined reads), client/net/cluster.c (an ASK's connection of its
 * own) and client/net/nodes.c (a link to each node of a cluster); nothing
 * else in the library knows which of the two carries the bytes. Both give
 * the same promises: commands are queued and written together
 * (pipelining), replies come back in order as hiredis
 * redisReply objects, the timeouts of the configuration hold (connect,
 * then per read and write), and a broken link stays broken with why in
 * kvsql_link_error(). A TLS link verifies the server's certificate and
 * its name unless tls_verify=0 (client/net/tls.c). */
#ifndef KVSQL_CLIENT_TRANSPORT_H
#define KVSQL_CLIENT_TRANSPORT_H

#include "client/config.h"

#include <hiredis/hiredis.h>
#include <stddef.h>

typedef struct kvsql_link kvsql_link;

/* Connects to host:port (a unix socket path when port is 0) as cfg says:
 * connect_timeout_ms, then timeout_ms per read and write, keep-alive, and
 * TLS with its verification when cfg->tls. NULL with why in err. */
kvsql_link *kvsql_link_open(const char *host, int port, const kvsql_redis_config *cfg, char *err, size_t errlen);

void kvsql_link_free(kvsql_link *l);

/* Queues a command already in RESP (len bytes). REDIS_OK, or REDIS_ERR
 * when out of memory. */
int kvsql_link_append(kvsql_link *l, const char *cmd, size_t len);

/* Queues a command of arguments (lengths from lens, or strlen when lens
 * is NULL). REDIS_OK, or REDIS_ERR when out of memory. */
int kvsql_link_append_argv(kvsql_link *l, int argc, const char **argv, const size_t *lens);

/* Writes every queued command now, without waiting for replies. REDIS_OK
 * or REDIS_ERR (the link is broken). */
int kvsql_link_flush(kvsql_link *l);

/* The next reply, after writing what is queued: REDIS_OK with *reply
 * (free it with freeReplyObject), or REDIS_ERR (the link is broken). */
int kvsql_link_get_reply(kvsql_link *l, redisReply **reply);

/* Whether the link broke (then it stays broken), and why. */
int kvsql_link_broken(const kvsql_link *l);
const char *kvsql_link_error(const kvsql_link *l);

/* Marks the link broken, for why. */
void kvsql_link_break(kvsql_link *l, const char *why);

#endif
