/* nodes.c - a store's connections to every node of a Redis Cluster and
 * batches in flight to all of them together (nodes.h).
 *
 * A batch runs in rounds. Each round routes every command still without
 * its reply (the slot map, or the node an ASK named), connects the nodes
 * it needs (their AUTH/SELECT queued before the commands: no round trip of
 * their own), queues every node's commands, writes every node's queue,
 * then reads every node's replies in order. Redirections and TRYAGAIN
 * leave their commands for the next round; a failure is recorded and the
 * round's other replies still read, so that the sound links stay usable.
 * Formatting is client/net/resp.c's, CLUSTER SLOTS parsing and
 * redirection parsing client/net/cluster.c's, error codes client/net/conn.c's. */
#include "client/net/nodes.h"
#include "sqlite.h"

#include "client/net/conn.h"
#include "client/net/resp.h"
#include "vfs.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A command of the batch: its slot, this round's node, what it met. */
typedef struct cmd_state {
    int slot;
    int done;     /* has its reply */
    int node;     /* this round's node */
    int ask_node; /* the node an ASK named (sent with ASKING), -1: none */
    int asks;     /* ASK followed so far */
    int tries;    /* TRYAGAIN met so far */
    int replica;  /* may still go to a replica */
} cmd_state;

/* A batch under way. */
typedef struct batch {
    kvsql_net *n;
    kvsql_net_cmd *cmds;
    cmd_state *st;
    int *order;     /* this round's commands by node, in the caller's order within one */
    int *first;     /* order[first[k] .. first[k+1]) are node k's (KVSQL_NET_NODES + 1 entries) */
    int count;
    int rc;         /* the first failure, SQLITE_OK: none */
    int moved;      /* 1 + the node a MOVED named this round (ask it for the map), 0: none */
    int tryagain;   /* a TRYAGAIN this round: pause */
    int refreshed;  /* the map was asked for after a refused connection */
    char err[512];  /* the first failure's words (n->err when the batch ends) */
    char last[400]; /* the last error reply (a redirection, TRYAGAIN...), for when the rounds run out */
} batch;

/* ---- errors -------------------------------------------------------------- */

static int fail(kvsql_net *n, int rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(n->err, sizeof(n->err), fmt, ap);
    va_end(ap);
    kvsql_vfs_set_errmsg(n->err);
    return rc;
}

static const char *where(const kvsql_net *n, int k, char *buf, size_t len) {
    return kvsql_node_where(&n->node[k].addr, buf, len);
}

/* ---- nodes and links ----------------------------------------------------- */

kvsql_net *kvsql_net_new(const kvsql_redis_config *cfg, kvsql_redis_stats *stats) {
    kvsql_net *n = calloc(1, sizeof(*n));
    if (!n) return NULL;
    n->cfg = cfg;
    n->stats = stats;
    snprintf(n->seed.host, sizeof(n->seed.host), "%s", cfg->host);
    n->seed.port = cfg->port;
    for (int s = 0; s < KVSQL_CLUSTER_SLOTS; s++) n->owner[s] = -1;
    return n;
}

static void drop_link(kvsql_net *n, int k) {
    kvsql_link_free(n->node[k].link);
    n->node[k].link = NULL;
    n->node[k].handshake = 0;
    n->node[k].readonly = 0;
}

void kvsql_net_free(kvsql_net *n) {
    if (!n) return;
    for (int k = 0; k < n->nnodes; k++) drop_link(n, k);
    free(n);
}

int kvsql_net_is_replica(const kvsql_net *n, int k) {
    return k >= 0 && k < n->nnodes && n->node[k].replica;
}

void kvsql_net_clear_counters(kvsql_net *n) {
    for (int k = 0; k < n->nnodes; k++) memset(&n->node[k].count, 0, sizeof(n->node[k].count));
    n->batches = n->rounds = n->refreshes = 0;
    n->max_in_flight = 0;
}

/* The index of node a, added when new; -1 when the table is full. */
static int node_index(kvsql_net *n, const kvsql_node *a) {
    for (int k = 0; k < n->nnodes; k++)
        if (n->node[k].addr.port == a->port && strcmp(n->node[k].addr.host, a->host) == 0) return k;
    if (n->nnodes == KVSQL_NET_NODES) return -1;
    memset(&n->node[n->nnodes], 0, sizeof(n->node[0]));
    n->node[n->nnodes].addr = *a;
    return n->nnodes++;
}

