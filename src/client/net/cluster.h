/* cluster.h - Redis Cluster routing for the `redis` VFS: which node holds
 * a database's slot, and what MOVED, ASK and TRYAGAIN replies mean.
 *
 * Used by client/net/conn.c (the store's connection): when it connects
 * (which node to try, the CLUSTER SLOTS reply pipelined into the
 * handshake) and when a reply comes back (redirections). A store serves
 * one key, so one slot: the state is that slot's owner and the nodes a
 * refresh may ask. client/net/nodes.c (many nodes at once) uses its
 * parsers: key slots, kvsql_cluster_walk_slots, kvsql_cluster_redirect.
 * Hiredis 0.14 has no cluster support; this is all of it.
 * docs/LIBRARY.md, "Redis Cluster", describes the behaviour. */
#ifndef KVSQL_CLIENT_CLUSTER_H
#define KVSQL_CLIENT_CLUSTER_H

#include "client/config.h"
#include "client/net/transport.h"

#include <hiredis/hiredis.h>
#include <stddef.h>

#define KVSQL_CLUSTER_SLOTS 16384
#define KVSQL_CLUSTER_KNOWN 16  /* nodes remembered for a refresh */
#define KVSQL_CLUSTER_HOPS 6    /* nodes tried per connection */
#define KVSQL_CLUSTER_REDIRECTS 5 /* MOVED/ASK followed per command */
#define KVSQL_CLUSTER_TRYAGAIN 40 /* TRYAGAIN retries per command (about 3 s) */

typedef struct kvsql_node {
    char host[256];
    int port; /* 0: none */
} kvsql_node;

typedef struct kvsql_cluster {
    int slot;                               /* of the store's key */
    kvsql_node seed;                        /* redis= */
    kvsql_node owner;                       /* the slot's master, when learned */
    kvsql_node known[KVSQL_CLUSTER_KNOWN];  /* masters and replicas seen in CLUSTER SLOTS */
    int nknown;
    int enabled;                            /* a node answered CLUSTER SLOTS */
} kvsql_cluster;

/* CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), as Redis Cluster
 * hashes keys. */
unsigned kvsql_crc16(const void *data, size_t len);

/* The cluster slot of a key: CRC16 of its hash tag ({...}: the bytes
 * between the first '{' and the first '}' after it, when not empty) or
 * of the whole key, modulo 16384. */
int kvsql_key_slot(const char *key, size_t len);

/* Starts the routing of `key` from the seed address of cfg. */
void kvsql_cluster_init(kvsql_cluster *c, const char *key, const kvsql_redis_config *cfg);

/* Whether the store may ask CLUSTER SLOTS (not over a unix socket). */
int kvsql_cluster_applies(const kvsql_cluster *c);

/* The node to try for the attempt-th connection of a connect (0 first):
 * the owner when known, else the seed; then the other known nodes, then
 * the seed again. NULL when there is nothing more to try. */
const kvsql_node *kvsql_cluster_candidate(const kvsql_cluster *c, int attempt);

/* Takes the reply to CLUSTER SLOTS sent to node `from`: remembers the
 * owner of the slot and the nodes. An error reply (no cluster, no right)
 * or a malformed one changes nothing. Returns 1 when it was a slot map. */
int kvsql_cluster_take_slots(kvsql_cluster *c, const redisReply *r, const kvsql_node *from);

/* Called for each node of each slot range of a CLUSTER SLOTS reply
 * (slots lo..hi; master: the range's master, else a replica). */
typedef void (*kvsql_slots_fn)(void *ctx, int lo, int hi, int master, const kvsql_node *n);

/* Checks a whole CLUSTER SLOTS reply sent by node `from`, then walks it:
 * fn for every node of every range, in order. -1 (fn never called) when
 * it is an error reply or malformed anywhere. */
int kvsql_cluster_walk_slots(const redisReply *r, const kvsql_node *from, kvsql_slots_fn fn, void *ctx);

/* Whether node n is the slot's owner (or the owner is unknown). */
int kvsql_cluster_serves(const kvsql_cluster *c, const kvsql_node *n);

/* Parses "MOVED <slot> <host>:<port>" or "ASK ..." (an empty host means
 * the host of `from`). Returns 1 for MOVED, 2 for ASK, 0 when msg is
 * neither or malformed. */
int kvsql_cluster_redirect(const char *msg, const kvsql_node *from, kvsql_node *to);

/* A MOVED reply: the slot's owner is now `to`. */
void kvsql_cluster_moved(kvsql_cluster *c, const kvsql_node *to);

/* Whether msg is a TRYAGAIN error (keys of the slot are being migrated). */
int kvsql_cluster_is_tryagain(const char *msg);

/* Sends ASKING and the command to node `to` on a connection of its own
 * (with TLS and AUTH as cfg says), reads the command's reply and closes it: ASK is
 * for one command. NULL with why in err when the connection failed. */
redisReply *kvsql_cluster_ask(const kvsql_node *to, const kvsql_redis_config *cfg, int argc, const char **argv,
                              const size_t *lens, char *err, size_t errlen);

/* Appends AUTH (with the user when cfg names one) to l when cfg has a
 * password, for the handshake of client/net/conn.c and of an ASK connection.
 * Returns the number of commands appended, 0 or 1. */
int kvsql_append_auth(kvsql_link *l, const kvsql_redis_config *cfg);

/* "host:port" of n, for messages. */
const char *kvsql_node_where(const kvsql_node *n, char *buf, size_t len);

#endif
