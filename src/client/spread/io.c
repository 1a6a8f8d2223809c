/* io.c - the spread store's requests (io.h): batches of commands, each
 * routed by a key, all in flight together.
 *
 * Today: one node. Every command goes down the store's one kvsql_conn
 * (its key's node), in one pipeline; `route` is not looked at yet. When
 * the network layer can hold many nodes (client/net/, H-net), this file
 * alone changes: group the batch by the node of each route key's slot,
 * send every group before reading any reply, follow MOVED/ASK per
 * command. Nothing outside this file knows how many nodes there are. */
#include "client/spread/io.h"

#include <string.h>

int sp_io_batch(sp_io *io, int n, const sp_cmd *cmds, redisReply **out) {
    kvsql_conn *cn = &io->conn;
    for (int i = 0; i < n; i++) out[i] = NULL;
    if (!cn->c || kvsql_conn_drain(cn) != 0) return -1;
    for (int i = 0; i < n; i++)
        if (kvsql_link_append_argv(cn->c, cmds[i].argc, cmds[i].argv, cmds[i].lens) != REDIS_OK) return -1;
    cn->stats->round_trips++;
    for (int i = 0; i < n; i++)
        if (kvsql_link_get_reply(cn->c, &out[i]) != REDIS_OK) {
            for (int j = 0; j < i; j++) {
                freeReplyObject(out[j]);
                out[j] = NULL;
            }
            return -1;
        }
    return 0;
}

/* Forgets the SHA1s learned on an earlier connection (a restart or
 * another node may not know them). */
static void check_connection(sp_io *io) {
    if (io->sha_connection == io->conn.connections) return;
    memset(io->sha, 0, sizeof(io->sha));
    io->sha_connection = io->conn.connections;
}

static redisReply *one(sp_io *io, kvsql_call *k, const char *route) {
    sp_cmd c = {k->argc, k->argv, k->lens, route};
    redisReply *r = NULL;
    return sp_io_batch(io, 1, &c, &r) == 0 ? r : NULL;
}

redisReply *sp_io_script(sp_io *io, int id, kvsql_call *k, const char *route) {
    check_connection(io);
    if (io->sha[id][0]) {
        k->argv[0] = "EVALSHA";
        k->lens[0] = 7;
        k->argv[1] = io->sha[id];
        k->lens[1] = 40;
        redisReply *r = one(io, k, route);
        if (!r || r->type != REDIS_REPLY_ERROR || strncmp(r->str, "NOSCRIPT", 8) != 0) return r;
        freeReplyObject(r);
        io->sha[id][0] = 0;
        io->conn.stats->script_loads++;
    }
    const char *text = kvsql_spread_scripts[id];
    k->argv[0] = "EVAL";
    k->lens[0] = 4;
    k->argv[1] = text;
    k->lens[1] = strlen(text);
    const char *load[3] = {"SCRIPT", "LOAD", text};
    sp_cmd cmds[2] = {{3, load, NULL, route}, {k->argc, k->argv, k->lens, route}};
    redisReply *out[2];
    if (sp_io_batch(io, 2, cmds, out) != 0) return NULL;
    if (out[0] && out[0]->type == REDIS_REPLY_STRING && out[0]->len == 40) memcpy(io->sha[id], out[0]->str, 41);
    freeReplyObject(out[0]);
    return out[1];
}

redisReply *sp_io_hash_script(sp_io *io, int hid, kvsql_call *k, const char *route) {
    (void)route;
    if (!io->conn.c || kvsql_conn_drain(&io->conn) != 0) return NULL;
    return kvsql_conn_run_script(&io->conn, hid, k);
}

void sp_io_send(sp_io *io, int argc, const char **argv, const char *route) {
    (void)route;
    kvsql_conn_send(&io->conn, argc, argv);
}
