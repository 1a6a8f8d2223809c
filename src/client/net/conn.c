/* conn.c - the connection of a `redis` VFS store to its Redis node
 * (conn.h), over a plain or TLS link (client/net/transport.c).
 *
 * Called by client/hash/store_redis.c only. Connects (to the slot's owner in a
 * Redis Cluster, with client/net/cluster.c), does the handshake (AUTH, SELECT,
 * SCRIPT LOAD, CLUSTER SLOTS in one round trip), sends script calls
 * (formatted here, not by hiredis: append_command) and
 * reads their replies, following MOVED, ASK and TRYAGAIN, and reads the
 * replies of end scripts sent without waiting before the next command's.
 * Every wait for a reply counts in stats->round_trips. */
#include "client/net/conn.h"
#include "sqlite.h"

#include "client/hash/scripts.h"
#include "vfs.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

void kvsql_conn_init(kvsql_conn *cn, const char *key, const kvsql_redis_config *cfg, kvsql_redis_stats *stats,
                     void (*on_drop)(void *), void *owner) {
    cn->cfg = cfg;
    cn->key = key;
    cn->stats = stats;
    cn->on_drop = on_drop;
    cn->owner = owner;
    kvsql_cluster_init(&cn->cl, key, cfg);
    cn->node = cn->cl.seed;
    kvsql_node_where(&cn->node, cn->where, sizeof(cn->where));
}

/* ---- errors -------------------------------------------------------------- */

int kvsql_conn_vfail(kvsql_conn *cn, int rc, const char *fmt, va_list ap) {
    vsnprintf(cn->err, sizeof(cn->err), fmt, ap);
    kvsql_vfs_set_errmsg(cn->err);
    return rc;
}

int kvsql_conn_fail(kvsql_conn *cn, int rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    rc = kvsql_conn_vfail(cn, rc, fmt, ap);
    va_end(ap);
    return rc;
}

void kvsql_conn_drop(kvsql_conn *cn) {
    kvsql_link_free(cn->c);
    cn->c = NULL;
    cn->pending = 0;
    cn->on_drop(cn->owner);
}

int kvsql_conn_lost(kvsql_conn *cn, int rc, const char *what) {
    const char *why = cn->c ? kvsql_link_error(cn->c) : "connection closed";
    char buf[160];
    snprintf(buf, sizeof(buf), "%s", why);
    kvsql_conn_drop(cn);
    return kvsql_conn_fail(cn, rc, "redis at %s: connection lost during %s: %s", cn->where, what, buf);
}

/* The result code for an error reply from Redis. */
static int error_code(const char *msg) {
    if (!strncmp(msg, "NOPERM", 6) || strstr(msg, "can't run this command")) return SQLITE_PERM; /* ACL */
    if (!strncmp(msg, "WRONGPASS", 9) || !strncmp(msg, "NOAUTH", 6) || strstr(msg, "invalid password") ||
        strstr(msg, "invalid username-password"))
        return SQLITE_AUTH;
    if (!strncmp(msg, "WRONGTYPE", 9)) return SQLITE_NOTADB;
    if (!strncmp(msg, "READONLY", 8)) return SQLITE_READONLY;
    if (!strncmp(msg, "OOM", 3)) return SQLITE_FULL;
    if (!strncmp(msg, "LOADING", 7) || !strncmp(msg, "BUSY", 4) || !strncmp(msg, "MASTERDOWN", 10))
        return SQLITE_BUSY;
    /* Redis Cluster: nothing ran; another node, or later (client/net/cluster.c) */
    if (!strncmp(msg, "MOVED ", 6) || !strncmp(msg, "ASK ", 4) || !strncmp(msg, "TRYAGAIN", 8) ||
        !strncmp(msg, "CLUSTERDOWN", 11))
        return SQLITE_BUSY;
    if (strstr(msg, "NOPERM")) return SQLITE_PERM; /* raised inside a script */
    return SQLITE_IOERR;
}

int kvsql_conn_reply_error(kvsql_conn *cn, const redisReply *r, const char *what) {
    int rc = error_code(r->str);
    if (rc == SQLITE_BUSY && strcmp(what, "begin") != 0) rc = SQLITE_IOERR;
    if (rc == SQLITE_AUTH)
        return kvsql_conn_fail(cn, rc,
                               "redis at %s refused the credentials: %s (set user=, password= or KVSQL_PASSWORD)",
                               cn->where, r->str);
    if (rc == SQLITE_PERM)
        return kvsql_conn_fail(cn, rc, "redis at %s: this user may not %s key %s (ACL): %s", cn->where,
                               strcmp(what, "begin") == 0 || strcmp(what, "read") == 0 ? "read" : "write", cn->key,
                               r->str);
    return kvsql_conn_fail(cn, rc, "redis at %s: %s of key %s: %s", cn->where, what, cn->key, r->str);
}