/* Queues a command on node k's link, counting its bytes. 0, or -1 when
 * out of memory. */
static int queue(kvsql_net *n, int k, int argc, const char **argv, const size_t *lens) {
    size_t bytes = 0;
    if (kvsql_resp_append(n->node[k].link, argc, argv, lens, &bytes) != REDIS_OK) return -1;
    n->node[k].count.bytes_out += (long long)bytes;
    return 0;
}

/* Queues READONLY on a replica's link that has not had it (a link made
 * while the node was a master): its master's slots are read there, not
 * MOVED. Read with the handshake. 0, or -1 when out of memory. */
static int queue_readonly(kvsql_net *n, int k) {
    kvsql_net_node *d = &n->node[k];
    if (!d->replica || d->readonly) return 0;
    const char *a[] = {"READONLY"};
    if (queue(n, k, 1, a, NULL) != 0) return -1;
    d->handshake++;
    d->readonly = 1;
    return 0;
}

/* Connects node k unless connected and sound, and queues its AUTH,
 * SELECT and, on a replica, READONLY (read with its first replies).
 * SQLITE_OK, or SQLITE_CANTOPEN naming the node. */
static int connect_node(kvsql_net *n, int k) {
    kvsql_net_node *d = &n->node[k];
    if (d->link && !kvsql_link_broken(d->link))
        return queue_readonly(n, k) == 0 ? SQLITE_OK : fail(n, SQLITE_NOMEM, "out of memory");
    drop_link(n, k);
    char why[400], at[300];
    d->link = kvsql_link_open(d->addr.host, d->addr.port, n->cfg, why, sizeof(why));
    if (!d->link) return fail(n, SQLITE_CANTOPEN, "cannot connect to %s: %s", where(n, k, at, sizeof(at)), why);
    d->count.connects++;
    if (n->stats) n->stats->connects++;
    d->handshake = kvsql_append_auth(d->link, n->cfg);
    if (queue_readonly(n, k) != 0) return fail(n, SQLITE_NOMEM, "out of memory");
    if (n->cfg->db) {
        char db[16];
        snprintf(db, sizeof(db), "%d", n->cfg->db);
        const char *a[] = {"SELECT", db};
        if (queue(n, k, 2, a, NULL) != 0) return fail(n, SQLITE_NOMEM, "out of memory");
        d->handshake++;
    }
    return SQLITE_OK;
}

/* Node k's link broke during `what`: drop it, ask for the map before the
 * next batch (a failover may have moved its slots). */
static int lost(kvsql_net *n, int k, const char *what) {
    char at[300], why[200];
    snprintf(why, sizeof(why), "%s", n->node[k].link ? kvsql_link_error(n->node[k].link) : "connection closed");
    drop_link(n, k);
    n->stale = 1;
    return fail(n, SQLITE_IOERR, "redis at %s: connection lost during %s: %s", where(n, k, at, sizeof(at)), what,
                why);
}

/* Reads node k's handshake replies. SQLITE_OK, or the refusal's code
 * with its words. */
static int read_handshake(kvsql_net *n, int k) {
    int rc = SQLITE_OK;
    char at[300];
    for (; n->node[k].handshake > 0; n->node[k].handshake--) {
        redisReply *r = NULL;
        if (kvsql_link_get_reply(n->node[k].link, &r) != REDIS_OK) return lost(n, k, "connect");
        if (r->type == REDIS_REPLY_ERROR && rc == SQLITE_OK) {
            rc = kvsql_conn_error_code(r->str);
            if (rc == SQLITE_IOERR) rc = SQLITE_CANTOPEN;
            if (rc == SQLITE_AUTH)
                fail(n, rc, "redis at %s refused the credentials: %s (set user=, password= or KVSQL_PASSWORD)",
                     where(n, k, at, sizeof(at)), r->str);
            else
                fail(n, rc, "redis at %s refused AUTH/SELECT: %s", where(n, k, at, sizeof(at)), r->str);
        }
        freeReplyObject(r);
    }
    return rc;
}

