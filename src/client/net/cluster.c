/* cluster.c - Redis Cluster routing for the `redis` VFS (cluster.h).
 *
 * Called by client/net/conn.c: kvsql_cluster_candidate() when it
 * connects, kvsql_cluster_take_slots() with the CLUSTER SLOTS reply of its
 * handshake, kvsql_cluster_redirect()/_moved()/_ask() when a node answers
 * MOVED or ASK, kvsql_cluster_is_tryagain() for TRYAGAIN; client/net/nodes.c
 * walks whole slot maps (kvsql_cluster_walk_slots). Every reply from
 * the network is checked before use: a malformed one is ignored, never
 * trusted. */
#include "client/net/cluster.h"
#include "sqlite.h"

#include "format.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

unsigned kvsql_crc16(const void *data, size_t len) {
    const unsigned char *p = data;
    unsigned crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (unsigned)p[i] << 8;
        for (int bit = 0; bit < 8; bit++) crc = (crc & 0x8000) ? ((crc << 1) ^ 0x1021) : (crc << 1);
        crc &= 0xffff;
    }
    return crc;
}

int kvsql_key_slot(const char *key, size_t len) {
    size_t n;
    const char *part = kvsql_hashed_part(key, len, &n); /* format.c owns the hash-tag rule */
    return (int)(kvsql_crc16(part, n) & 16383);
}

const char *kvsql_node_where(const kvsql_node *n, char *buf, size_t len) {
    if (n->port == 0) snprintf(buf, len, "%s", n->host);
    else if (strchr(n->host, ':')) snprintf(buf, len, "[%s]:%d", n->host, n->port);
    else snprintf(buf, len, "%s:%d", n->host, n->port);
    return buf;
}

static int same_node(const kvsql_node *a, const kvsql_node *b) {
    return a->port == b->port && strcmp(a->host, b->host) == 0;
}

static int set_node(kvsql_node *n, const char *host, size_t hostlen, long port) {
    if (hostlen == 0 || hostlen >= sizeof(n->host) || port < 1 || port > 65535) return -1;
    memcpy(n->host, host, hostlen);
    n->host[hostlen] = 0;
    n->port = (int)port;
    return 0;
}

void kvsql_cluster_init(kvsql_cluster *c, const char *key, const kvsql_redis_config *cfg) {
    memset(c, 0, sizeof(*c));
    c->slot = kvsql_key_slot(key, strlen(key));
    snprintf(c->seed.host, sizeof(c->seed.host), "%s", cfg->host);
    c->seed.port = cfg->port;
}

int kvsql_cluster_applies(const kvsql_cluster *c) {
    return c->seed.port != 0;
}

const kvsql_node *kvsql_cluster_candidate(const kvsql_cluster *c, int attempt) {
    const kvsql_node *first = c->owner.port ? &c->owner : &c->seed;
    if (attempt == 0) return first;
    int k = 0; /* the known nodes other than the first, in order */
    for (int i = 0; i < c->nknown; i++) {
        if (same_node(&c->known[i], first)) continue;
        if (++k == attempt) return &c->known[i];
    }
    if (k + 1 == attempt && c->owner.port && !same_node(&c->seed, first)) return &c->seed;
    return NULL;
}

static void remember(kvsql_cluster *c, const kvsql_node *n) {
    for (int i = 0; i < c->nknown; i++)
        if (same_node(&c->known[i], n)) return;
    if (c->nknown < KVSQL_CLUSTER_KNOWN) c->known[c->nknown++] = *n;
}

/* One node of a CLUSTER SLOTS entry: [host, port, id, ...]. A missing,
 * empty or "?" host is the host of the node that answered. */
static int take_node(const redisReply *r, const kvsql_node *from, kvsql_node *out) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 || r->element[1]->type != REDIS_REPLY_INTEGER) return -1;
    const redisReply *h = r->element[0];
    const char *host = from->host;
    size_t hostlen = strlen(from->host);
    if (h->type == REDIS_REPLY_STRING && h->len > 0 && strcmp(h->str, "?") != 0) {
        host = h->str;
        hostlen = h->len;
    } else if (h->type != REDIS_REPLY_STRING && h->type != REDIS_REPLY_NIL) return -1;
    if (memchr(host, 0, hostlen)) return -1;
    return set_node(out, host, hostlen, (long)r->element[1]->integer);
}

/* Every node of every entry of a CLUSTER SLOTS reply, in order, to fn
 * (when fn is not NULL). 0, or -1 at the first malformed part. */
static int walk_slots(const redisReply *r, const kvsql_node *from, kvsql_slots_fn fn, void *ctx) {
    if (!r || r->type != REDIS_REPLY_ARRAY) return -1;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER)
            return -1;
        long long lo = e->element[0]->integer, hi = e->element[1]->integer;
        if (lo < 0 || hi >= KVSQL_CLUSTER_SLOTS || lo > hi) return -1;
        for (size_t j = 2; j < e->elements; j++) {
            kvsql_node n;
            if (take_node(e->element[j], from, &n) != 0) return -1;
            if (fn) fn(ctx, (int)lo, (int)hi, j == 2, &n);
        }
    }
    return 0;
}

