/* store_redis.c - the page store of the `redis` VFS (store_redis.h).
 *
 * Called by SQLite through the VFS (client/extension.c) and by
 * tests/contract.c. Implements store.h's transactions over one connection
 * (client/net/conn.c) with the Lua scripts of client/hash/scripts.c (docs/FORMAT.md,
 * "The protocol of the redis VFS"), and keeps the page cache:
 *   begin  one round trip: snapshot version, length, page 0; registers
 *          the reader (a warm begin, when nothing changed and the
 *          registration is fresh, writes nothing: "warm begins"); also
 *          takes the writer's lease when it is free and client/hooks.c
 *          hinted that the transaction will write; says whether change
 *          capture is on (T:changes:cfg);
 *   read   one round trip per miss, whatever its count; page 0 comes
 *          with begin, and a miss reads ahead while SQLite scans
 *          (client/hash/store_read.c). Pages read stay cached while the
 *          version does not change, up to cache_kb= (client/cache/pagecache.c);
 *   lock   one round trip: the writer's lease (none when begin took it);
 *   commit one round trip: the whole batch, and the row changes
 *          client/hooks.c captured while capture is on; a batch above
 *          stage_kb= is staged instead, in short steps
 *          (client/hash/store_stage.c);
 *   unlock no round trip: the end script is sent at once and its reply is
 *          read with the next command's.
 * Every wait for a reply counts in stats.round_trips.
 *
 * A connection error makes the call fail with SQLITE_IOERR and drops the
 * connection; the next begin connects again with a new token, so a late
 * reply or lease of the old connection can never be taken for the new. */
#include "client/hash/redis_store.h"
#include "sqlite.h"

#include "format.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long T:log lives after the last begin: a library client keeps it
 * alive; with none around, it lapses and commits stop writing it. */
#define LOG_TTL_MS 600000
/* A begin renews it when the last renewal on this connection is older. */
#define LOG_RENEW_MS 60000

/* The format.h suffix of each key of s->keys (NULL: K itself). */
#define KEY_SUFFIX_(name, suffix) suffix,
static const char *const key_suffix[SKEY_COUNT] = {SCRIPT_KEYS_ALL(KEY_SUFFIX_)};


static const kvsql_store_methods redis_methods;

/* ---- errors and the connection ------------------------------------------ */

/* The connection was dropped: the lease and the reader registration went
 * with it, and the server may have lost commits: trust nothing read. */
static void forget_connection(void *owner) {
    redis_store *s = owner;
    s->holds_lease = 0;
    s->member[0] = 0;
    pagecache_reset(&s->cache);
}

/* Sends the end script without waiting: its reply is read before the
 * next command's. EVAL, not EVALSHA: a NOSCRIPT here would come too late
 * to resend. */
static void send_end(redis_store *s, const char *member) {
    const char *argv[3 + SCRIPT_KEYS_MAX + 2];
    size_t lens[3 + SCRIPT_KEYS_MAX + 2];
    char nbuf[8];
    kvsql_call k = {0, argv, lens};
    rs_call_keys(s, &k, SCRIPT_END, nbuf);
    kvsql_call_str(&k, s->conn.token);
    kvsql_call_str(&k, member);
    argv[0] = "EVAL";
    argv[1] = kvsql_scripts[SCRIPT_END];
    kvsql_conn_send(&s->conn, k.argc, argv);
}

/* Runs script id with its keys and then the other arguments, nargs C
 * strings (at most RUN_ARGS_MAX), for begin and lock: no allocation.
 * NULL, the connection dropped and why recorded, when it broke. */
#define RUN_ARGS_MAX 6
static redisReply *rs_run_script(redis_store *s, int id, const char *what, int nargs, const char **args) {
    const char *argv[3 + SCRIPT_KEYS_MAX + RUN_ARGS_MAX];
    size_t lens[3 + SCRIPT_KEYS_MAX + RUN_ARGS_MAX];
    char nbuf[8];
    kvsql_call k = {0, argv, lens};
    rs_call_keys(s, &k, id, nbuf);
    for (int i = 0; i < nargs; i++) kvsql_call_str(&k, args[i]);
    redisReply *r = kvsql_conn_run_script(&s->conn, id, &k);
    if (!r) kvsql_conn_lost(&s->conn, SQLITE_IOERR, what);
    return r;
}

/* ---- turns ----
 * A writer refused again within KVSQL_QUEUE_LAPSE_MS of its last refusal
 * is retrying (SQLite's busy handler, or the application): it waits in
 * T:queue, and the lease, once free, goes to the writer that waited
 * longest (docs/FORMAT.md, "Turns"). A first refusal does not queue, so a
 * writer that gives up at once (a busy timeout of 0) holds no one up.
 * While it retries, its begins carry the write intent (the hint is given
 * once per statement, and SQLite's busy handler begins again): the turn's
 * lease then comes with the snapshot, which no commit can make stale
 * between the begin and the lock. */
