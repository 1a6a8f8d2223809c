/* store_redis.c - the page store of the `redis` VFS (store_redis.h).
 *
 * Called by SQLite through the VFS (client/extension.c) and by
 * tests/contract.c. Implements store.h's transactions over one connection
 * (client/conn.c) with the Lua scripts of client/scripts.c (docs/FORMAT.md,
 * "The protocol of the redis VFS"), and keeps the page cache:
 *   begin  one round trip: snapshot version, length, page 0; registers
 *          the reader;
 *   read   one round trip per call, whatever its count; page 0 comes
 *          with begin, and a miss reads ahead: the window doubles (up to
 *          READ_AHEAD_MAX pages) while reads are sequential. Pages read
 *          stay cached while the version does not change;
 *   lock   one round trip: the writer's lease;
 *   commit one round trip: the whole batch;
 *   unlock no round trip: the end script is sent at once and its reply is
 *          read with the next command's.
 * Every wait for a reply counts in stats.round_trips.
 *
 * A connection error makes the call fail with SQLITE_IOERR and drops the
 * connection; the next begin connects again with a new token, so a late
 * reply or lease of the old connection can never be taken for the new. */
#include "client/store_redis.h"

#include "client/conn.h"
#include "format.h"
#include "pagemap.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define READ_AHEAD_MAX 64
#define CACHE_MAX_PAGES 1024

/* How long T:log lives after the last begin: a library client keeps it
 * alive; with none around, it lapses and commits stop writing it. */
#define LOG_TTL_MS 600000
/* A begin renews it when the last renewal on this connection is older. */
#define LOG_RENEW_MS 60000

/* In the order the commit script takes them as KEYS[2..] (scripts.h). */
enum { AUX_V, AUX_LEASE, AUX_READERS, AUX_UNDO, AUX_UNDO_IDX, AUX_UNDO_VER, AUX_LOG, AUX_COUNT };
static const char *const aux_suffix[AUX_COUNT] = {KVSQL_AUX_VERSION,  KVSQL_AUX_LEASE,    KVSQL_AUX_READERS,
                                                   KVSQL_AUX_UNDO,     KVSQL_AUX_UNDO_IDX, KVSQL_AUX_UNDO_VER,
                                                   KVSQL_AUX_LOG};

typedef struct redis_store {
    kvsql_store base;
    kvsql_redis_config cfg;
    char lease[16];            /* cfg.lease_ms in decimal, for the scripts */
    char *key;
    char *aux[AUX_COUNT];      /* T:v, T:lease, ... */
    kvsql_conn conn;           /* to the node that serves key (client/conn.c) */
    kvsql_txn *active;         /* the transaction at READ or WRITE */
    char snapshot[24];         /* decimal version of the snapshot */
    char member[64];           /* our reader registration, "" when none; kept
                                * after a read-only transaction, for the next
                                * begin to replace (or redis_destroy to end) */
    int holds_lease;
    /* Pages as of version cache_version, read ahead or kept from begin
     * and from our own commits. A begin that finds another version keeps
     * them but for the pages T:log says changed since (all of them when
     * the log does not reach back), and at every reconnection. */
    pagemap cache;
    uint64_t cache_version;
    uint32_t cache_hlen;       /* HLEN of the hash at cache_version */
    int gap;                   /* the hash at cache_version lacks its lock-byte
                                * field (an older module's; format.h) */
    uint32_t log_connection;   /* the connection that last renewed T:log */
    double log_renewed_ms;     /* when (monotonic clock) */
    uint32_t next_read;        /* the page after the last one read: sequential? */
    uint32_t window;           /* pages the next miss reads ahead */
    kvsql_redis_stats stats;
} redis_store;

static const kvsql_store_methods redis_methods;

/* ---- errors and the connection ------------------------------------------ */

/* Records why rc happened for errmsg() and the VFS, then returns rc. */
static int fail(redis_store *s, int rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    rc = kvsql_conn_vfail(&s->conn, rc, fmt, ap);
    va_end(ap);
    return rc;
}

/* The connection was dropped: the lease and the reader registration went
 * with it, and the server may have lost commits: trust nothing read. */
static void forget_connection(void *owner) {
    redis_store *s = owner;
    s->holds_lease = 0;
    s->member[0] = 0;
    pagemap_reset(&s->cache);
}

/* A call within a transaction whose connection was dropped. */
static int connection_gone(redis_store *s) {
    return fail(s, SQLITE_IOERR, "redis at %s: the connection was lost in this transaction", s->conn.where);
}