int kvsql_cluster_walk_slots(const redisReply *r, const kvsql_node *from, kvsql_slots_fn fn, void *ctx) {
    if (walk_slots(r, from, NULL, NULL) != 0) return -1; /* all checked before the first call */
    return walk_slots(r, from, fn, ctx);
}

/* kvsql_cluster_take_slots's walk: the nodes, and the master of the slot. */
typedef struct slots_taken {
    kvsql_cluster next;
    kvsql_node owner;
} slots_taken;

static void take_one(void *ctx, int lo, int hi, int master, const kvsql_node *n) {
    slots_taken *t = ctx;
    remember(&t->next, n);
    if (master && lo <= t->next.slot && t->next.slot <= hi) t->owner = *n;
}

int kvsql_cluster_take_slots(kvsql_cluster *c, const redisReply *r, const kvsql_node *from) {
    slots_taken t = {.next = *c, .owner = {"", 0}};
    t.next.nknown = 0;
    if (kvsql_cluster_walk_slots(r, from, take_one, &t) != 0) return 0;
    t.next.owner = t.owner; /* unknown when no node serves the slot (a failover under way) */
    t.next.enabled = 1;
    *c = t.next;
    return 1;
}

int kvsql_cluster_serves(const kvsql_cluster *c, const kvsql_node *n) {
    return c->owner.port == 0 || same_node(&c->owner, n);
}

int kvsql_cluster_redirect(const char *msg, const kvsql_node *from, kvsql_node *to) {
    int kind = !strncmp(msg, "MOVED ", 6) ? 1 : !strncmp(msg, "ASK ", 4) ? 2 : 0;
    if (!kind) return 0;
    const char *p = msg + (kind == 1 ? 6 : 4);
    char *end;
    long slot = strtol(p, &end, 10);
    if (end == p || *end != ' ' || slot < 0 || slot >= KVSQL_CLUSTER_SLOTS) return 0;
    const char *addr = end + 1, *colon = strrchr(addr, ':');
    if (!colon || !colon[1]) return 0;
    long port = strtol(colon + 1, &end, 10);
    if (*end) return 0;
    const char *host = addr;
    size_t hostlen = (size_t)(colon - addr);
    if (hostlen >= 2 && host[0] == '[' && host[hostlen - 1] == ']') { /* [v6]:port */
        host++;
        hostlen -= 2;
    }
    if (hostlen == 0) { /* the node does not know its own address */
        host = from->host;
        hostlen = strlen(from->host);
    }
    return set_node(to, host, hostlen, port) == 0 ? kind : 0;
}

void kvsql_cluster_moved(kvsql_cluster *c, const kvsql_node *to) {
    c->owner = *to;
    c->enabled = 1;
    remember(c, to);
}

int kvsql_cluster_is_tryagain(const char *msg) {
    return strncmp(msg, "TRYAGAIN", 8) == 0;
}

/* ---- ASK: one command on a connection of its own -------------------------- */

int kvsql_append_auth(kvsql_link *l, const kvsql_redis_config *cfg) {
    if (!cfg->password[0]) return 0;
    const char *with_user[] = {"AUTH", cfg->user, cfg->password}, *plain[] = {"AUTH", cfg->password};
    if (cfg->user[0]) kvsql_link_append_argv(l, 3, with_user, NULL);
    else kvsql_link_append_argv(l, 2, plain, NULL);
    return 1;
}

static kvsql_link *ask_connect(const kvsql_node *to, const kvsql_redis_config *cfg, char *err, size_t errlen) {
    char where[300], why[400];
    kvsql_link *l = kvsql_link_open(to->host, to->port, cfg, why, sizeof(why));
    if (!l) snprintf(err, errlen, "cannot connect to %s (ASK): %s", kvsql_node_where(to, where, sizeof(where)), why);
    return l;
}

redisReply *kvsql_cluster_ask(const kvsql_node *to, const kvsql_redis_config *cfg, int argc, const char **argv,
                              const size_t *lens, char *err, size_t errlen) {
    kvsql_link *l = ask_connect(to, cfg, err, errlen);
    if (!l) return NULL;
    int before = 1 + kvsql_append_auth(l, cfg); /* replies to skip: ASKING, and AUTH when there is a password */
    const char *asking[] = {"ASKING"};
    kvsql_link_append_argv(l, 1, asking, NULL);
    kvsql_link_append_argv(l, argc, argv, lens);
    /* The command's reply is the answer, whatever came before it: a refused
     * AUTH shows as the command's NOAUTH, a refused ASKING as its MOVED. */
    redisReply *r = NULL;
    for (int i = 0; i <= before; i++) {
        freeReplyObject(r);
        r = NULL;
        if (kvsql_link_get_reply(l, &r) != REDIS_OK || !r) {
            char where[300];
            snprintf(err, errlen, "connection to %s lost after ASK: %s", kvsql_node_where(to, where, sizeof(where)),
                     kvsql_link_error(l));
            kvsql_link_free(l);
            return NULL;
        }
    }
    kvsql_link_free(l);
    return r;
}