static int rs_retrying(const redis_store *s) {
    return s->busy_ms > 0 && rs_monotonic_ms() - s->busy_ms < KVSQL_QUEUE_LAPSE_MS;
}

/* ---- begin --------------------------------------------------------------- */

/* Checks page 0 as begin found it, with whether fields HLEN-1 and HLEN
 * exist; sets t->page_size and t->npages (format.c's rule for a hash that
 * lacks its lock-byte field) and keeps page 0. */
static int accept_page0(redis_store *s, kvsql_txn *t, uint32_t hlen, const redisReply *p0, long long before_hlen,
                        long long at_hlen) {
    const unsigned char *h = (const unsigned char *)p0->str;
    char why[128] = "";
    if (p0->type != REDIS_REPLY_STRING) snprintf(why, sizeof(why), "field 0 is missing");
    else if (kvsql_check_page1(h, p0->len, why, sizeof(why)) != 0) { /* why says it */
    } else {
        t->npages = kvsql_hash_npages(hlen, (uint32_t)p0->len, at_hlen == 1);
        s->gap = t->npages > hlen;
        if (!(s->gap ? at_hlen == 1 : before_hlen == 1)) snprintf(why, sizeof(why), "its last page is missing");
    }
    if (why[0]) return rs_fail(s, SQLITE_NOTADB, "key %s is not a kvsql database: %s", s->key, why);
    t->page_size = (uint32_t)p0->len;
    if (pagecache_put(&s->cache, 0, h, (uint32_t)p0->len) < 0) return rs_fail(s, SQLITE_NOMEM, "out of memory");
    return SQLITE_OK;
}

/* Brings the cache from cache_version to the snapshot with begin's
 * changelog answer (reply elements 6..: count, then page/value pairs):
 * changed pages are dropped, or replaced by the value sent. Returns 0, or
 * -1 when the answer does not fit (then the caller drops the cache). */
static int apply_changes(redis_store *s, const redisReply *r, uint32_t psz) {
    long long k = rs_reply_int(r->element[6]);
    if (k < 0 || r->elements != 7 + 2 * (size_t)k || s->cache.page_len != psz) return -1;
    for (size_t j = 0; j < (size_t)k; j++) {
        const redisReply *ix = r->element[7 + 2 * j], *val = r->element[8 + 2 * j];
        uint32_t i;
        if (ix->type != REDIS_REPLY_STRING || kvsql_field_parse(ix->str, ix->len, &i) != 0) return -1;
        pagecache_remove(&s->cache, i);
        if (val->type == REDIS_REPLY_STRING && val->len == psz && pagecache_put(&s->cache, i, val->str, psz) < 0)
            return -1;
    }
    s->stats.log_pages += (uint64_t)k;
    return 0;
}

/* Takes the identity id (len bytes, as begin or a commit answered it:
 * "<v>:<hex>" or "<v>") as the snapshot, and "<v>:<token>" as the
 * reader's member. -1 when it is too long or does not begin with a
 * version. */
static int set_snapshot(redis_store *s, const char *id, size_t len) {
    size_t tl = strlen(s->conn.token), vl = strspn(id, "0123456789");
    if (len >= sizeof(s->snapshot) || vl == 0 || vl > 20 || vl + 2 + tl > sizeof(s->member)) return -1;
    memcpy(s->snapshot, id, len);
    s->snapshot[len] = 0;
    memcpy(s->member, id, vl);
    s->member[vl] = ':';
    memcpy(s->member + vl + 1, s->conn.token, tl + 1);
    return 0;
}

/* Fills t from begin's reply: {'ok', v, n} when page 0 as of v is
 * cached, else {'ok', v, n, page0, field n-1 exists, field n exists}
 * followed by the changelog since the cached version when there is one;
 * 'capture' in place of 'ok' when capture is on (T:changes:cfg exists),
 * either followed by '+lease' when the begin took the writer's lease. */
