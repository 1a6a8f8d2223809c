/* io.c - the spread store's requests (io.h): the home slot's scripts on
 * the store's kvsql_conn; batches on that connection (one server) or on
 * every node of a Redis Cluster at once (client/net/nodes.h).
 *
 * Owns: the script SHA1s learned on the connection, the kvsql_net of a
 * cluster, and the commands sp_io_send left for later on a cluster (the
 * run keys' deletes, then the home-slot commands that must follow them:
 * collection deletes copies before it forgets them, so a crash between
 * leaves them listed, never lost). */
#include "client/spread/io.h"

#include <stdlib.h>
#include <string.h>

/* On a cluster: the kvsql_conn asked CLUSTER SLOTS at its handshake and
 * a node answered with a map. */
static int clustered(const sp_io *io) {
    return io->conn.cl.enabled;
}

static int home_slot(const sp_io *io, const char *route) {
    return kvsql_key_slot(route, strlen(route)) == io->conn.cl.slot;
}

/* One pipeline on the home connection: the one-server path, and the
 * home scripts'. */
static int conn_batch(sp_io *io, int n, const sp_cmd *cmds, redisReply **out) {
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

/* ---- left for later ------------------------------------------------------- */

static void later_free(sp_later *l) {
    for (int i = 0; i < l->argc; i++) free(l->argv[i]);
    free(l->argv);
    free(l->lens);
    free(l->route);
}

static void later_drop(sp_io *io) {
    for (int i = 0; i < io->nlater; i++) later_free(&io->later[i]);
    for (int i = 0; i < io->nafter; i++) later_free(&io->after[i]);
    io->nlater = io->nafter = 0;
}

/* Appends a copy of the command to *list. -1 when out of memory. */
static int later_add(sp_later **list, int *count, int *cap, int argc, const char **argv, const char *route) {
    if (*count == *cap) {
        int ncap = *cap ? *cap * 2 : 16;
        sp_later *l = realloc(*list, sizeof(*l) * (size_t)ncap);
        if (!l) return -1;
        *list = l;
        *cap = ncap;
    }
    sp_later *l = &(*list)[*count];
    memset(l, 0, sizeof(*l));
    l->argv = calloc((size_t)argc, sizeof(*l->argv));
    l->lens = malloc(sizeof(*l->lens) * (size_t)argc);
    l->route = strdup(route);
    int ok = l->argv && l->lens && l->route;
    for (int i = 0; ok && i < argc; i++, l->argc++) {
        l->lens[i] = strlen(argv[i]);
        ok = (l->argv[i] = strdup(argv[i])) != NULL;
    }
    if (!ok) {
        later_free(l);
        return -1;
    }
    (*count)++;
    return 0;
}

/* The run keys' deletes ran: the home-slot commands kept behind them go. */
static void send_after(sp_io *io) {
    for (int i = 0; i < io->nafter; i++) kvsql_conn_send(&io->conn, io->after[i].argc, (const char **)io->after[i].argv);
    for (int i = 0; i < io->nafter; i++) later_free(&io->after[i]);
    io->nafter = 0;
}

/* ---- batches on every node -------------------------------------------------- */

static int net_ready(sp_io *io) {
    if (!io->net) io->net = kvsql_net_new(io->conn.cfg, io->conn.stats);
    return io->net != NULL;
}

/* Runs cmds[0..n) and what was left for later, in one kvsql_net batch
 * (cmds to replicas when `replica`; node[i], when not NULL: the node that
 * answered cmds[i]). Every command the spread store batches is safe to
 * run twice (reads, WAIT, copies under an id of their own, their intent,
 * deletes of garbage), so a failed batch is sent once more: kvsql_net
 * asks for the slot map first when a link broke (a master killed, a
 * replica promoted). */
static int net_batch_to(sp_io *io, int n, const sp_cmd *cmds, redisReply **out, int replica, int *node) {
    int total = n + io->nlater;
    for (int i = 0; i < n; i++) out[i] = NULL;
    if (!io->conn.c || kvsql_conn_drain(&io->conn) != 0) return -1;
    kvsql_net_cmd *nc = calloc((size_t)(total ? total : 1), sizeof(*nc));
    if (!nc || !net_ready(io)) {
        free(nc);
        kvsql_link_break(io->conn.c, "out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++)
        nc[i] = (kvsql_net_cmd){.argc = cmds[i].argc, .argv = cmds[i].argv, .lens = cmds[i].lens,
                                .key = cmds[i].route, .keylen = strlen(cmds[i].route), .replica = replica};
    for (int i = 0; i < io->nlater; i++) {
        sp_later *l = &io->later[i];
        nc[n + i] = (kvsql_net_cmd){.argc = l->argc, .argv = (const char **)l->argv, .lens = l->lens,
                                    .key = l->route, .keylen = strlen(l->route)};
    }
    int rc = kvsql_net_run(io->net, nc, total);
    if (rc != SQLITE_OK && rc != SQLITE_NOMEM) /* a node lost (failover): once more, on a fresh map */
        rc = kvsql_net_run(io->net, nc, total);
    if (rc != SQLITE_OK) {
        later_drop(io); /* their fate is unknown: collection finds what is left */
        kvsql_link_break(io->conn.c, io->net->err);
        free(nc);
        return -1;
    }
    for (int i = 0; i < n; i++) out[i] = nc[i].reply;
    for (int i = 0; i < n && node; i++) node[i] = nc[i].node;
    for (int i = n; i < total; i++) {
        if (nc[i].reply && nc[i].reply->type == REDIS_REPLY_ERROR) io->conn.stats->end_errors++;
        freeReplyObject(nc[i].reply);
    }
    for (int i = 0; i < io->nlater; i++) later_free(&io->later[i]);
    io->nlater = 0;
    free(nc);
    send_after(io);
    return 0;
}

static int net_batch(sp_io *io, int n, const sp_cmd *cmds, redisReply **out) {
    return net_batch_to(io, n, cmds, out, 0, NULL);
}

int sp_io_batch(sp_io *io, int n, const sp_cmd *cmds, redisReply **out) {
    return clustered(io) ? net_batch(io, n, cmds, out) : conn_batch(io, n, cmds, out);
}

/* ---- reads from replicas ------------------------------------------------------ */

static int from_replicas(const sp_io *io) {
    return clustered(io) && !strcmp(io->conn.cfg->read_from, "replicas");
}

/* A replica's answer that lacks something: nil, or an array holding a nil. */
static int lacks(const redisReply *r) {
    if (r->type == REDIS_REPLY_NIL) return 1;
    if (r->type != REDIS_REPLY_ARRAY) return 0;
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_NIL) return 1;
    return 0;
}

/* Asks the master again for every command whose replica answer lacks
 * something, replacing those answers. 0, or -1 when that batch failed
 * (out freed then). */
static int ask_masters(sp_io *io, int n, const sp_cmd *cmds, redisReply **out, unsigned char *from_replica) {
    int *again = malloc(sizeof(*again) * (size_t)n), m = 0;
    sp_cmd *sub = malloc(sizeof(*sub) * (size_t)n);
    redisReply **got = malloc(sizeof(*got) * (size_t)n);
    int rc = again && sub && got ? 0 : -1;
    for (int i = 0; i < n && rc == 0; i++)
        if (from_replica[i] && lacks(out[i])) {
            again[m] = i;
            sub[m++] = cmds[i];
        }
    if (rc == 0 && m > 0) rc = net_batch_to(io, m, sub, got, 0, NULL);
    for (int j = 0; j < m && rc == 0; j++) {
        freeReplyObject(out[again[j]]);
        out[again[j]] = got[j];
        from_replica[again[j]] = 0;
    }
    if (rc == 0) io->conn.stats->replica_misses += m;
    for (int i = 0; i < n && rc != 0; i++) {
        freeReplyObject(out[i]);
        out[i] = NULL;
    }
    if (!(again && sub && got)) kvsql_link_break(io->conn.c, "out of memory");
    free(again);
    free(sub);
    free(got);
    return rc;
}

int sp_io_read(sp_io *io, int n, const sp_cmd *cmds, redisReply **out, unsigned char *from_replica) {
    if (!from_replicas(io) || n <= 0) {
        for (int i = 0; from_replica && i < n; i++) from_replica[i] = 0;
        return sp_io_batch(io, n, cmds, out);
    }
    int *node = malloc(sizeof(*node) * (size_t)n);
    unsigned char *mine = from_replica ? from_replica : malloc((size_t)n);
    int rc = node && mine ? net_batch_to(io, n, cmds, out, 1, node) : -1;
    if (!node || !mine) kvsql_link_break(io->conn.c, "out of memory");
    for (int i = 0; i < n && rc == 0; i++) mine[i] = (unsigned char)kvsql_net_is_replica(io->net, node[i]);
    if (rc == 0) rc = ask_masters(io, n, cmds, out, mine);
    if (mine != from_replica) free(mine);
    free(node);
    return rc;
}

int sp_io_flush(sp_io *io) {
    if (io->nlater == 0 && io->nafter == 0) return 0;
    if (!io->conn.c) {
        later_drop(io);
        return -1;
    }
    return net_batch(io, 0, NULL, NULL);
}

/* ---- the home slot's scripts ------------------------------------------------ */

/* Forgets the SHA1s learned on an earlier connection (a restart or
 * another node may not know them). */
static void check_connection(sp_io *io) {
    if (io->sha_connection == io->conn.connections) return;
    memset(io->sha, 0, sizeof(io->sha));
    io->sha_connection = io->conn.connections;
}

/* A MOVED, ASK or TRYAGAIN answer: the command did not run. */
static int redirected(const redisReply *r) {
    return r && r->type == REDIS_REPLY_ERROR &&
           (!strncmp(r->str, "MOVED ", 6) || !strncmp(r->str, "ASK ", 4) || kvsql_cluster_is_tryagain(r->str));
}

/* r, the reply to k sent in a pipeline: on a cluster, a redirection is
 * followed the way kvsql_conn_round_trip follows it (MOVED: the call
 * fails and the connection moves to the new owner at the next begin). */
static redisReply *followed(sp_io *io, redisReply *r, kvsql_call *k) {
    if (!clustered(io) || !redirected(r)) return r;
    freeReplyObject(r);
    return kvsql_conn_round_trip(&io->conn, k->argc, k->argv, k->lens);
}

static redisReply *one(sp_io *io, kvsql_call *k, const char *route) {
    sp_cmd c = {k->argc, k->argv, k->lens, route};
    redisReply *r = NULL;
    return conn_batch(io, 1, &c, &r) == 0 ? followed(io, r, k) : NULL;
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
    if (conn_batch(io, 2, cmds, out) != 0) return NULL;
    if (out[0] && out[0]->type == REDIS_REPLY_STRING && out[0]->len == 40) memcpy(io->sha[id], out[0]->str, 41);
    freeReplyObject(out[0]);
    return followed(io, out[1], k);
}

redisReply *sp_io_hash_script(sp_io *io, int hid, kvsql_call *k, const char *route) {
    (void)route;
    if (!io->conn.c || kvsql_conn_drain(&io->conn) != 0) return NULL;
    return kvsql_conn_run_script(&io->conn, hid, k);
}

/* Commands left for later past this many are run at once (memory stays bounded). */
#define LATER_MAX 4096

void sp_io_send(sp_io *io, int argc, const char **argv, const char *route) {
    int script = !strcmp(argv[0], "EVAL") || !strcmp(argv[0], "EVALSHA"); /* the end: orders with our next script */
    if (!clustered(io) || script || (home_slot(io, route) && io->nlater == 0)) {
        kvsql_conn_send(&io->conn, argc, argv);
        return;
    }
    int home = home_slot(io, route);
    if (home ? later_add(&io->after, &io->nafter, &io->after_cap, argc, argv, route)
             : later_add(&io->later, &io->nlater, &io->later_cap, argc, argv, route))
        return; /* out of memory: not sent; collection finds it again */
    if (io->nlater + io->nafter > LATER_MAX) sp_io_flush(io);
}

/* ---- WAIT ------------------------------------------------------------------- */

long long sp_io_wait_nodes(sp_io *io, int replicas, int ms, int n, const sp_cmd *cmds) {
    if (!clustered(io) || !io->net || !io->net->mapped) return replicas;
    char rs[16], mss[16];
    snprintf(rs, sizeof(rs), "%d", replicas);
    snprintf(mss, sizeof(mss), "%d", ms);
    const char *argv[3] = {"WAIT", rs, mss};
    sp_cmd w[KVSQL_NET_NODES];
    int seen[KVSQL_NET_NODES] = {0}, nw = 0, home = io->net->owner[io->conn.cl.slot];
    for (int i = 0; i < n; i++) {
        int k = io->net->owner[kvsql_key_slot(cmds[i].route, strlen(cmds[i].route))];
        if (k < 0 || k == home || seen[k]) continue; /* unknown: the batch failed first; home: WAITed after */
        seen[k] = 1;
        w[nw++] = (sp_cmd){3, argv, NULL, cmds[i].route};
    }
    redisReply *out[KVSQL_NET_NODES];
    if (nw == 0) return replicas;
    if (net_batch(io, nw, w, out) != 0) return -1;
    long long fewest = replicas;
    for (int i = 0; i < nw; i++) {
        long long got = out[i]->type == REDIS_REPLY_INTEGER ? out[i]->integer : -1;
        if (got < fewest) fewest = got;
        freeReplyObject(out[i]);
    }
    return fewest;
}

long long sp_io_wait_home(sp_io *io, int replicas, int ms) {
    char rs[16], mss[16];
    snprintf(rs, sizeof(rs), "%d", replicas);
    snprintf(mss, sizeof(mss), "%d", ms);
    const char *argv[3] = {"WAIT", rs, mss};
    sp_cmd c = {3, argv, NULL, io->conn.key};
    redisReply *r = NULL;
    if (conn_batch(io, 1, &c, &r) != 0) return -1;
    long long got = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    return got;
}

void sp_io_close(sp_io *io) {
    if (io->nlater || io->nafter) sp_io_flush(io);
    later_drop(io);
    free(io->later);
    free(io->after);
    io->later = io->after = NULL;
    io->later_cap = io->after_cap = 0;
    kvsql_conn_close(&io->conn);
    kvsql_net_free(io->net);
    io->net = NULL;
}
