/* nodes.h - a store's connections to every node of a Redis Cluster (or to
 * the one server when it is not a cluster), and batches of commands sent
 * to all of them with every node's requests in flight together.
 *
 * kvsql_net owns the slot map (CLUSTER SLOTS of a node, refreshed after a
 * MOVED and after a connection error, a bounded number of nodes asked),
 * one link per node (client/net/transport.h: plain or TLS, AUTH and SELECT
 * as the store's configuration says, client/config.h) and counters per
 * node. kvsql_net_run takes N commands, each with the key that routes it
 * (its slot), and promises: every node's commands are written before any
 * reply is read (one round trip per node per round, all rounds counted);
 * each command gets its own reply, in the caller's order; MOVED updates
 * the map and the command goes to the new owner, ASK sends it once with
 * ASKING to the named node, TRYAGAIN sends it again after a short pause
 * (bounded: about 3 s); CLUSTERDOWN, a refused connection, a broken link
 * or redirections without end make the whole batch fail with an SQLite
 * result code and a message naming the node (kvsql_net.err, and the VFS's
 * error message). A failed batch says nothing of its commands: those
 * written to sound nodes may have run (the caller resends only what is
 * safe to run twice). Nothing here knows the storage format: commands and
 * replies pass as they are. docs/LIBRARY.md, "Many nodes".
 *
 * Replicas: the map remembers each master's replicas (CLUSTER SLOTS). A
 * command marked `replica` goes to one of its slot's replicas (taken in
 * turn; READONLY is queued on a replica's link at connect), or to the
 * master when the slot has none; a replica's error or redirection, or a
 * replica that cannot be reached, sends it to the master in the next
 * round. cmd.node says which node answered. */
#ifndef KVSQL_CLIENT_NODES_H
#define KVSQL_CLIENT_NODES_H

#include "client/config.h"
#include "client/net/cluster.h"
#include "client/net/transport.h"
#include "kvsql.h"

#include <hiredis/hiredis.h>
#include <stddef.h>

#define KVSQL_NET_NODES 128  /* nodes a map may name (masters) */
#define KVSQL_NET_ROUNDS 64  /* rounds of one batch: redirections and TRYAGAIN pauses */
#define KVSQL_NET_REPLICAS 8 /* replicas of one master used for reads */

/* What one node was asked, since kvsql_net_clear_counters. */
typedef struct kvsql_net_counters {
    long long requests;    /* commands of batches written to it (resent ones again; ASKING not) */
    long long round_trips; /* waits for its replies: one per round it had requests, map refreshes too */
    long long bytes_out;   /* RESP bytes written to it: batches, ASKING, SELECT, CLUSTER SLOTS (not AUTH) */
    long long bytes_in;    /* bytes of the strings in its replies */
    long long connects;    /* connections made to it */
    long long redirects;   /* MOVED and ASK replies it gave */
    long long replica_reads; /* commands marked replica it answered as a replica */
} kvsql_net_counters;

typedef struct kvsql_net_node {
    kvsql_node addr;
    kvsql_link *link;  /* NULL: not connected */
    int handshake;     /* replies of AUTH/SELECT queued on a new link, not read yet */
    int sent;          /* commands of the current round written to it */
    int replica;       /* a replica in the last map (READONLY on its link) */
    int readonly;      /* READONLY was sent on the current link */
    int shunned;       /* a replica that could not be reached: not used until the next map */
    short replicas[KVSQL_NET_REPLICAS]; /* a master's replicas (node indices), from the last map */
    int nreplicas;
    unsigned turn;     /* a master's: which replica the next replica command goes to */
    kvsql_net_counters count;
} kvsql_net_node;

typedef struct kvsql_net {
    const kvsql_redis_config *cfg; /* the store's: seed, TLS, AUTH, timeouts */
    kvsql_redis_stats *stats;      /* NULL, or the store's: round_trips, connects, redirects added */
    kvsql_node seed;               /* redis= */
    int mapped;                    /* 0: no map yet; 1: a cluster's; 2: one server (every slot its) */
    int stale;                     /* a link broke: ask for the map before the next batch */
    short owner[KVSQL_CLUSTER_SLOTS]; /* node index of each slot's master, -1: unknown */
    kvsql_net_node node[KVSQL_NET_NODES];
    int nnodes;
    long long batches;             /* kvsql_net_run calls */
    long long rounds;              /* their rounds: every node's requests written, then every reply read */
    long long refreshes;           /* slot maps asked for */
    int max_in_flight;             /* most nodes with requests in flight together in one round */
    char err[512];                 /* why the last call failed */
} kvsql_net;

/* One command of a batch: argc arguments (lengths from lens, or strlen
 * when lens is NULL), routed by the slot of key (keylen bytes; its
 * {hash tag} as Redis Cluster hashes it), to a replica when `replica`.
 * reply and node: set by kvsql_net_run. */
typedef struct kvsql_net_cmd {
    int argc;
    const char **argv;
    const size_t *lens;
    const char *key;
    size_t keylen;
    int replica;      /* 1: may be answered by a replica of its slot's master (a read of data that never changes) */
    redisReply *reply;
    int node;         /* set by kvsql_net_run: the node that answered (-1: none) */
} kvsql_net_cmd;

/* A kvsql_net for the server (or seed of a cluster) of cfg; connects
 * nothing yet. cfg and stats (may be NULL) must outlive it. NULL when out
 * of memory. */
kvsql_net *kvsql_net_new(const kvsql_redis_config *cfg, kvsql_redis_stats *stats);

/* Closes every link and frees n (NULL: nothing). */
void kvsql_net_free(kvsql_net *n);

/* Runs a batch of count commands (see the header comment). SQLITE_OK
 * with every cmds[i].reply set (error replies other than redirections
 * included: the caller judges them; free each with freeReplyObject), or
 * an SQLite result code with every reply NULL and n->err saying why,
 * naming the node. */
int kvsql_net_run(kvsql_net *n, kvsql_net_cmd *cmds, int count);

/* Whether node k answered as a replica (in the current map). */
int kvsql_net_is_replica(const kvsql_net *n, int k);

/* Zeroes every node's counters and the batch counters. */
void kvsql_net_clear_counters(kvsql_net *n);

#endif