static int take_snapshot(redis_store *s, kvsql_txn *t, const redisReply *r) {
    if (rs_reply_is(r, 0, "type"))
        return rs_fail(s, SQLITE_NOTADB, "key %s holds a %s, not a kvsql database", s->key,
                    r->elements > 1 && r->element[1]->str ? r->element[1]->str : "value of another type");
    int refused = rs_refusal(s, r);
    if (refused >= 0) return refused;
    const char *head = r->type == REDIS_REPLY_ARRAY && r->elements > 0 && r->element[0]->type == REDIS_REPLY_STRING
                           ? r->element[0]->str
                           : "";
    int capture = strncmp(head, "capture", 7) == 0, leased = strstr(head, "+lease") != NULL;
    s->next_turn = strstr(head, "+next") != NULL;
    if ((strncmp(head, "ok", 2) != 0 && !capture) || r->elements < 3 || r->element[1]->type != REDIS_REPLY_STRING)
        return rs_bad_reply(s, "begin");
    if (leased) { /* the write-intent hint took the lease with the snapshot */
        s->holds_lease = 1;
        s->busy_ms = 0; /* no longer waiting */
    }
    s->capture_on = capture;
    if (s->capture) kvsql_capture_begin(s->capture, capture);
    long long n = rs_reply_int(r->element[2]);
    if (n < 0 || n >= 0x7fffffff) return rs_bad_reply(s, "begin");
    if (set_snapshot(s, r->element[1]->str, r->element[1]->len) != 0) return rs_bad_reply(s, "begin");
    t->version = strtoull(s->snapshot, NULL, 10);
    t->npages = (uint32_t)n;
    t->page_size = 0;
    readahead_begin(&s->ra);
    int warm = rs_ident_named(s->snapshot) && strcmp(s->snapshot, s->cache_ident) == 0 &&
               s->cache_hlen == (uint32_t)n && pagecache_has(&s->cache, 0);
    int logged = !warm && r->elements > 6 && r->element[3]->type == REDIS_REPLY_STRING &&
                 apply_changes(s, r, (uint32_t)r->element[3]->len) == 0;
    if (!warm && !logged) { /* nothing vouches for what SQLite cached either */
        pagecache_reset(&s->cache);
        s->restarts++;
    }
    t->generation = s->conn.connections + s->restarts;
    if (logged) s->stats.log_begins++;
    s->cache_version = t->version;
    snprintf(s->cache_ident, sizeof(s->cache_ident), "%s", s->snapshot);
    s->cache_hlen = (uint32_t)n;
    if (n == 0) return SQLITE_OK;
    if (r->elements < 6) {
        if (!warm) return rs_bad_reply(s, "begin");
        const unsigned char *p0 = pagecache_get(&s->cache, 0);
        t->page_size = kvsql_header_page_size(p0);
        t->npages = kvsql_hash_npages((uint32_t)n, t->page_size, s->gap);
        return SQLITE_OK;
    }
    int rc = accept_page0(s, t, (uint32_t)n, r->element[3], rs_reply_int(r->element[4]), rs_reply_int(r->element[5]));
    if (rc == SQLITE_OK) pagecache_drop_from(&s->cache, t->npages);
    return rc;
}

/* Begin's ARGV[5]: the changelog's time to live when it is due for
 * renewal on this connection, else "" (the server skips the PEXPIRE). */
static void log_ttl_arg(redis_store *s, char *buf, size_t n) {
    double now = rs_monotonic_ms();
    buf[0] = 0;
    if (s->log_connection == s->conn.connections && now - s->log_renewed_ms < LOG_RENEW_MS) return;
    snprintf(buf, n, "%d", LOG_TTL_MS);
    s->log_connection = s->conn.connections;
    s->log_renewed_ms = now;
}

/* ---- warm begins ----
 * A begin that finds nothing changed needs none of begin's writes when
 * the reader's registration <v>:<token> at the cached version v is fresh:
 * a begin or read script of this connection renewed it less than
 * lease_ms/4 ago, so it outlives a transaction that reads no longer than
 * that (later reads renew it, store_redis.c "reads without a script"). Then
 * begin sends the warm script (client/hash/scripts.c), which reads T:v, HLEN
 * and T:changes:cfg and, when they say nothing changed, writes nothing:
 * the registration's TIME and ZADD and a third of the arguments were 40% of
 * the server's instructions of a warm read transaction (bench/PROFILE.md,
 * "Warm point select through the library"). When the version moved, the
 * warm script goes on as begin: still one round trip. A registration that
 * lapses anyway (a paused client) is as safe as with the read path: a read
 * after another commit then answers 'old' (SQLITE_IOERR_SHORT_READ, which
 * the VFS passes as SQLITE_IOERR_READ), never pages of another snapshot.
 * Not used when the write-intent hint or the changelog's renewal is due:
 * the begin script does those. */
static int warm_begin_ok(const redis_store *s, const char *cached, const char *log_ttl, double now) {
    if (s->intent || log_ttl[0] || !s->member[0] || !cached[0]) return 0;
    double last = s->begun_ms > s->renewed_ms ? s->begun_ms : s->renewed_ms;
    size_t v = strcspn(cached, ":"); /* the member is "<cached version>:<token>" */
    return strncmp(s->member, cached, v + 1) == 0 && strcmp(s->member + v + 1, s->conn.token) == 0 &&
           now - last < s->cfg.lease_ms / 4.0;
}

/* The begin script's 6 arguments after its keys (cached: "id/HLEN" of
 * the cache, or ""). */
#define BEGIN_ARGS 6
static void begin_args(redis_store *s, const char *cached, const char *log_ttl, const char **args) {
    const char *a[BEGIN_ARGS] = {s->conn.token, s->lease, s->member, cached, log_ttl, s->intent ? "1" : ""};
    memcpy(args, a, sizeof(a));
}

/* Sends the begin or the warm begin script; its reply, NULL when the
 * connection broke. */