/* The string bytes of a reply, for the counters. */
static long long reply_bytes(const redisReply *r) {
    long long b = r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR
                      ? (long long)r->len
                      : 0;
    if (r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < r->elements; i++) b += reply_bytes(r->element[i]);
    return b;
}

/* ---- the slot map -------------------------------------------------------- */

/* A range's master comes first, then its replicas: each replica is
 * remembered as its master's (and asked for the map when a master is gone). */
static void map_one(void *ctx, int lo, int hi, int master, const kvsql_node *a) {
    kvsql_net *n = ctx;
    int k = node_index(n, a);
    if (k < 0) return;
    if (master) {
        for (int s = lo; s <= hi; s++) n->owner[s] = (short)k;
        return;
    }
    int m = n->owner[lo];
    if (m < 0 || m == k) return;
    kvsql_net_node *d = &n->node[m];
    n->node[k].replica = 1;
    for (int i = 0; i < d->nreplicas; i++)
        if (d->replicas[i] == k) return;
    if (d->nreplicas < KVSQL_NET_REPLICAS) d->replicas[d->nreplicas++] = (short)k;
}

/* Forgets which nodes are replicas (a new map says again). */
static void forget_replicas(kvsql_net *n) {
    for (int k = 0; k < n->nnodes; k++) {
        n->node[k].replica = n->node[k].shunned = 0;
        n->node[k].nreplicas = 0;
    }
}

static void map_single(kvsql_net *n, int k) {
    forget_replicas(n);
    for (int s = 0; s < KVSQL_CLUSTER_SLOTS; s++) n->owner[s] = (short)k;
    n->mapped = 2;
}

/* Asks node k for CLUSTER SLOTS (connecting it first, the handshake in
 * the same round trip) and takes the map. 1: a map (or a server without
 * cluster mode: every slot its), 0: no map from it (unreachable, lost,
 * no map), or an SQLite code when it refused AUTH or SELECT. */
static int map_from(kvsql_net *n, int k) {
    if (connect_node(n, k) != SQLITE_OK) return 0;
    const char *a[] = {"CLUSTER", "SLOTS"};
    if (queue(n, k, 2, a, NULL) != 0) return fail(n, SQLITE_NOMEM, "out of memory");
    n->node[k].count.round_trips++;
    n->refreshes++;
    if (n->stats) n->stats->round_trips++;
    int rc = read_handshake(n, k);
    redisReply *r = NULL;
    if (n->node[k].link && kvsql_link_get_reply(n->node[k].link, &r) != REDIS_OK)
        lost(n, k,
             n->cfg->tls ? "CLUSTER SLOTS" : "CLUSTER SLOTS (if the server speaks only TLS: tls=1 or rediss://)");
    if (rc != SQLITE_OK && rc != SQLITE_IOERR) { /* refused AUTH/SELECT: the configuration's fault */
        freeReplyObject(r);
        drop_link(n, k); /* not left unauthenticated for the next batch */
        return rc;
    }
    int got = 0;
    if (r && r->type == REDIS_REPLY_ERROR && strstr(r->str, "cluster support disabled") && n->mapped != 1) {
        map_single(n, k);
        got = 1;
    } else if (r && kvsql_cluster_walk_slots(r, &n->node[k].addr, NULL, NULL) == 0) {
        for (int s = 0; s < KVSQL_CLUSTER_SLOTS; s++) n->owner[s] = -1;
        forget_replicas(n);
        kvsql_cluster_walk_slots(r, &n->node[k].addr, map_one, n);
        n->mapped = 1;
        got = 1;
    }
    if (r) n->node[k].count.bytes_in += reply_bytes(r);
    freeReplyObject(r);
    return got;
}

/* Takes a fresh slot map: from `first` (a node that just redirected,
 * -1: none), then the known nodes, then the seed; at most
 * KVSQL_CLUSTER_HOPS nodes asked. A unix socket is one server. */