/* Sends the end script without waiting: its reply is read before the
 * next command's. EVAL, not EVALSHA: a NOSCRIPT here would come too late
 * to resend. */
static void send_end(redis_store *s, const char *member) {
    const char *argv[] = {"EVAL",          kvsql_scripts[SCRIPT_END], "5",      s->aux[AUX_LEASE],
                          s->aux[AUX_READERS], s->aux[AUX_UNDO],   s->aux[AUX_UNDO_IDX], s->aux[AUX_UNDO_VER],
                          s->conn.token,       member};
    kvsql_conn_send(&s->conn, 10, argv);
}

/* Runs script id with nkeys keys and then the other arguments, nargs C
 * strings in all (at most RUN_ARGS_MAX), for begin, read and lock: no allocation.
 * NULL, the connection dropped and why recorded, when it broke. */
#define RUN_ARGS_MAX 12
#define NARGS(a) ((int)(sizeof(a) / sizeof((a)[0])))
static redisReply *run_script(redis_store *s, int id, const char *what, int nkeys, int nargs, const char **args) {
    const char *argv[3 + RUN_ARGS_MAX];
    size_t lens[3 + RUN_ARGS_MAX];
    char nbuf[8];
    kvsql_call k = {0, argv, lens};
    kvsql_call_script(&k, nkeys, nbuf);
    for (int i = 0; i < nargs; i++) kvsql_call_str(&k, args[i]);
    redisReply *r = kvsql_conn_run_script(&s->conn, id, &k);
    if (!r) kvsql_conn_lost(&s->conn, SQLITE_IOERR, what);
    return r;
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
    if (why[0]) return fail(s, SQLITE_NOTADB, "key %s is not a kvsql database: %s", s->key, why);
    t->page_size = (uint32_t)p0->len;
    if (pagemap_put(&s->cache, 0, h, p0->len) != 0) return fail(s, SQLITE_NOMEM, "out of memory");
    return SQLITE_OK;
}

static int reply_is(const redisReply *r, size_t i, const char *word) {
    return r->type == REDIS_REPLY_ARRAY && r->elements > i && r->element[i]->type == REDIS_REPLY_STRING &&
           strcmp(r->element[i]->str, word) == 0;
}

static long long reply_int(const redisReply *r) {
    if (r->type == REDIS_REPLY_INTEGER) return r->integer;
    if (r->type == REDIS_REPLY_STRING) return strtoll(r->str, NULL, 10);
    return -1;
}

static int bad_reply(redis_store *s, const char *what) {
    return fail(s, SQLITE_IOERR, "redis at %s: unexpected reply to %s of key %s", s->conn.where, what, s->key);
}

/* Brings the cache from cache_version to the snapshot with begin's
 * changelog answer (reply elements 6..: count, then page/value pairs):
 * changed pages are dropped, or replaced by the value sent. Returns 0, or
 * -1 when the answer does not fit (then the caller drops the cache). */
static int apply_changes(redis_store *s, const redisReply *r, uint32_t psz) {
    long long k = reply_int(r->element[6]);
    if (k < 0 || r->elements != 7 + 2 * (size_t)k || s->cache.page_len != psz) return -1;
    for (size_t j = 0; j < (size_t)k; j++) {
        const redisReply *ix = r->element[7 + 2 * j], *val = r->element[8 + 2 * j];
        uint32_t i;
        if (ix->type != REDIS_REPLY_STRING || kvsql_field_parse(ix->str, ix->len, &i) != 0) return -1;
        pagemap_remove(&s->cache, i);
        if (val->type == REDIS_REPLY_STRING && val->len == psz && pagemap_put(&s->cache, i, val->str, psz)) return -1;
    }
    s->stats.log_pages += (uint64_t)k;
    return 0;
}

/* Fills t from begin's reply: {'ok', v, n} when page 0 as of v is
 * cached, else {'ok', v, n, page0, field n-1 exists, field n exists}
 * followed by the changelog since the cached version when there is one. */