static redisReply *send_begin(redis_store *s, int warm, const char *cached, const char *log_ttl) {
    if (warm) {
        const char *args[] = {s->conn.token, s->lease, cached};
        return rs_run_script(s, SCRIPT_BEGIN_WARM, "begin", NARGS(args), args);
    }
    const char *args[BEGIN_ARGS];
    begin_args(s, cached, log_ttl, args);
    return rs_run_script(s, SCRIPT_BEGIN, "begin", BEGIN_ARGS, args);
}

/* ---- the first begin of a connection ----
 * A new connection's first begin goes with its handshake (client/conn.c
 * kvsql_conn_connect_with): the connect and the begin of the schema load
 * share one round trip, and a cold point select through the library
 * costs its b-tree depth + 2 round trips (bench/PROFILE.md). That begin
 * names the token without its CLIENT ID, unknown until the handshake's
 * reply, and so does the rest of that transaction; the next begin adds
 * it. Not with the write-intent hint: a lease must name the ID (dead
 * owners, below), so that begin waits for the handshake. *r is NULL when
 * the begin must still be sent. */
static int connect_begin(redis_store *s, const char *cached, const char *log_ttl, redisReply **r) {
    if (s->intent) return kvsql_conn_connect_with(&s->conn, SCRIPT_BEGIN, "begin", NULL, r);
    const char *args[BEGIN_ARGS], *argv[3 + SCRIPT_KEYS_MAX + BEGIN_ARGS];
    size_t lens[3 + SCRIPT_KEYS_MAX + BEGIN_ARGS];
    char nbuf[8];
    kvsql_call k = {0, argv, lens};
    begin_args(s, cached, log_ttl, args);
    rs_call_keys(s, &k, SCRIPT_BEGIN, nbuf);
    for (int i = 0; i < BEGIN_ARGS; i++) kvsql_call_str(&k, args[i]);
    return kvsql_conn_connect_with(&s->conn, SCRIPT_BEGIN, "begin", &k, r);
}

static int begin_once(kvsql_store *st, kvsql_txn *t) {
    redis_store *s = (redis_store *)st;
    if (s->active && s->active != t)
        return rs_fail(s, SQLITE_MISUSE, "a redis store serves one connection; open the database again instead");
    int fresh = kvsql_conn_down(&s->conn);
    if (fresh) kvsql_conn_renew(&s->conn);
    else kvsql_conn_adopt_id(&s->conn); /* between transactions */
    char cached[80] = "", log_ttl[16];
    log_ttl_arg(s, log_ttl, sizeof(log_ttl));
    if (pagecache_has(&s->cache, 0) && rs_ident_named(s->cache_ident)) /* a bare version vouches for nothing */
        snprintf(cached, sizeof(cached), "%s/%u", s->cache_ident, s->cache_hlen);
    double now = rs_monotonic_ms();
    if (rs_retrying(s)) s->intent = 1; /* turns, above */
    int warm = warm_begin_ok(s, cached, log_ttl, now);
    redisReply *r = NULL;
    int rc = fresh ? connect_begin(s, cached, log_ttl, &r) : SQLITE_OK;
    if (rc != SQLITE_OK) return rc;
    int plain = s->plain_connection == s->conn.connections; /* its ACL refused the scripts */
    if (!plain && !r) r = send_begin(s, warm, cached, log_ttl);
    s->intent = 0;
    if (!plain && !r) return SQLITE_IOERR;
    if (!plain && rs_plain_wanted(r)) { /* refused (ACL, OOM): begin without scripts */
        if (kvsql_conn_error_code(r->str) == SQLITE_PERM) s->plain_connection = s->conn.connections;
        freeReplyObject(r);
        plain = 1;
    }
    if (plain && (rc = rs_begin_plain(s, cached, &r)) != SQLITE_OK) return rc;
    s->plain = plain;
    if (!warm) s->begun_ms = now; /* the begin script renewed the registration */
    s->stats.begins++;
    s->member[0] = 0;
    t->generation = s->conn.connections + s->restarts;
    rc = r->type == REDIS_REPLY_ERROR ? kvsql_conn_reply_error(&s->conn, r, "begin") : take_snapshot(s, t, r);
    freeReplyObject(r);
    if (plain) s->member[0] = 0; /* not registered: nothing to end */
    if (rc != SQLITE_OK) {
        if (s->member[0]) send_end(s, s->member); /* registered (and maybe leased), then refused */
        s->member[0] = 0;
        s->holds_lease = 0;
        return rc;
    }
    s->conn.err[0] = 0;
    s->active = t;
    t->priv = s;
    t->level = KVSQL_LOCK_READ;
    return SQLITE_OK;
}

/* Begin; when the node answered MOVED (Redis Cluster: nothing ran there),
 * again at once on the slot's new owner, with a new connection. */