static int refresh_map(kvsql_net *n, int first) {
    if (n->seed.port == 0) {
        int k = node_index(n, &n->seed);
        map_single(n, k);
        n->stale = 0;
        return SQLITE_OK;
    }
    int tried[KVSQL_CLUSTER_HOPS], ntried = 0;
    int seed = node_index(n, &n->seed);
    if (seed < 0) return fail(n, SQLITE_CANTOPEN, "redis cluster: more than %d nodes", KVSQL_NET_NODES);
    for (int i = -1; i <= n->nnodes && ntried < KVSQL_CLUSTER_HOPS; i++) {
        int k = i < 0 ? first : i == n->nnodes ? seed : i;
        int seen = k < 0;
        for (int j = 0; j < ntried && !seen; j++) seen = tried[j] == k;
        if (seen) continue;
        tried[ntried++] = k;
        int got = map_from(n, k);
        if (got == 1) {
            n->stale = 0;
            return SQLITE_OK;
        }
        if (got != 0) return got;
    }
    if (!n->err[0]) fail(n, SQLITE_CANTOPEN, "redis: no node answered CLUSTER SLOTS");
    char why[512];
    snprintf(why, sizeof(why), "%s", n->err);
    return fail(n, SQLITE_CANTOPEN, "redis: no slot map from %d node(s); last: %s", ntried, why);
}

/* ---- one round ----------------------------------------------------------- */

/* The first failure of a batch is its answer (said when the round
 * ends): later ones are not said. */
static void batch_fail(batch *b, int rc, const char *fmt, ...) {
    if (b->rc != SQLITE_OK) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->err, sizeof(b->err), fmt, ap);
    va_end(ap);
    b->rc = rc;
}

/* Master m's next replica in turn, or m when it has none reachable. */
static int replica_of(kvsql_net *n, int m) {
    kvsql_net_node *d = &n->node[m];
    for (int i = 0; i < d->nreplicas; i++) {
        int r = d->replicas[d->turn++ % (unsigned)d->nreplicas];
        if (!n->node[r].shunned) return r;
    }
    return m;
}

/* Routes every command still without its reply (the node an ASK named,
 * else its slot's owner, or one of the owner's replicas for a replica
 * command) and sorts them by node. SQLITE_OK, or SQLITE_BUSY when no node
 * serves a slot (a failover under way). */
static int route(batch *b) {
    kvsql_net *n = b->n;
    for (int i = 0; i < b->count; i++) {
        cmd_state *c = &b->st[i];
        if (c->done) continue;
        c->node = c->ask_node >= 0 ? c->ask_node : n->owner[c->slot];
        if (c->node < 0) return fail(n, SQLITE_BUSY, "redis cluster: no node serves slot %d", c->slot);
        if (c->replica && c->ask_node < 0) c->node = replica_of(n, c->node);
    }
    memset(b->first, 0, sizeof(*b->first) * (KVSQL_NET_NODES + 1));
    for (int i = 0; i < b->count; i++)
        if (!b->st[i].done) b->first[b->st[i].node + 1]++;
    for (int k = 0; k < KVSQL_NET_NODES; k++) b->first[k + 1] += b->first[k];
    int at[KVSQL_NET_NODES];
    memcpy(at, b->first, sizeof(at));
    for (int i = 0; i < b->count; i++)
        if (!b->st[i].done) b->order[at[b->st[i].node]++] = i;
    return SQLITE_OK;
}

/* Connects every node the round needs. SQLITE_OK, or the refusal naming
 * the node. A replica that cannot be reached is shunned and the round
 * routed again (its commands go to another replica or the master). */
static int connect_needed(batch *b) {
    for (int tries = 0; tries <= KVSQL_NET_REPLICAS; tries++) {
        int rc = SQLITE_OK, shunned = 0;
        for (int k = 0; k < b->n->nnodes && rc == SQLITE_OK && !shunned; k++)
            if (b->first[k + 1] > b->first[k] && (rc = connect_node(b->n, k)) != SQLITE_OK && b->n->node[k].replica) {
                b->n->node[k].shunned = shunned = 1;
                rc = SQLITE_OK;
            }
        if (rc != SQLITE_OK || !shunned) return rc;
        if ((rc = route(b)) != SQLITE_OK) return rc;
    }
    return SQLITE_OK;
}

/* Routes and connects the round. A refused connection makes the map be
 * asked for, once per batch (a failover may have moved the node's slots),
 * and the round routed again; the refusal is the answer when that fails. */
