/* io.h - every request the spread store sends, in one place.
 *
 * The spread store (client/spread/store_spread.c) never talks to a
 * connection itself: it hands this file batches, "send these N commands,
 * each with the key that routes it; read all N replies". Two paths:
 *   - the home slot's scripts (begin, read ids, lock, publish, end, gc)
 *     go down the store's kvsql_conn: its token and CLIENT ID tie the
 *     lease to that connection; MOVED/ASK/TRYAGAIN as client/net/conn.c
 *     follows them;
 *   - batches (page reads, copies, intents, WAITs) and collection's
 *     deletes: on one non-cluster server, one pipeline on that same
 *     kvsql_conn (one round trip); on a Redis Cluster (the kvsql_conn
 *     learned a slot map), client/net/nodes.h's kvsql_net: each command
 *     to the node of its route key's slot, every node's share in flight
 *     together, MOVED/ASK/TRYAGAIN followed per command.
 * Nothing outside this file knows how many nodes there are. */
#ifndef KVSQL_CLIENT_SPREAD_IO_H
#define KVSQL_CLIENT_SPREAD_IO_H

#include "client/net/conn.h"
#include "client/net/nodes.h"
#include "client/spread/scripts.h"

#include <hiredis/hiredis.h>
#include <stddef.h>

/* One command of a batch: argc arguments (lengths in lens, or strlen when
 * lens is NULL), routed by the slot of route (a key the command touches). */
typedef struct sp_cmd {
    int argc;
    const char **argv;
    const size_t *lens;
    const char *route;
} sp_cmd;

/* A command sent without waiting on a cluster: kept (its own copy of the
 * arguments) until the next batch carries it. */
typedef struct sp_later {
    int argc;
    char **argv;
    size_t *lens;
    char *route;
} sp_later;

typedef struct sp_io {
    kvsql_conn conn;              /* the home slot's connection (client/net/conn.c) */
    char sha[SP_COUNT][41];       /* the home scripts' SHA1 on this connection, "" : unknown */
    uint32_t sha_connection;      /* conn.connections when sha[] was learned */
    kvsql_net *net;               /* every node, made at the first batch on a cluster; NULL before */
    sp_later *later;              /* run keys' deletes, carried by the next batch */
    int nlater, later_cap;
    sp_later *after;              /* home-slot commands sent once `later` ran (their order kept) */
    int nafter, after_cap;
} sp_io;

/* Sends the n commands, all in flight together, and reads their n replies
 * into out (in order). 0, or -1 when it failed (out holds nothing then;
 * conn.err says why). */
int sp_io_batch(sp_io *io, int n, const sp_cmd *cmds, redisReply **out);

/* sp_io_batch for reads of data that never changes once written (page
 * copies): with read_from=replicas on a cluster, each command goes to a
 * replica of its slot's master, in turn; an answer from a replica that
 * holds a nil (a copy it does not have yet: replication lag) is asked
 * again of the master in a second batch, so a nil is only ever the
 * master's. from_replica[i] (may be NULL): 1 when a replica's answer was
 * kept. Misses are counted in the store's stats (replica_misses). */
int sp_io_read(sp_io *io, int n, const sp_cmd *cmds, redisReply **out, unsigned char *from_replica);

/* Runs home script id (client/spread/scripts.h) with the call k (made by
 * kvsql_call_script: slots 0 and 1 are filled here), routed by route:
 * EVALSHA when its SHA1 is known on this connection, else EVAL with the
 * text and a SCRIPT LOAD in the same round trip. NULL when the connection
 * broke. */
redisReply *sp_io_script(sp_io *io, int id, kvsql_call *k, const char *route);

/* Runs text (a script of client/hash/scripts.h, kvsql_scripts[hid]) the
 * way the one-hash store does: EVALSHA with the SHA1 its connection
 * loaded, EVAL when unknown. NULL when the connection broke. */
redisReply *sp_io_hash_script(sp_io *io, int hid, kvsql_call *k, const char *route);

/* Sends a command without waiting; its reply is read (and an error only
 * counted) before the next batch's. For the end of a transaction and
 * the deletes of collection, whose outcome nothing waits on. On a
 * cluster a script call (the end of a transaction) goes at once on the
 * home connection; the run keys' deletes ride with the next batch (or
 * sp_io_flush; at most about 4096 wait), and any other home-slot command
 * sent after them (the ZREM that forgets them) goes only once they ran. */
void sp_io_send(sp_io *io, int argc, const char **argv, const char *route);

/* Runs what sp_io_send left for later now. 0, or -1 when that failed
 * (those commands are dropped: what they deleted, collection finds again). */
int sp_io_flush(sp_io *io);

/* WAIT for `replicas` replicas (timeout ms) on every node other than the
 * home slot's that serves a route of cmds[0..n) (the page writes just
 * made). On one server: nothing to do (the home's WAIT after the publish
 * covers the same node), answers `replicas`. Else the fewest replicas a
 * node acknowledged, or -1 when a WAIT failed. */
long long sp_io_wait_nodes(sp_io *io, int replicas, int ms, int n, const sp_cmd *cmds);

/* WAIT on the home slot's connection (after the publish). The replicas
 * acknowledged, or -1 when it failed. */
long long sp_io_wait_home(sp_io *io, int replicas, int ms);

/* Closes the connections (kvsql_conn_close, every node's) and drops what
 * was left for later. */
void sp_io_close(sp_io *io);

#endif