static int begin_routed(kvsql_store *st, kvsql_txn *t) {
    redis_store *s = (redis_store *)st;
    int rc = SQLITE_OK;
    for (int i = 0; i <= KVSQL_CLUSTER_REDIRECTS; i++) {
        s->conn.rerouted = 0;
        rc = begin_once(st, t);
        if (!s->conn.rerouted) break;
    }
    return rc;
}

/* A retrying writer whose turn is next (turns, above) waits here, up to
 * NEXT_WAIT_MS, beginning again every NEXT_POLL_US, for the lease to come
 * with a snapshot: SQLite's busy handler would sleep 10 to 100 ms by then
 * while the lease, free, waited for it. Nothing of the snapshot reached
 * SQLite yet (this is its SHARED lock). */
#define NEXT_WAIT_MS 50
#define NEXT_POLL_US 200

static int redis_begin(kvsql_store *st, kvsql_txn *t) {
    redis_store *s = (redis_store *)st;
    double until = rs_monotonic_ms() + NEXT_WAIT_MS;
    for (;;) {
        int retrying = rs_retrying(s);
        s->next_turn = 0;
        int rc = begin_routed(st, t);
        if (rc != SQLITE_OK || !retrying || !s->next_turn || s->holds_lease || rs_monotonic_ms() > until) return rc;
        s->active = NULL; /* begin again: the registration is replaced */
        t->priv = NULL;
        t->level = KVSQL_LOCK_NONE;
        usleep(NEXT_POLL_US);
    }
}

/* ---- lock ---------------------------------------------------------------- */

/* ---- dead owners ----
 * A lease whose owner's connection is gone can never be used again (the
 * token dies with its connection), so it need not block the others for
 * lease_ms. The token ends in the owner's CLIENT ID ("<hex>-<id>",
 * client/net/conn.c); a lock that finds the lease taken asks `CLIENT LIST ID
 * <id>` on the same node, at most once per OWNER_CHECK_MS, and when no
 * such client exists runs the lock again naming that token, which the
 * script then takes over (docs/FORMAT.md, "Lock"). Client ids are never
 * reused while the server runs, and the lease does not outlive the
 * server (nor move to a replica), so an id that is absent is a dead owner.
 * A user who may not run CLIENT LIST (it is @admin) waits for lease_ms,
 * as does anyone for an owner whose token names no id. */
#define OWNER_CHECK_MS 100

/* 1 when the connection of the lease holder `holder` is known to be gone. */
static int owner_gone(redis_store *s, const char *holder) {
    const char *dash = strchr(holder, '-');
    double now = rs_monotonic_ms();
    if (!dash || !dash[1] || strspn(dash + 1, "0123456789") != strlen(dash + 1) || s->conn.no_client_list ||
        now - s->owner_checked_ms < OWNER_CHECK_MS)
        return 0; /* no id named: lease_ms it is */
    s->owner_checked_ms = now;
    const char *argv[] = {"CLIENT", "LIST", "ID", dash + 1};
    redisReply *r = kvsql_conn_round_trip(&s->conn, 4, argv, NULL);
    if (!r) return 0; /* the lock's next script meets the broken connection */
    int gone = 0;
    if (r->type == REDIS_REPLY_ERROR) s->conn.no_client_list = 1; /* NOPERM: lease_ms it is */
    else gone = (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) && r->len == 0;
    freeReplyObject(r);
    return gone;
}

static const char *queue_arg(const redis_store *s) {
    return rs_retrying(s) ? "1" : "";
}

/* The lock script for the token, taking over the lease of `dead` ("" for
 * none): its reply, NULL when the connection broke. */
static redisReply *run_lock(redis_store *s, const char *dead) {
    const char *args[] = {s->conn.token, s->snapshot, s->lease, dead, queue_arg(s)};
    s->stats.locks++;
    return rs_run_script(s, SCRIPT_LOCK, "lock", NARGS(args), args);
}

