/* io.h - every request the spread store sends, in one place.
 *
 * The spread store (client/spread/store_spread.c) never talks to a connection
 * itself: it hands this file batches, "send these N commands, each with
 * the key that routes it; read all N replies". Today every key is served
 * by the one node of the store's kvsql_conn (a single non-cluster server,
 * or the node of the database's home slot): a batch is one pipeline on
 * it, one round trip. When the client's network layer serves many nodes
 * at once (client/net/, issue #25), only this file changes: each command
 * goes to the node of its route key's slot, every node's share in flight
 * together. The store's code and its promises stay as they are. */
#ifndef KVSQL_CLIENT_SPREAD_IO_H
#define KVSQL_CLIENT_SPREAD_IO_H

#include "client/net/conn.h"
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

typedef struct sp_io {
    kvsql_conn conn;              /* the connection (client/net/conn.c) */
    char sha[SP_COUNT][41];       /* the home scripts' SHA1 on this connection, "" : unknown */
    uint32_t sha_connection;      /* conn.connections when sha[] was learned */
} sp_io;

/* Sends the n commands, all in flight together, and reads their n replies
 * into out (in order). 0, or -1 when the connection broke (out holds
 * nothing then; cn->err says why). */
int sp_io_batch(sp_io *io, int n, const sp_cmd *cmds, redisReply **out);

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
 * the deletes of collection, whose outcome nothing waits on. */
void sp_io_send(sp_io *io, int argc, const char **argv, const char *route);

#endif