static int prepare_round(batch *b) {
    int rc = route(b);
    if (rc == SQLITE_OK) rc = connect_needed(b);
    if (rc != SQLITE_CANTOPEN || b->refreshed || b->n->mapped != 1) return rc;
    char why[512];
    snprintf(why, sizeof(why), "%s", b->n->err);
    b->refreshed = 1;
    if (refresh_map(b->n, -1) == SQLITE_OK && route(b) == SQLITE_OK && connect_needed(b) == SQLITE_OK)
        return SQLITE_OK;
    return fail(b->n, rc, "%s", why);
}

/* Queues node k's commands of the round (ASKING before an asked one) and
 * writes them. 0, or -1 when the link failed (recorded). */
static int send_node(batch *b, int k) {
    kvsql_net *n = b->n;
    static const char *asking[] = {"ASKING"};
    for (int j = b->first[k]; j < b->first[k + 1]; j++) {
        int i = b->order[j];
        kvsql_net_cmd *c = &b->cmds[i];
        if ((b->st[i].ask_node >= 0 && queue(n, k, 1, asking, NULL) != 0) ||
            queue(n, k, c->argc, c->argv, c->lens) != 0) {
            batch_fail(b, SQLITE_NOMEM, "out of memory");
            return -1;
        }
        n->node[k].count.requests++;
    }
    n->node[k].count.round_trips++;
    if (kvsql_link_flush(n->node[k].link) == REDIS_OK) return 0;
    int rc = lost(n, k, "a batch");
    batch_fail(b, rc, "%s", n->err);
    return -1;
}

/* Writes every node's commands before any reply is read: all in flight
 * together, one wait. Returns the nodes written to (sent set on each). */
static void send_round(batch *b) {
    kvsql_net *n = b->n;
    int nodes = 0;
    for (int k = 0; k < n->nnodes; k++) {
        n->node[k].sent = 0;
        if (b->first[k + 1] == b->first[k] || b->rc != SQLITE_OK) continue;
        if (send_node(b, k) == 0) {
            n->node[k].sent = 1;
            nodes++;
        }
    }
    n->rounds++;
    if (nodes > n->max_in_flight) n->max_in_flight = nodes;
    if (n->stats) n->stats->round_trips++;
}

/* Takes reply r of command i from node k: its answer, or a redirection
 * or a TRYAGAIN that leaves it for the next round, or the batch's
 * failure (CLUSTERDOWN, redirections without end). */
static void take_reply(batch *b, int k, int i, redisReply *r) {
    kvsql_net *n = b->n;
    cmd_state *c = &b->st[i];
    char at[300];
    n->node[k].count.bytes_in += reply_bytes(r);
    if (r->type == REDIS_REPLY_ERROR && c->replica && n->node[k].replica) {
        c->replica = 0; /* MOVED (no longer its master's), LOADING...: the master answers next round */
        freeReplyObject(r);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(b->last, sizeof(b->last), "redis at %s: %s (slot %d)", where(n, k, at, sizeof(at)), r->str,
                 c->slot);
        kvsql_node to;
        int kind = kvsql_cluster_redirect(r->str, &n->node[k].addr, &to), t = kind ? node_index(n, &to) : -1;
        if (kind) {
            n->node[k].count.redirects++;
            if (n->stats) n->stats->redirects++;
        }
        if (kind == 1 && t >= 0) { /* MOVED: the slot's owner now (the rounds bound it) */
            n->owner[c->slot] = (short)t;
            c->ask_node = -1;
            b->moved = t + 1;
            freeReplyObject(r);
            return;
        }
        if (kind == 2 && t >= 0 && c->ask_node < 0 && c->asks <= c->tries) { /* ASK: once per TRYAGAIN */
            c->ask_node = t;
            c->asks++;
            freeReplyObject(r);
            return;
        }
        if (kvsql_cluster_is_tryagain(r->str) && c->tries < KVSQL_CLUSTER_TRYAGAIN) {
            c->ask_node = -1; /* again by the map: the migration may have ended */
            c->tries++;
            b->tryagain = 1;
            freeReplyObject(r);
            return;
        }
        if (kind || kvsql_cluster_is_tryagain(r->str) || !strncmp(r->str, "CLUSTERDOWN", 11)) {
            batch_fail(b, kvsql_conn_error_code(r->str), "%s", b->last);
            freeReplyObject(r);
            return;
        }
    }
    if (c->replica && n->node[k].replica) n->node[k].count.replica_reads++;
    b->cmds[i].reply = r;
    b->cmds[i].node = k;
    c->done = 1;
}