static int redis_lock(kvsql_store *st, kvsql_txn *t) {
    redis_store *s = (redis_store *)st;
    if (t != s->active || t->level == KVSQL_LOCK_NONE)
        return rs_fail(s, SQLITE_MISUSE, "lock outside a transaction");
    if (t->level == KVSQL_LOCK_WRITE) return SQLITE_OK;
    if (!s->conn.c) return rs_connection_gone(s);
    s->intent = 0;
    if (s->holds_lease) { /* the begin took it (write-intent hint), on this very snapshot */
        t->level = KVSQL_LOCK_WRITE;
        return SQLITE_OK;
    }
    redisReply *r = run_lock(s, "");
    int takeover = 0;
    if (r && rs_reply_is(r, 0, "busy") && r->elements > 1 && r->element[1]->type == REDIS_REPLY_STRING &&
        r->element[1]->len < sizeof(s->conn.token)) {
        char holder[sizeof(s->conn.token)];
        memcpy(holder, r->element[1]->str, r->element[1]->len + 1);
        if ((takeover = owner_gone(s, holder))) {
            freeReplyObject(r);
            r = run_lock(s, holder);
        }
    }
    if (!r) return SQLITE_IOERR;
    int rc;
    s->busy_ms = rs_reply_is(r, 0, "busy") || rs_reply_is(r, 0, "stale") ? rs_monotonic_ms() : 0; /* refused */
    if (r->type == REDIS_REPLY_ERROR) rc = kvsql_conn_reply_error(&s->conn, r, "lock");
    else if ((rc = rs_refusal(s, r)) >= 0) {
    } else if (rs_reply_is(r, 0, "ok")) {
        rc = SQLITE_OK;
        s->stats.dead_leases += takeover;
        s->holds_lease = 1;
        t->level = KVSQL_LOCK_WRITE;
    } else if (rs_reply_is(r, 0, "busy")) {
        s->stats.busy++;
        rc = rs_fail(s, SQLITE_BUSY, "key %s: another connection is writing", s->key);
    } else if (rs_reply_is(r, 0, "stale")) {
        s->stats.stale++;
        rc = rs_fail(s, SQLITE_BUSY_SNAPSHOT, "key %s: a commit landed after this transaction's snapshot", s->key);
    } else rc = rs_bad_reply(s, "lock");
    freeReplyObject(r);
    return rc;
}

/* ---- commit -------------------------------------------------------------- */

/* After our commit landed: t's snapshot is the new state, named by the
 * identity the commit answered. */
static void adopt_commit(redis_store *s, kvsql_txn *t, const kvsql_batch *b, const char *ident) {
    if (set_snapshot(s, ident, strlen(ident)) != 0) { /* cannot happen: the script made it */
        s->snapshot[0] = 0;
        pagecache_reset(&s->cache);
    }
    t->version = strtoull(s->snapshot, NULL, 10);
    t->npages = b->npages;
    t->page_size = b->page_size;
    /* The cache held the old version; the batch turns it into the new. */
    for (uint32_t i = 0; i < b->count; i++)
        if (pagecache_put(&s->cache, b->pages[i].index, b->pages[i].data, b->page_size) < 0) {
            pagecache_reset(&s->cache);
            break;
        }
    pagecache_drop_from(&s->cache, b->npages);
    s->cache_version = t->version;
    snprintf(s->cache_ident, sizeof(s->cache_ident), "%s", s->snapshot);
    s->gap = 0; /* the commit stored the lock-byte page, or cut below it */
    s->cache_hlen = b->npages;
}

static int commit_outcome(redis_store *s, kvsql_txn *t, const kvsql_batch *b, const redisReply *r) {
    if (r->type == REDIS_REPLY_ERROR) return kvsql_conn_reply_error(&s->conn, r, "commit");
    int refused = rs_refusal(s, r);
    if (refused >= 0) return refused;
    if (rs_reply_is(r, 0, "ok") && r->elements == 2 && r->element[1]->type == REDIS_REPLY_STRING) {
        s->stats.commits++;
        s->stats.pages_written += b->count;
        adopt_commit(s, t, b, r->element[1]->str);
        return SQLITE_OK;
    }
    if (rs_reply_is(r, 0, "lease")) {
        s->holds_lease = 0;
        return rs_fail(s, SQLITE_IOERR_LOCK,
                    "key %s: the write lease was lost (it lapsed after lease_ms=%d and maybe another writer took "
                    "it); nothing was written",
                    s->key, s->cfg.lease_ms);
    }
    if (rs_reply_is(r, 0, "stale")) {
        s->stats.stale++;
        return rs_fail(s, SQLITE_BUSY_SNAPSHOT, "key %s: a commit landed after this transaction's snapshot", s->key);
    }
    if (rs_reply_is(r, 0, "capture")) {
        s->stats.stale++;
        return rs_fail(s, SQLITE_BUSY_SNAPSHOT,
                    "key %s: change capture was turned on after this transaction began, so its changes were not "
                    "captured; nothing was written, run it again",
                    s->key);
    }
    if (rs_reply_is(r, 0, "changes"))
        return rs_fail(s, SQLITE_ERROR, "key %s: kvsql changes: T:changes holds another type than a stream: nothing "
                                     "was written", s->key);
    return rs_bad_reply(s, "commit");
}

/* Whether the commit must store the lock-byte page the hash lacks (an
 * older module's gap): when the new length still covers it and the batch
 * does not write it. */
static int fills_gap(const redis_store *s, const kvsql_batch *b, uint32_t lb) {
    if (!s->gap || b->npages <= lb) return 0;
    for (uint32_t i = 0; i < b->count; i++)
        if (b->pages[i].index == lb) return 0;
    return 1;
}

/* wait=N: after a commit landed, WAIT N wait_timeout_ms. The commit is
 * on the master whatever WAIT answers; fewer replicas (or a connection
 * lost meanwhile) are counted in stats.wait_short and said by
 * kvsql_error() until the next begin, and the commit returns SQLITE_OK
 * (docs/LIBRARY.md, "WAIT"). */