/* ---- sending ------------------------------------------------------------- */

/* Writes the output buffer now, without waiting for replies. */
static int flush_output(kvsql_conn *cn) {
    return kvsql_link_flush(cn->c) == REDIS_OK ? 0 : -1;
}

/* Reads the replies of end scripts sent earlier. An error there is
 * harmless (a lease left behind lapses) and only counted. */
static int drain_pending(kvsql_conn *cn) {
    while (cn->pending > 0) {
        redisReply *r = NULL;
        if (kvsql_link_get_reply(cn->c, &r) != REDIS_OK) return -1;
        if (r && r->type == REDIS_REPLY_ERROR) cn->stats->end_errors++;
        freeReplyObject(r);
        cn->pending--;
    }
    return 0;
}

/* Queues a command (lengths from lens, or strlen when lens is NULL) in
 * RESP (client/net/resp.c). REDIS_OK, or REDIS_ERR when out of memory. */
static int append_command(kvsql_link *c, int argc, const char **argv, const size_t *lens) {
    return kvsql_resp_append(c, argc, argv, lens, NULL);
}

/* Sends one command and reads its reply, after the pending ones: one
 * round trip, no redirection followed. NULL when the connection broke. */
static redisReply *exchange(kvsql_conn *cn, int argc, const char **argv, const size_t *lens) {
    redisReply *r = NULL;
    if (append_command(cn->c, argc, argv, lens) != REDIS_OK) return NULL;
    cn->stats->round_trips++;
    if (drain_pending(cn) != 0 || kvsql_link_get_reply(cn->c, &r) != REDIS_OK) return NULL;
    return r;
}

static redisReply *routed_reply(kvsql_conn *cn, redisReply *r, int argc, const char **argv, const size_t *lens);

int kvsql_conn_pipeline(kvsql_conn *cn, int n, const int *argcs, const char **const *argvs, redisReply **out) {
    for (int i = 0; i < n; i++) out[i] = NULL;
    for (int i = 0; i < n; i++)
        if (append_command(cn->c, argcs[i], argvs[i], NULL) != REDIS_OK) return -1;
    cn->stats->round_trips++;
    if (drain_pending(cn) != 0) return -1;
    for (int i = 0; i < n; i++)
        if (kvsql_link_get_reply(cn->c, &out[i]) != REDIS_OK) {
            for (int j = 0; j < i; j++) freeReplyObject(out[j]);
            return -1;
        }
    return 0;
}

int kvsql_conn_drain(kvsql_conn *cn) {
    return drain_pending(cn);
}

int kvsql_conn_error_code(const char *msg) {
    return error_code(msg);
}

redisReply *kvsql_conn_round_trip(kvsql_conn *cn, int argc, const char **argv, const size_t *lens) {
    redisReply *r = exchange(cn, argc, argv, lens);
    return r && r->type == REDIS_REPLY_ERROR ? routed_reply(cn, r, argc, argv, lens) : r;
}

/* ---- Redis Cluster: redirections (client/net/cluster.c) ----------------------- */

/* TRYAGAIN: the slot's keys are being migrated. Sends the command again
 * after a pause (5 ms, doubling to 100 ms). */
static redisReply *send_again(kvsql_conn *cn, int tries, int argc, const char **argv, const size_t *lens) {
    int ms = tries < 5 ? 5 << tries : 100;
    usleep((useconds_t)ms * 1000);
    return exchange(cn, argc, argv, lens);
}

/* ASK: this command alone goes to `to`, after ASKING, on a connection of
 * its own. When that fails the command's fate is unknown: the store's
 * connection is marked broken too, so the next begin reconnects. */
static redisReply *send_asking(kvsql_conn *cn, const kvsql_node *to, int argc, const char **argv,
                               const size_t *lens) {
    char err[400];
    cn->stats->redirects++;
    cn->stats->round_trips++;
    redisReply *r = kvsql_cluster_ask(to, cn->cfg, argc, argv, lens, err, sizeof(err));
    if (!r) kvsql_link_break(cn->c, err);
    return r;
}

/* An error reply r to a command: a MOVED, ASK or TRYAGAIN means nothing
 * ran. TRYAGAIN is sent again after a pause, ASK followed (bounded: about
 * 3 s of pauses in all); MOVED makes the slot's owner the named node,
 * drops the connection and returns the reply: the call fails (a begin is
 * retried at once, on the owner; within a transaction the snapshot stayed
 * behind). Other replies pass. */