static int take_snapshot(redis_store *s, kvsql_txn *t, const redisReply *r) {
    if (reply_is(r, 0, "type"))
        return fail(s, SQLITE_NOTADB, "key %s holds a %s, not a kvsql database", s->key,
                    r->elements > 1 && r->element[1]->str ? r->element[1]->str : "value of another type");
    if (!reply_is(r, 0, "ok") || r->elements < 3 || r->element[1]->type != REDIS_REPLY_STRING)
        return bad_reply(s, "begin");
    long long n = reply_int(r->element[2]);
    if (n < 0 || n >= 0x7fffffff) return bad_reply(s, "begin");
    snprintf(s->snapshot, sizeof(s->snapshot), "%s", r->element[1]->str);
    snprintf(s->member, sizeof(s->member), "%s:%s", s->snapshot, s->conn.token);
    t->version = strtoull(s->snapshot, NULL, 10);
    t->npages = (uint32_t)n;
    t->page_size = 0;
    s->window = 1;
    int warm = t->version == s->cache_version && s->cache_hlen == (uint32_t)n && pagemap_get(&s->cache, 0);
    int logged = !warm && r->elements > 6 && r->element[3]->type == REDIS_REPLY_STRING &&
                 apply_changes(s, r, (uint32_t)r->element[3]->len) == 0;
    if (!warm && !logged) pagemap_reset(&s->cache);
    if (logged) s->stats.log_begins++;
    s->cache_version = t->version;
    s->cache_hlen = (uint32_t)n;
    if (n == 0) return SQLITE_OK;
    if (r->elements < 6) {
        if (!warm) return bad_reply(s, "begin");
        const unsigned char *p0 = pagemap_get(&s->cache, 0);
        t->page_size = kvsql_header_page_size(p0);
        t->npages = kvsql_hash_npages((uint32_t)n, t->page_size, s->gap);
        return SQLITE_OK;
    }
    int rc = accept_page0(s, t, (uint32_t)n, r->element[3], reply_int(r->element[4]), reply_int(r->element[5]));
    if (rc == SQLITE_OK) pagemap_drop_from(&s->cache, t->npages);
    return rc;
}

static double monotonic_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Begin's ARGV[5]: the changelog's time to live when it is due for
 * renewal on this connection, else "" (the server skips the PEXPIRE). */
static void log_ttl_arg(redis_store *s, char *buf, size_t n) {
    double now = monotonic_ms();
    buf[0] = 0;
    if (s->log_connection == s->conn.connections && now - s->log_renewed_ms < LOG_RENEW_MS) return;
    snprintf(buf, n, "%d", LOG_TTL_MS);
    s->log_connection = s->conn.connections;
    s->log_renewed_ms = now;
}