static void wait_for_replicas(redis_store *s) {
    char n[16], ms[16];
    snprintf(n, sizeof(n), "%d", s->cfg.wait_replicas);
    snprintf(ms, sizeof(ms), "%d", s->cfg.wait_timeout_ms);
    const char *argv[] = {"WAIT", n, ms};
    redisReply *r = kvsql_conn_round_trip(&s->conn, 3, argv, NULL);
    long long got = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r) freeReplyObject(r);
    else kvsql_conn_drop(&s->conn); /* the connection broke */
    if (got >= s->cfg.wait_replicas) return;
    s->stats.wait_short++;
    if (got < 0)
        rs_fail(s, SQLITE_OK, "key %s: the commit landed on the master at %s, but WAIT %s failed: not known to be on "
                           "any replica",
             s->key, s->conn.where, n);
    else
        rs_fail(s, SQLITE_OK, "key %s: the commit landed on the master at %s, but only %lld of wait=%s replicas "
                           "acknowledged it within wait_timeout_ms=%s",
             s->key, s->conn.where, got, n, ms);
}

/* The row changes of the commit while capture is on (client/hooks.c):
 * *log, or NULL with capture off. An SQLite code: an error when they
 * cannot be published (then nothing is written). */
static int changes_of_commit(redis_store *s, const change_log **log) {
    char why[400];
    *log = NULL;
    if (!s->capture_on) return SQLITE_OK;
    if (!s->capture)
        return rs_fail(s, SQLITE_ERROR, "key %s: change capture is on (T:changes:cfg) and this connection cannot "
                                     "capture: open the database as the main database of its connection, not "
                                     "with ATTACH; nothing was written", s->key);
    if (!(*log = kvsql_capture_commit(s->capture, s->committed, why, sizeof(why))))
        return rs_fail(s, SQLITE_ERROR, "key %s: %s", s->key, why);
    return SQLITE_OK;
}

static int redis_commit(kvsql_store *st, kvsql_txn *t, const kvsql_batch *b) {
    redis_store *s = (redis_store *)st;
    if (t != s->active || t->level != KVSQL_LOCK_WRITE)
        return rs_fail(s, SQLITE_IOERR_LOCK, "key %s: this connection is not the writer", s->key);
    if (!s->conn.c) return rs_connection_gone(s);
    const change_log *log;
    int rc = changes_of_commit(s, &log);
    if (rc != SQLITE_OK) return rc;
    char nkeys[8], npages[16], gap[KVSQL_FIELD_MAX] = "", nchanges[24] = "", newid[KVSQL_ID_HEX + 1];
    uint32_t lb = kvsql_lock_byte_index(b->page_size);
    int fill = fills_gap(s, b, lb);
    size_t nstr = kvsql_capture_strings(log);
    char *idx = malloc((size_t)(b->count + 1) * KVSQL_FIELD_MAX);
    char (*counts)[4] = log && log->n ? malloc(log->n * sizeof(*counts)) : NULL;
    void *zeros = fill ? calloc(1, b->page_size) : NULL;
    kvsql_call k;
    int ok = kvsql_call_init(&k, 26 + 2 * (int)b->count + (int)nstr) == 0 && idx && (zeros || !fill) &&
             (counts || !log || !log->n);
    if (!ok) {
        kvsql_call_free(&k);
        free(idx);
        free(counts);
        free(zeros);
        return rs_fail(s, SQLITE_NOMEM, "out of memory");
    }
    snprintf(npages, sizeof(npages), "%u", b->npages);
    if (s->gap) kvsql_field_name(gap, lb);
    rs_call_keys(s, &k, SCRIPT_COMMIT, nkeys);
    kvsql_call_str(&k, s->conn.token);
    kvsql_call_str(&k, s->snapshot);
    kvsql_call_str(&k, s->lease);
    kvsql_call_str(&k, npages);
    kvsql_call_str(&k, gap);
    kvsql_random_hex(newid, KVSQL_ID_HEX / 2);
    kvsql_call_str(&k, newid);
    if (log) snprintf(nchanges, sizeof(nchanges), "%zu", nstr);
    kvsql_call_str(&k, nchanges);
    if (log) kvsql_capture_add_args(&k, log, counts);
    for (uint32_t i = 0; i < b->count + (uint32_t)fill; i++) {
        char *p = idx + (size_t)i * KVSQL_FIELD_MAX;
        kvsql_call_add(&k, p, kvsql_field_name(p, i < b->count ? b->pages[i].index : lb));
        kvsql_call_add(&k, i < b->count ? b->pages[i].data : zeros, b->page_size);
    }
    redisReply *r = rs_stage_wanted(s, t, b, log) ? rs_commit_staged(s, t, b)
                                                : kvsql_conn_run_script(&s->conn, SCRIPT_COMMIT, &k);
    kvsql_call_free(&k);
    free(idx);
    free(counts);
    free(zeros);
    if (!r)
        return kvsql_conn_lost(&s->conn, SQLITE_IOERR,
                               "commit (its fate is unknown: it landed whole or not at all, the next "
                               "transaction shows which)");
    rc = commit_outcome(s, t, b, r);
    freeReplyObject(r);
    if (rc == SQLITE_OK && s->capture) kvsql_capture_end(s->capture); /* published */
    s->committed = rc == SQLITE_OK;
    if (rc == SQLITE_OK && s->cfg.wait_replicas > 0) wait_for_replicas(s);
    return rc;
}