static redisReply *routed_reply(kvsql_conn *cn, redisReply *r, int argc, const char **argv, const size_t *lens) {
    int tries = 0, asks = 0;
    while (r && r->type == REDIS_REPLY_ERROR) {
        kvsql_node to;
        int kind = kvsql_cluster_redirect(r->str, &cn->node, &to);
        if (kind == 1) {
            kvsql_cluster_moved(&cn->cl, &to);
            cn->stats->redirects++;
            cn->rerouted = 1;
            kvsql_conn_drop(cn);
            return r;
        }
        if (kind == 2 && asks <= tries && asks < KVSQL_CLUSTER_TRYAGAIN) { /* an ASK per TRYAGAIN at most */
            asks++;
            freeReplyObject(r);
            r = send_asking(cn, &to, argc, argv, lens);
        } else if (kvsql_cluster_is_tryagain(r->str) && tries < KVSQL_CLUSTER_TRYAGAIN) {
            freeReplyObject(r);
            r = send_again(cn, tries++, argc, argv, lens);
        } else {
            break;
        }
    }
    return r;
}

/* ---- script calls -------------------------------------------------------- */

int kvsql_call_init(kvsql_call *k, int cap) {
    k->argc = 0;
    k->argv = malloc(sizeof(*k->argv) * cap);
    k->lens = malloc(sizeof(*k->lens) * cap);
    return k->argv && k->lens ? 0 : -1;
}

void kvsql_call_free(kvsql_call *k) {
    free(k->argv);
    free(k->lens);
}

void kvsql_call_add(kvsql_call *k, const char *p, size_t n) {
    k->argv[k->argc] = p;
    k->lens[k->argc++] = n;
}

void kvsql_call_str(kvsql_call *k, const char *p) {
    kvsql_call_add(k, p, strlen(p));
}

void kvsql_call_script(kvsql_call *k, int nkeys, char *nbuf) {
    kvsql_call_add(k, "", 0);
    kvsql_call_add(k, "", 0);
    char *end = kvsql_put_decimal(nbuf, (unsigned long long)nkeys); /* nkeys < 10^7 */
    *end = 0;
    kvsql_call_add(k, nbuf, (size_t)(end - nbuf));
}

redisReply *kvsql_conn_run_script(kvsql_conn *cn, int id, kvsql_call *k) {
    redisReply *r = NULL;
    if (cn->sha[id][0]) {
        k->argv[0] = "EVALSHA";
        k->lens[0] = 7;
        k->argv[1] = cn->sha[id];
        k->lens[1] = 40;
        r = kvsql_conn_round_trip(cn, k->argc, k->argv, k->lens);
        if (!r || r->type != REDIS_REPLY_ERROR || strncmp(r->str, "NOSCRIPT", 8) != 0) return r;
        freeReplyObject(r);
        cn->stats->script_loads++;
    }
    k->argv[0] = "EVAL";
    k->lens[0] = 4;
    k->argv[1] = kvsql_scripts[id];
    k->lens[1] = strlen(kvsql_scripts[id]);
    return kvsql_conn_round_trip(cn, k->argc, k->argv, k->lens);
}

void kvsql_conn_send(kvsql_conn *cn, int argc, const char **argv) {
    if (!cn->c) return;
    if (append_command(cn->c, argc, argv, NULL) != REDIS_OK || flush_output(cn) != 0) {
        kvsql_conn_drop(cn);
        return;
    }
    cn->pending++;
}

/* ---- connecting ---------------------------------------------------------- */