/* Reads node k's replies of the round, in order. */
static void read_node(batch *b, int k) {
    kvsql_net *n = b->n;
    int rc = read_handshake(n, k);
    if (rc != SQLITE_OK) {
        batch_fail(b, rc, "%s", n->err);
        if (!n->node[k].link) return;
    }
    for (int j = b->first[k]; j < b->first[k + 1]; j++) {
        int i = b->order[j];
        redisReply *r = NULL;
        if (b->st[i].ask_node >= 0) { /* ASKING's reply: a refusal shows as the command's MOVED */
            if (kvsql_link_get_reply(n->node[k].link, &r) != REDIS_OK) break;
            freeReplyObject(r);
            r = NULL;
        }
        if (kvsql_link_get_reply(n->node[k].link, &r) != REDIS_OK) break;
        take_reply(b, k, i, r);
    }
    if (n->node[k].link && kvsql_link_broken(n->node[k].link)) {
        batch_fail(b, lost(n, k, "a batch"), "%s", n->err);
    } else if (rc != SQLITE_OK) {
        drop_link(n, k); /* refused AUTH/SELECT: not left unauthenticated for the next batch */
    }
}

static void read_round(batch *b) {
    for (int k = 0; k < b->n->nnodes; k++)
        if (b->n->node[k].sent) read_node(b, k);
}

/* ---- batches ------------------------------------------------------------- */

static void free_replies(kvsql_net_cmd *cmds, int count) {
    for (int i = 0; i < count; i++) {
        freeReplyObject(cmds[i].reply);
        cmds[i].reply = NULL;
    }
}

/* Rounds until every command has its reply, the batch failed or the
 * rounds ran out. */
static int run_rounds(batch *b) {
    kvsql_net *n = b->n;
    int pauses = 0;
    for (int round = 0; round < KVSQL_NET_ROUNDS; round++) {
        int left = 0;
        for (int i = 0; i < b->count; i++) left += !b->st[i].done;
        if (!left) return SQLITE_OK;
        int rc = prepare_round(b);
        if (rc != SQLITE_OK) return rc;
        b->moved = b->tryagain = 0;
        send_round(b);
        read_round(b);
        if (b->rc != SQLITE_OK) return fail(n, b->rc, "%s", b->err);
        if (b->moved && refresh_map(n, b->moved - 1) != SQLITE_OK) n->stale = 1; /* MOVED alone still routes */
        if (b->tryagain) { /* the slot's keys are being migrated: 5 ms, doubling to 100 ms */
            int ms = pauses < 5 ? 5 << pauses : 100;
            pauses++;
            usleep((useconds_t)ms * 1000);
        }
    }
    return fail(n, SQLITE_BUSY, "redis cluster: a batch still redirected after %d rounds; last: %s", KVSQL_NET_ROUNDS,
                b->last);
}

int kvsql_net_run(kvsql_net *n, kvsql_net_cmd *cmds, int count) {
    for (int i = 0; i < count; i++) {
        cmds[i].reply = NULL;
        cmds[i].node = -1;
    }
    n->err[0] = 0;
    n->batches++;
    if (count <= 0) return SQLITE_OK;
    if (!n->mapped || n->stale) {
        int rc = refresh_map(n, -1);
        if (rc != SQLITE_OK) return rc;
    }
    batch b = {.n = n, .cmds = cmds, .count = count, .rc = SQLITE_OK};
    b.st = malloc(sizeof(*b.st) * (size_t)count);
    b.order = malloc(sizeof(*b.order) * (size_t)count);
    b.first = malloc(sizeof(*b.first) * (KVSQL_NET_NODES + 1));
    int rc = SQLITE_NOMEM;
    if (b.st && b.order && b.first) {
        for (int i = 0; i < count; i++) {
            b.st[i] = (cmd_state){.slot = kvsql_key_slot(cmds[i].key, cmds[i].keylen), .ask_node = -1,
                                  .replica = cmds[i].replica};
        }
        rc = run_rounds(&b);
    } else {
        fail(n, rc, "out of memory");
    }
    if (rc != SQLITE_OK) free_replies(cmds, count);
    free(b.st);
    free(b.order);
    free(b.first);
    return rc;
}