/* ---- unlock, errmsg, destroy --------------------------------------------- */

static void redis_unlock(kvsql_store *st, kvsql_txn *t, int level) {
    redis_store *s = (redis_store *)st;
    if (t != s->active || level >= t->level) return;
    if (s->capture) kvsql_capture_end(s->capture); /* the transaction's changes, if any, were not committed */
    s->committed = 0;
    if (level == KVSQL_LOCK_NONE) {
        /* A writer gives the lease back at once; a reader's registration
         * stays for the next begin to replace (no script of its own) and
         * lapses after lease_ms if none comes. */
        if (s->holds_lease) {
            send_end(s, s->member);
            s->member[0] = 0;
        }
        s->active = NULL;
        t->priv = NULL;
    } else if (s->holds_lease) {
        send_end(s, "");
    }
    s->holds_lease = 0;
    t->level = level;
}

static const char *redis_errmsg(kvsql_store *st) {
    return ((redis_store *)st)->conn.err;
}

static void free_names(redis_store *s) {
    free(s->key);
    for (int i = 0; i < SKEY_COUNT; i++) free(s->keys[i]);
}

static void redis_destroy(kvsql_store *st) {
    redis_store *s = (redis_store *)st;
    if (s->member[0]) send_end(s, s->member); /* the registration a reader left */
    kvsql_conn_close(&s->conn); /* after the end scripts' replies: they surely ran */
    pagecache_clear(&s->cache);
    kvsql_capture_free(s->capture);
    readahead_free(&s->ra);
    free_names(s);
    free(s);
}

static const kvsql_store_methods redis_methods = {
    redis_begin, rs_read, redis_lock, redis_commit, redis_unlock, redis_errmsg, redis_destroy,
};

/* ---- making a store ------------------------------------------------------ */

/* The name of an auxiliary key of key (docs/FORMAT.md, src/format.c). */
static char *aux_name(const char *key, const char *suffix) {
    size_t n = kvsql_aux_key(NULL, 0, key, strlen(key), suffix) + 1;
    char *out = malloc(n);
    if (out) kvsql_aux_key(out, n, key, strlen(key), suffix);
    return out;
}

int kvsql_redis_store_new(const char *key, const kvsql_redis_config *cfg, kvsql_store **out) {
    *out = NULL;
    redis_store *s = calloc(1, sizeof(*s));
    if (!s) return SQLITE_NOMEM;
    s->base.m = &redis_methods;
    pagecache_init(&s->cache, (size_t)cfg->cache_kb * 1024);
    s->cfg = *cfg;
    snprintf(s->lease, sizeof(s->lease), "%d", cfg->lease_ms);
    s->key = strdup(key);
    int ok = s->key != NULL;
    for (int i = 0; i < SKEY_COUNT; i++)
        ok = (s->keys[i] = key_suffix[i] ? aux_name(key, key_suffix[i]) : strdup(key)) != NULL && ok;
    if (!ok) {
        free_names(s);
        free(s);
        return SQLITE_NOMEM;
    }
    kvsql_conn_init(&s->conn, s->key, &s->cfg, &s->stats, forget_connection, s);
    *out = &s->base;
    return SQLITE_OK;
}

void kvsql_redis_store_intend_write(kvsql_store *st) {
    if (st && st->m == &redis_methods) ((redis_store *)st)->intent = 1;
}

void kvsql_redis_store_intend_read(kvsql_store *st) {
    if (st && st->m == &redis_methods) ((redis_store *)st)->busy_ms = 0;
}

int kvsql_redis_store_set_capture(kvsql_store *st, kvsql_capture *c) {
    if (!st || st->m != &redis_methods || ((redis_store *)st)->capture) return -1;
    ((redis_store *)st)->capture = c;
    return 0;
}

int kvsql_redis_store_stats(kvsql_store *st, kvsql_redis_stats *out) {
    if (!st || st->m != &redis_methods) return -1;
    const redis_store *s = (const redis_store *)st;
    *out = s->stats;
    out->cache_pages = s->cache.count;
    out->cache_bytes = (sqlite3_int64)pagecache_bytes(&s->cache);
    out->cache_limit = (sqlite3_int64)s->cache.limit;
    out->cache_evictions = (sqlite3_int64)s->cache.evictions;
    return 0;
}