void kvsql_random_hex(char *out, size_t nbytes) {
    unsigned char b[32];
    if (nbytes > sizeof(b)) nbytes = sizeof(b);
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? read(fd, b, nbytes) : -1;
    if (fd >= 0) close(fd);
    if (got != (ssize_t)nbytes) sqlite3_randomness((int)nbytes, b);
    for (size_t i = 0; i < nbytes; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static void new_token(kvsql_conn *cn) {
    kvsql_random_hex(cn->token, 16);
}

/* Connects to cn->node (the seed of redis=, or a node of the cluster),
 * over TLS when the configuration asks for it. */
static int open_socket(kvsql_conn *cn) {
    char why[400];
    cn->c = kvsql_link_open(cn->node.host, cn->node.port, cn->cfg, why, sizeof(why));
    if (!cn->c) {
        kvsql_conn_drop(cn);
        return kvsql_conn_fail(cn, SQLITE_CANTOPEN, "cannot connect to %s: %s", cn->where, why);
    }
    cn->stats->connects++;
    return SQLITE_OK;
}

/* Redis Cluster: asks for the slot map with the handshake (no round trip
 * of its own). A server without cluster mode answers an error, ignored. */
static int ask_slot_map(kvsql_conn *cn) {
    if (!kvsql_cluster_applies(&cn->cl)) return 0;
    const char *a[] = {"CLUSTER", "SLOTS"};
    kvsql_link_append_argv(cn->c, 2, a, NULL);
    return 1;
}

static int take_slot_map(kvsql_conn *cn) {
    redisReply *r = NULL;
    if (kvsql_link_get_reply(cn->c, &r) != REDIS_OK) return -1;
    kvsql_cluster_take_slots(&cn->cl, r, &cn->node);
    freeReplyObject(r);
    return 0;
}

/* The handshake's first replies never came: a server that speaks only
 * TLS drops a plain client there. */
static int lost_at_connect(kvsql_conn *cn) {
    if (cn->cfg->tls) return kvsql_conn_lost(cn, SQLITE_CANTOPEN, "connect");
    return kvsql_conn_lost(cn, SQLITE_CANTOPEN, "connect (if the server speaks only TLS: tls=1 or rediss://)");
}

/* The token names the connection's CLIENT ID after its 32 hex digits
 * ("<hex>-<id>"), so that a writer that finds the lease taken can ask
 * whether its owner's connection still exists (store_redis.c, "dead
 * owners"). A server that refuses CLIENT ID (ACL) leaves the hex alone.
 * When a script call went with the handshake, it named the hex alone: the
 * ID waits in later_id for the next transaction (kvsql_conn_adopt_id). */
static int take_client_id(kvsql_conn *cn) {
    redisReply *r = NULL;
    if (kvsql_link_get_reply(cn->c, &r) != REDIS_OK) return -1;
    cn->token[32] = 0;
    cn->later_id[0] = 0;
    char *to = cn->first ? cn->later_id : cn->token + 32;
    size_t room = cn->first ? sizeof(cn->later_id) : sizeof(cn->token) - 32;
    if (r->type == REDIS_REPLY_INTEGER) snprintf(to, room, "-%lld", r->integer);
    freeReplyObject(r);
    return 0;
}

void kvsql_conn_adopt_id(kvsql_conn *cn) {
    if (!cn->later_id[0]) return;
    memcpy(cn->token + 32, cn->later_id, strlen(cn->later_id) + 1);
    cn->later_id[0] = 0;
}

/* The first script call, by EVAL, last in the handshake. */
static void append_first(kvsql_conn *cn) {
    if (!cn->first) return;
    cn->first->argv[0] = "EVAL";
    cn->first->lens[0] = 4;
    cn->first->argv[1] = kvsql_scripts[cn->first_id];
    cn->first->lens[1] = strlen(kvsql_scripts[cn->first_id]);
    append_command(cn->c, cn->first->argc, cn->first->argv, cn->first->lens);
}

/* Its reply, replacing one from a node visited before (connect_routed). */
static int take_first(kvsql_conn *cn) {
    redisReply *r = NULL;
    if (!cn->first) return 0;
    if (kvsql_link_get_reply(cn->c, &r) != REDIS_OK) return -1;
    freeReplyObject(cn->first_reply);
    cn->first_reply = r;
    return 0;
}

/* AUTH, SELECT, SCRIPT LOAD of every script, CLIENT ID and CLUSTER
 * SLOTS, in one round trip. */
static int handshake(kvsql_conn *cn) {
    char db[16];
    int n = kvsql_append_auth(cn->c, cn->cfg);
    if (cn->cfg->db) {
        snprintf(db, sizeof(db), "%d", cn->cfg->db);
        const char *a[] = {"SELECT", db};
        kvsql_link_append_argv(cn->c, 2, a, NULL);
        n++;
    }
    for (int i = 0; i < SCRIPT_COUNT; i++) {
        const char *a[] = {"SCRIPT", "LOAD", kvsql_scripts[i]};
        kvsql_link_append_argv(cn->c, 3, a, NULL);
    }
    const char *client_id[] = {"CLIENT", "ID"};
    kvsql_link_append_argv(cn->c, 2, client_id, NULL);
    int slot_map = ask_slot_map(cn);
    append_first(cn);
    cn->stats->round_trips++;
    int rc = SQLITE_OK;
    for (int i = 0; i < n + SCRIPT_COUNT; i++) {
        redisReply *r = NULL;
        if (kvsql_link_get_reply(cn->c, &r) != REDIS_OK) return lost_at_connect(cn);
        int is_script = i >= n;
        if (r->type == REDIS_REPLY_ERROR && rc == SQLITE_OK) {
            rc = error_code(r->str);
            if (is_script && rc == SQLITE_PERM) rc = SQLITE_OK; /* no SCRIPT LOAD right: EVAL it is */
            else if (rc == SQLITE_AUTH) kvsql_conn_reply_error(cn, r, "connect");
            else if (rc != SQLITE_OK) {
                if (rc == SQLITE_IOERR) rc = SQLITE_CANTOPEN;
                kvsql_conn_fail(cn, rc, "redis at %s refused %s: %s", cn->where,
                                is_script ? "SCRIPT LOAD" : "AUTH/SELECT", r->str);
            }
        }
        if (is_script && r->type == REDIS_REPLY_STRING && r->len == 40)
            memcpy(cn->sha[i - n], r->str, 41);
        else if (is_script)
            cn->sha[i - n][0] = 0;
        freeReplyObject(r);
    }
    if (take_client_id(cn) != 0 || (slot_map && take_slot_map(cn) != 0))
        return kvsql_conn_lost(cn, SQLITE_CANTOPEN, "connect");
    if (take_first(cn) != 0) return kvsql_conn_lost(cn, SQLITE_IOERR, cn->first_what); /* as if sent alone */
    if (rc != SQLITE_OK) kvsql_conn_drop(cn);
    return rc;
}

/* Connects to the node that serves the key: the owner of its slot when
 * known (Redis Cluster), else the seed of redis=. A node whose slot map
 * names another owner is left for that one; a node that cannot be
 * reached makes the other nodes of the last slot map be tried (a
 * failover). At most KVSQL_CLUSTER_HOPS connections. */
static int connect_routed(kvsql_conn *cn) {
    int rc = SQLITE_CANTOPEN, attempt = 0;
    const kvsql_node *n = kvsql_cluster_candidate(&cn->cl, 0);
    for (int hop = 0; hop < KVSQL_CLUSTER_HOPS && n; hop++) {
        cn->node = *n;
        kvsql_node_where(&cn->node, cn->where, sizeof(cn->where));
        rc = open_socket(cn);
        if (rc == SQLITE_OK) rc = handshake(cn);
        if (rc == SQLITE_OK && kvsql_cluster_serves(&cn->cl, &cn->node)) return SQLITE_OK;
        if (rc == SQLITE_OK) { /* not the owner: go there */
            kvsql_conn_drop(cn);
            attempt = 0;
        } else if (rc != SQLITE_CANTOPEN || !cn->cl.enabled) {
            return rc;
        } else {
            attempt++;
        }
        n = kvsql_cluster_candidate(&cn->cl, attempt);
    }
    if (rc == SQLITE_OK)
        rc = kvsql_conn_fail(cn, SQLITE_CANTOPEN,
                             "redis cluster: key %s (slot %d): the slot map kept changing; try again", cn->key,
                             cn->cl.slot);
    return rc;
}

int kvsql_conn_down(const kvsql_conn *cn) {
    return !cn->c || kvsql_link_broken(cn->c);
}

void kvsql_conn_renew(kvsql_conn *cn) {
    kvsql_conn_drop(cn);
    new_token(cn);
    cn->later_id[0] = 0;
    cn->no_client_list = 0;
    cn->connections++;
}

int kvsql_conn_connect(kvsql_conn *cn) {
    if (!kvsql_conn_down(cn)) return SQLITE_OK;
    kvsql_conn_renew(cn);
    return connect_routed(cn);
}

/* A reply that means nothing ran: the call goes again, the usual way. */
static int is_redirection(const kvsql_conn *cn, const redisReply *r) {
    kvsql_node to;
    return r->type == REDIS_REPLY_ERROR &&
           (kvsql_cluster_redirect(r->str, &cn->node, &to) != 0 || kvsql_cluster_is_tryagain(r->str));
}

int kvsql_conn_connect_with(kvsql_conn *cn, int id, const char *what, kvsql_call *k, redisReply **first) {
    cn->first_id = id;
    cn->first_what = what;
    cn->first = k;
    cn->first_reply = NULL;
    int rc = connect_routed(cn);
    redisReply *r = cn->first_reply;
    cn->first = NULL;
    cn->first_reply = NULL;
    if (r && (rc != SQLITE_OK || is_redirection(cn, r))) {
        freeReplyObject(r);
        r = NULL;
    }
    *first = r;
    return rc;
}

void kvsql_conn_close(kvsql_conn *cn) {
    if (cn->c && !kvsql_link_broken(cn->c)) drain_pending(cn); /* so the end scripts surely ran */
    kvsql_conn_drop(cn);
}