static int begin_once(kvsql_store *st, kvsql_txn *t) {
    redis_store *s = (redis_store *)st;
    if (s->active && s->active != t)
        return fail(s, SQLITE_MISUSE, "a redis store serves one connection; open the database again instead");
    int rc = kvsql_conn_connect(&s->conn);
    if (rc != SQLITE_OK) return rc;
    char cached[40] = "", log_ttl[16];
    log_ttl_arg(s, log_ttl, sizeof(log_ttl));
    if (pagemap_get(&s->cache, 0))
        snprintf(cached, sizeof(cached), "%llu:%u", (unsigned long long)s->cache_version, s->cache_hlen);
    const char *args[] = {s->key, s->aux[AUX_V], s->aux[AUX_READERS], s->aux[AUX_LOG], /* KEYS */
                          s->conn.token, s->lease, s->member, cached, log_ttl};
    redisReply *r = run_script(s, SCRIPT_BEGIN, "begin", 4, NARGS(args), args);
    if (!r) return SQLITE_IOERR;
    s->stats.begins++;
    s->member[0] = 0;
    t->generation = s->conn.connections;
    rc = r->type == REDIS_REPLY_ERROR ? kvsql_conn_reply_error(&s->conn, r, "begin") : take_snapshot(s, t, r);
    freeReplyObject(r);
    if (rc != SQLITE_OK) {
        if (s->member[0]) send_end(s, s->member); /* registered, then refused */
        s->member[0] = 0;
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
static int redis_begin(kvsql_store *st, kvsql_txn *t) {
    redis_store *s = (redis_store *)st;
    int rc = SQLITE_OK;
    for (int i = 0; i <= KVSQL_CLUSTER_REDIRECTS; i++) {
        s->conn.rerouted = 0;
        rc = begin_once(st, t);
        if (!s->conn.rerouted) break;
    }
    return rc;
}

/* ---- read ---------------------------------------------------------------- */

/* Copies the first `wanted` pages of a read's reply into out and caches
 * all `count` of them (the rest were read ahead). */
static int take_pages(redis_store *s, const redisReply *r, uint32_t first, uint32_t count, uint32_t wanted,
                      uint32_t psz, unsigned char *out) {
    if (r->elements != (size_t)count + 1) return bad_reply(s, "read");
    if (s->cache.count + count > CACHE_MAX_PAGES) pagemap_reset(&s->cache);
    uint32_t gap = s->gap ? kvsql_lock_byte_index(psz) : UINT32_MAX;
    for (uint32_t i = 0; i < count; i++) {
        const redisReply *p = r->element[i + 1];
        if (first + i == gap && p->type == REDIS_REPLY_NIL) {
            if (i < wanted) memset(out + (size_t)i * psz, 0, psz);
            continue;
        }
        if (p->type != REDIS_REPLY_STRING || p->len != psz)
            return fail(s, SQLITE_CORRUPT, "key %s: page %u is %s", s->key, first + i + 1,
                        p->type == REDIS_REPLY_STRING ? "of the wrong length" : "missing");
        if (i < wanted) memcpy(out + (size_t)i * psz, p->str, psz);
        if (pagemap_put(&s->cache, first + i, p->str, psz) != 0) pagemap_reset(&s->cache); /* no room: forget */
    }
    s->stats.pages_read += count;
    return SQLITE_OK;
}

/* Reads pages first..first+count-1 from Redis in one script call; copies
 * the first `wanted` of them into out. */
static int read_remote(redis_store *s, kvsql_txn *t, uint32_t first, uint32_t count, uint32_t wanted,
                       unsigned char *out) {
    char f[16], n[16];
    snprintf(f, sizeof(f), "%u", first);
    snprintf(n, sizeof(n), "%u", count);
    const char *args[] = {s->key, s->aux[AUX_V], s->aux[AUX_READERS], s->aux[AUX_UNDO], s->aux[AUX_UNDO_IDX],
                          s->aux[AUX_LEASE], /* KEYS */
                          s->conn.token, s->snapshot, s->lease, f, n};
    redisReply *r = run_script(s, SCRIPT_READ, "read", 6, NARGS(args), args);
    if (!r) return SQLITE_IOERR;
    s->stats.reads++;
    int rc;
    if (r->type == REDIS_REPLY_ERROR) rc = kvsql_conn_reply_error(&s->conn, r, "read");
    else if (reply_is(r, 0, "old"))
        rc = fail(s, SQLITE_IOERR_SHORT_READ,
                  "key %s: snapshot too old: the transaction's snapshot (version %s) lapsed after lease_ms=%d "
                  "while others committed; begin it again",
                  s->key, s->snapshot, s->cfg.lease_ms);
    else if (!reply_is(r, 0, "ok")) rc = bad_reply(s, "read");
    else rc = take_pages(s, r, first, count, wanted, t->page_size, out);
    freeReplyObject(r);
    return rc;
}

/* How many pages to read from `at` when `run` are wanted: more while
 * the reads are sequential (a scan), doubling up to READ_AHEAD_MAX. */
static uint32_t read_ahead(redis_store *s, const kvsql_txn *t, uint32_t at, uint32_t run) {
    if (at != s->next_read) s->window = 1;
    else if (s->window < READ_AHEAD_MAX) s->window *= 2;
    uint32_t n = run > s->window ? run : s->window;
    if (n > t->npages - at) n = t->npages - at;
    return n < run ? run : n;
}

static int redis_read(kvsql_store *st, kvsql_txn *t, uint32_t first, uint32_t count, void *buf) {
    redis_store *s = (redis_store *)st;
    unsigned char *out = buf;
    if (t != s->active || t->level == KVSQL_LOCK_NONE)
        return fail(s, SQLITE_MISUSE, "read outside a transaction");
    if (!s->conn.c) return connection_gone(s);
    if (count && (first >= t->npages || count > t->npages - first))
        return fail(s, SQLITE_IOERR_SHORT_READ, "key %s: read past the end of the snapshot", s->key);
    uint32_t psz = t->page_size;
    int rc = SQLITE_OK;
    for (uint32_t i = 0; i < count && rc == SQLITE_OK;) {
        const void *p = pagemap_get(&s->cache, first + i);
        if (p) {
            memcpy(out + (size_t)i * psz, p, psz);
            i++;
            continue;
        }
        uint32_t at = first + i, run = 1;
        while (i + run < count && !pagemap_get(&s->cache, at + run)) run++;
        rc = read_remote(s, t, at, read_ahead(s, t, at, run), run, out + (size_t)i * psz);
        i += run;
    }
    s->next_read = first + count;
    return rc;
}

/* ---- lock ---------------------------------------------------------------- */

static int redis_lock(kvsql_store *st, kvsql_txn *t) {
    redis_store *s = (redis_store *)st;
    if (t != s->active || t->level == KVSQL_LOCK_NONE)
        return fail(s, SQLITE_MISUSE, "lock outside a transaction");
    if (t->level == KVSQL_LOCK_WRITE) return SQLITE_OK;
    if (!s->conn.c) return connection_gone(s);
    const char *args[] = {s->aux[AUX_V], s->aux[AUX_LEASE], /* KEYS */ s->conn.token, s->snapshot, s->lease};
    redisReply *r = run_script(s, SCRIPT_LOCK, "lock", 2, NARGS(args), args);
    if (!r) return SQLITE_IOERR;
    s->stats.locks++;
    int rc;
    if (r->type == REDIS_REPLY_ERROR) rc = kvsql_conn_reply_error(&s->conn, r, "lock");
    else if (reply_is(r, 0, "ok")) {
        rc = SQLITE_OK;
        s->holds_lease = 1;
        t->level = KVSQL_LOCK_WRITE;
    } else if (reply_is(r, 0, "busy")) {
        s->stats.busy++;
        rc = fail(s, SQLITE_BUSY, "key %s: another connection is writing", s->key);
    } else if (reply_is(r, 0, "stale")) {
        s->stats.stale++;
        rc = fail(s, SQLITE_BUSY_SNAPSHOT, "key %s: a commit landed after this transaction's snapshot", s->key);
    } else rc = bad_reply(s, "lock");
    freeReplyObject(r);
    return rc;
}

/* ---- commit -------------------------------------------------------------- */

/* After our commit landed: t's snapshot is the new state. */
static void adopt_commit(redis_store *s, kvsql_txn *t, const kvsql_batch *b, const char *version) {
    snprintf(s->snapshot, sizeof(s->snapshot), "%s", version);
    snprintf(s->member, sizeof(s->member), "%s:%s", s->snapshot, s->conn.token);
    t->version = strtoull(version, NULL, 10);
    t->npages = b->npages;
    t->page_size = b->page_size;
    /* The cache held the old version; the batch turns it into the new. */
    if (s->cache.count + b->count > CACHE_MAX_PAGES) pagemap_reset(&s->cache);
    for (uint32_t i = 0; i < b->count; i++)
        if (pagemap_put(&s->cache, b->pages[i].index, b->pages[i].data, b->page_size) != 0) {
            pagemap_reset(&s->cache);
            break;
        }
    pagemap_drop_from(&s->cache, b->npages);
    s->cache_version = t->version;
    s->gap = 0; /* the commit stored the lock-byte page, or cut below it */
    s->cache_hlen = b->npages;
}

static int commit_outcome(redis_store *s, kvsql_txn *t, const kvsql_batch *b, const redisReply *r) {
    if (r->type == REDIS_REPLY_ERROR) return kvsql_conn_reply_error(&s->conn, r, "commit");
    if (reply_is(r, 0, "ok") && r->elements == 2 && r->element[1]->type == REDIS_REPLY_STRING) {
        s->stats.commits++;
        s->stats.pages_written += b->count;
        adopt_commit(s, t, b, r->element[1]->str);
        return SQLITE_OK;
    }
    if (reply_is(r, 0, "lease")) {
        s->holds_lease = 0;
        return fail(s, SQLITE_IOERR_LOCK,
                    "key %s: the write lease was lost (it lapsed after lease_ms=%d and maybe another writer took "
                    "it); nothing was written",
                    s->key, s->cfg.lease_ms);
    }
    if (reply_is(r, 0, "stale")) {
        s->stats.stale++;
        return fail(s, SQLITE_BUSY_SNAPSHOT, "key %s: a commit landed after this transaction's snapshot", s->key);
    }
    return bad_reply(s, "commit");
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
        fail(s, SQLITE_OK, "key %s: the commit landed on the master at %s, but WAIT %s failed: not known to be on "
                           "any replica",
             s->key, s->conn.where, n);
    else
        fail(s, SQLITE_OK, "key %s: the commit landed on the master at %s, but only %lld of wait=%s replicas "
                           "acknowledged it within wait_timeout_ms=%s",
             s->key, s->conn.where, got, n, ms);
}

static int redis_commit(kvsql_store *st, kvsql_txn *t, const kvsql_batch *b) {
    redis_store *s = (redis_store *)st;
    if (t != s->active || t->level != KVSQL_LOCK_WRITE)
        return fail(s, SQLITE_IOERR_LOCK, "key %s: this connection is not the writer", s->key);
    if (!s->conn.c) return connection_gone(s);
    char nkeys[8], npages[16], gap[KVSQL_FIELD_MAX] = "";
    uint32_t lb = kvsql_lock_byte_index(b->page_size);
    int fill = fills_gap(s, b, lb);
    char *idx = malloc((size_t)(b->count + 1) * KVSQL_FIELD_MAX);
    void *zeros = fill ? calloc(1, b->page_size) : NULL;
    kvsql_call k;
    int ok = kvsql_call_init(&k, 18 + 2 * (int)b->count) == 0 && idx && (zeros || !fill);
    if (!ok) {
        kvsql_call_free(&k);
        free(idx);
        free(zeros);
        return fail(s, SQLITE_NOMEM, "out of memory");
    }
    snprintf(npages, sizeof(npages), "%u", b->npages);
    if (s->gap) kvsql_field_name(gap, lb);
    kvsql_call_script(&k, 1 + AUX_COUNT, nkeys);
    kvsql_call_str(&k, s->key);
    for (int i = 0; i < AUX_COUNT; i++) kvsql_call_str(&k, s->aux[i]); /* T:v T:lease T:readers T:undo... T:log */
    kvsql_call_str(&k, s->conn.token);
    kvsql_call_str(&k, s->snapshot);
    kvsql_call_str(&k, s->lease);
    kvsql_call_str(&k, npages);
    kvsql_call_str(&k, gap);
    for (uint32_t i = 0; i < b->count + (uint32_t)fill; i++) {
        char *p = idx + (size_t)i * KVSQL_FIELD_MAX;
        kvsql_call_add(&k, p, kvsql_field_name(p, i < b->count ? b->pages[i].index : lb));
        kvsql_call_add(&k, i < b->count ? b->pages[i].data : zeros, b->page_size);
    }
    redisReply *r = kvsql_conn_run_script(&s->conn, SCRIPT_COMMIT, &k);
    kvsql_call_free(&k);
    free(idx);
    free(zeros);
    if (!r)
        return kvsql_conn_lost(&s->conn, SQLITE_IOERR,
                               "commit (its fate is unknown: it landed whole or not at all, the next "
                               "transaction shows which)");
    int rc = commit_outcome(s, t, b, r);
    freeReplyObject(r);
    if (rc == SQLITE_OK && s->cfg.wait_replicas > 0) wait_for_replicas(s);
    return rc;
}

/* ---- unlock, errmsg, destroy --------------------------------------------- */

static void redis_unlock(kvsql_store *st, kvsql_txn *t, int level) {
    redis_store *s = (redis_store *)st;
    if (t != s->active || level >= t->level) return;
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
    for (int i = 0; i < AUX_COUNT; i++) free(s->aux[i]);
}

static void redis_destroy(kvsql_store *st) {
    redis_store *s = (redis_store *)st;
    if (s->member[0]) send_end(s, s->member); /* the registration a reader left */
    kvsql_conn_close(&s->conn); /* after the end scripts' replies: they surely ran */
    pagemap_clear(&s->cache);
    free_names(s);
    free(s);
}

static const kvsql_store_methods redis_methods = {
    redis_begin, redis_read, redis_lock, redis_commit, redis_unlock, redis_errmsg, redis_destroy,
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
    pagemap_init(&s->cache);
    s->cfg = *cfg;
    snprintf(s->lease, sizeof(s->lease), "%d", cfg->lease_ms);
    s->key = strdup(key);
    int ok = s->key != NULL;
    for (int i = 0; i < AUX_COUNT; i++) ok = (s->aux[i] = aux_name(key, aux_suffix[i])) != NULL && ok;
    if (!ok) {
        free_names(s);
        free(s);
        return SQLITE_NOMEM;
    }
    kvsql_conn_init(&s->conn, s->key, &s->cfg, &s->stats, forget_connection, s);
    *out = &s->base;
    return SQLITE_OK;
}

int kvsql_redis_store_stats(kvsql_store *st, kvsql_redis_stats *out) {
    if (!st || st->m != &redis_methods) return -1;
    *out = ((redis_store *)st)->stats;
    return 0;
}
