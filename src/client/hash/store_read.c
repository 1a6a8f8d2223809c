/* store_read.c - the reads of a `redis` VFS store (redis_store.h): one
 * round trip per miss, whatever its count, read-ahead while SQLite scans
 * (client/cache/readahead.c), a scan's next read sent before SQLite asks, and
 * reads without a script while the reader's registration is fresh. The
 * pages read are kept in the store's page cache (client/cache/pagecache.c).
 * Called by the VFS through store_redis.c's methods. */
#include "client/hash/redis_store.h"
#include "sqlite.h"

#include "format.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- read ---------------------------------------------------------------- */

/* Copies the first `wanted` pages of a read's answer (el[i] is page
 * idx[i], n of them) into out and caches all n (the rest were read ahead). */
static int take_pages(redis_store *s, redisReply *const *el, const uint32_t *idx, uint32_t n, uint32_t wanted,
                      uint32_t psz, unsigned char *out) {
    uint32_t gap = s->gap ? kvsql_lock_byte_index(psz) : UINT32_MAX;
    for (uint32_t i = 0; i < n; i++) {
        const redisReply *p = el[i];
        if (idx[i] == gap && p->type == REDIS_REPLY_NIL) {
            if (i < wanted) memset(out + (size_t)i * psz, 0, psz);
            continue;
        }
        if (p->type != REDIS_REPLY_STRING || p->len != psz)
            return rs_fail(s, SQLITE_CORRUPT, "key %s: page %u is %s", s->key, idx[i] + 1,
                        p->type == REDIS_REPLY_STRING ? "of the wrong length" : "missing");
        if (i < wanted) memcpy(out + (size_t)i * psz, p->str, psz);
        pagecache_put(&s->cache, idx[i], p->str, psz); /* not kept when out of memory: read again */
    }
    s->stats.pages_read += n;
    return SQLITE_OK;
}

static int read_outcome(redis_store *s, const redisReply *r, const uint32_t *idx, uint32_t n, uint32_t wanted,
                        uint32_t psz, unsigned char *out) {
    if (r->type == REDIS_REPLY_ERROR) return kvsql_conn_reply_error(&s->conn, r, "read");
    int refused = rs_refusal(s, r);
    if (refused >= 0) return refused;
    if (rs_reply_is(r, 0, "old"))
        return rs_fail(s, SQLITE_IOERR_SHORT_READ,
                    "key %s: snapshot too old: the transaction's snapshot (version %s) lapsed after lease_ms=%d "
                    "while others committed, or its history is gone (the database was replaced or restored, "
                    "its undo records deleted); begin it again",
                    s->key, s->snapshot, s->cfg.lease_ms);
    if (!rs_reply_is(r, 0, "ok") || r->elements != (size_t)n + 1) return rs_bad_reply(s, "read");
    s->renewed_ms = rs_monotonic_ms();
    return take_pages(s, r->element + 1, idx, n, wanted, psz, out);
}

/* ---- reads without a script ----
 * For lease_ms/4 after a read script renewed the reader's registration
 * (and the lease when ours), a read needs no script: HMGET of the pages,
 * then MGET T:v T:id, sent together (one round trip). The pages are those
 * of the snapshot exactly when the identity (T:id when it names T:v,
 * docs/FORMAT.md "Identity") is still the snapshot's after the HMGET:
 * every commit changes the pages, T:v and T:id in one step, and no two
 * commits get the same id, so a version reached again by another history
 * (FLUSHALL, a restore, a failover) is never taken for the snapshot. Else (a
 * commit came, an error, a redirection) the script reads them. Redis runs
 * HMGET without Lua's copies: half the server's work of a scan. */
#define FAST_NO (-1) /* read_fast: use the script (no SQLite code) */

static int fast_ok(const redis_store *s) {
    return s->conn.c && s->conn.pending == 0 &&
           (s->plain || rs_monotonic_ms() - s->renewed_ms < s->cfg.lease_ms / 4.0);
}

/* Queues HMGET K idx... and MGET T:v T:id. 0, or -1 when out of memory (then
 * the connection is dropped: half of it may have been queued). */
static int append_fast(redis_store *s, const uint32_t *idx, uint32_t n) {
    char *names = malloc((size_t)n * 11);
    kvsql_call k = {0, NULL, NULL};
    int rc = -1;
    if (names && kvsql_call_init(&k, 2 + (int)n) == 0) {
        kvsql_call_str(&k, "HMGET");
        kvsql_call_str(&k, s->key);
        for (uint32_t i = 0; i < n; i++) {
            char *f = names + (size_t)i * 11;
            kvsql_call_add(&k, f, (size_t)snprintf(f, 11, "%u", idx[i]));
        }
        const char *get[] = {"MGET", s->keys[SKEY_T_V], s->keys[SKEY_T_ID]};
        rc = kvsql_link_append_argv(s->conn.c, k.argc, k.argv, k.lens) == REDIS_OK &&
                     kvsql_link_append_argv(s->conn.c, 3, get, NULL) == REDIS_OK
                 ? 0
                 : -1;
    }
    kvsql_call_free(&k);
    free(names);
    if (rc != 0) kvsql_conn_drop(&s->conn);
    return rc;
}

/* A read of a transaction begun without scripts (store_plain.c) cannot
 * fall back on the read script: an error reply is the read's error, and a
 * version that moved ends the snapshot. FAST_NO when the pages may be
 * taken. */
static int plain_outcome(redis_store *s, const redisReply *pages, int same) {
    if (pages->type == REDIS_REPLY_ERROR) return kvsql_conn_reply_error(&s->conn, pages, "read");
    if (same) return FAST_NO;
    return rs_fail(s, SQLITE_IOERR_SHORT_READ,
                   "key %s: snapshot too old: another client committed after this transaction's snapshot (version "
                   "%s), which is not registered (the server refused the begin script: a user that may only read, "
                   "or maxmemory reached); begin it again",
                   s->key, s->snapshot);
}

/* Whether MGET T:v T:id answered the snapshot's identity: T:id when it
 * names the version T:v holds, else T:v alone ("0" when missing). */
static int ident_is_snapshot(const redis_store *s, const redisReply *r) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) return 0;
    const redisReply *v = r->element[0], *id = r->element[1];
    const char *ver = v->type == REDIS_REPLY_STRING ? v->str : v->type == REDIS_REPLY_NIL ? "0" : NULL;
    if (!ver) return 0;
    size_t vl = strlen(ver);
    if (id->type == REDIS_REPLY_STRING && strncmp(id->str, ver, vl) == 0 && id->str[vl] == ':')
        return strcmp(id->str, s->snapshot) == 0;
    return strcmp(ver, s->snapshot) == 0;
}

/* Reads the two replies of append_fast and takes the pages when they are
 * the snapshot's: SQLITE_OK, FAST_NO, or SQLITE_IOERR (connection lost). */
static int take_fast(redis_store *s, const uint32_t *idx, uint32_t n, uint32_t wanted, uint32_t psz,
                     unsigned char *out) {
    redisReply *pages = NULL, *v = NULL;
    if (kvsql_link_get_reply(s->conn.c, &pages) != REDIS_OK || kvsql_link_get_reply(s->conn.c, &v) != REDIS_OK) {
        freeReplyObject(pages);
        return kvsql_conn_lost(&s->conn, SQLITE_IOERR, "read");
    }
    int rc = FAST_NO;
    int same = ident_is_snapshot(s, v);
    if (s->plain) rc = plain_outcome(s, pages, same); /* no script to fall back on */
    if (rc == FAST_NO && same && pages->type == REDIS_REPLY_ARRAY && pages->elements == n) {
        char keep[sizeof(s->conn.err)];
        memcpy(keep, s->conn.err, sizeof(keep));
        rc = take_pages(s, pages->element, idx, n, wanted, psz, out);
        if (rc != SQLITE_OK && !s->plain) { /* a corrupt page: the script says it */
            memcpy(s->conn.err, keep, sizeof(keep));
            rc = FAST_NO;
        }
    }
    freeReplyObject(pages);
    freeReplyObject(v);
    return rc;
}

/* One round trip: SQLITE_OK, FAST_NO, or an error code. */
static int read_fast(redis_store *s, const uint32_t *idx, uint32_t n, uint32_t wanted, uint32_t psz,
                     unsigned char *out) {
    if (append_fast(s, idx, n) != 0) return rs_fail(s, SQLITE_NOMEM, "out of memory");
    s->stats.round_trips++;
    s->stats.reads++;
    return take_fast(s, idx, n, wanted, psz, out);
}

/* The read script's call for pages idx[0..n-1]; names holds their
 * decimal text (n * 11 bytes). 0, or -1 when out of memory. */
static int read_call(redis_store *s, const uint32_t *idx, uint32_t n, kvsql_call *k, char *names, char *nkeys) {
    if (kvsql_call_init(k, 6 + SCRIPT_KEYS_MAX + (int)n) != 0) return -1;
    rs_call_keys(s, k, SCRIPT_READ, nkeys);
    kvsql_call_str(k, s->conn.token);
    kvsql_call_str(k, s->snapshot);
    kvsql_call_str(k, s->lease);
    for (uint32_t i = 0; i < n; i++) {
        char *f = names + (size_t)i * 11;
        kvsql_call_add(k, f, (size_t)snprintf(f, 11, "%u", idx[i]));
    }
    return 0;
}

/* Reads pages idx[0..n-1] from Redis in one script call; copies the
 * first `wanted` of them into out. */
static int read_remote(redis_store *s, kvsql_txn *t, const uint32_t *idx, uint32_t n, uint32_t wanted,
                       unsigned char *out) {
    char nkeys[8], *names = malloc((size_t)n * 11);
    kvsql_call k = {0, NULL, NULL};
    if (!names || read_call(s, idx, n, &k, names, nkeys) != 0) {
        kvsql_call_free(&k);
        free(names);
        return rs_fail(s, SQLITE_NOMEM, "out of memory");
    }
    redisReply *r = kvsql_conn_run_script(&s->conn, SCRIPT_READ, &k);
    kvsql_call_free(&k);
    free(names);
    if (!r) return kvsql_conn_lost(&s->conn, SQLITE_IOERR, "read");
    s->stats.reads++;
    int rc = read_outcome(s, r, idx, n, wanted, t->page_size, out);
    freeReplyObject(r);
    return rc;
}

/* Read-ahead (client/cache/readahead.c): a miss that follows a scan reads up
 * to AHEAD_MAX pages, or a quarter of the cache. Once the window is full,
 * the scan's next read is sent before SQLite asks for it (prefetch_next),
 * so that Redis reads while SQLite works. */
static uint32_t ahead_max(const redis_store *s, const kvsql_txn *t) {
    uint32_t q = pagecache_capacity(&s->cache, t->page_size) / 4;
    return q < 1 ? 1 : q < AHEAD_MAX ? q : AHEAD_MAX;
}

/* Sends the scan's next read (after page `at` SQLite just got, noted)
 * without waiting for it, when the window is full. */
static void prefetch_next(redis_store *s, const kvsql_txn *t, uint32_t at) {
    if (s->npre || !s->conn.c || s->conn.pending > 0) return;
    s->pre_fast = fast_ok(s);
    if (!s->pre_fast && !s->conn.sha[SCRIPT_READ][0]) return;
    uint32_t n = readahead_next(&s->ra, &s->cache, t->npages, ahead_max(s, t), at, s->pre);
    if (n == 0) return;
    if (s->pre_fast) {
        if (append_fast(s, s->pre, n) != 0) return;
        if (kvsql_link_flush(s->conn.c) != REDIS_OK) {
            kvsql_conn_drop(&s->conn);
            return;
        }
        s->conn.pending += 2; /* read here (take_prefetch) or dropped by the next exchange (client/net/conn.c) */
    } else {
        char nkeys[8], *names = malloc((size_t)n * 11);
        kvsql_call k = {0, NULL, NULL};
        if (names && read_call(s, s->pre, n, &k, names, nkeys) == 0) {
            k.argv[0] = "EVALSHA";
            k.argv[1] = s->conn.sha[SCRIPT_READ];
            kvsql_conn_send(&s->conn, k.argc, k.argv);
        }
        kvsql_call_free(&k);
        free(names);
    }
    if (s->conn.c && s->conn.pending > 0) {
        s->npre = n;
        s->stats.reads++;
        s->pre_mark = ++s->stats.round_trips;
        s->pre_conn = s->conn.connections;
    }
}

/* Takes the reply of the read prefetch_next sent, when nothing else read
 * it since: its pages join the cache. A refusal (a snapshot too old, an
 * error) is left for the read SQLite's next miss makes. SQLITE_IOERR when
 * the connection broke. */
static int take_prefetch(redis_store *s, const kvsql_txn *t) {
    uint32_t n = s->npre;
    s->npre = 0;
    if (!s->conn.c || s->conn.connections != s->pre_conn || s->stats.round_trips != s->pre_mark ||
        s->conn.pending < (s->pre_fast ? 2 : 1))
        return SQLITE_OK; /* another exchange read and dropped it */
    if (s->pre_fast) {
        s->conn.pending -= 2;
        int rc = take_fast(s, s->pre, n, 0, t->page_size, NULL);
        return rc == FAST_NO ? SQLITE_OK : rc;
    }
    redisReply *r = NULL;
    if (kvsql_link_get_reply(s->conn.c, &r) != REDIS_OK) return kvsql_conn_lost(&s->conn, SQLITE_IOERR, "read");
    s->conn.pending--;
    if (r && rs_reply_is(r, 0, "ok") && r->elements == (size_t)n + 1) {
        char keep[sizeof(s->conn.err)];
        memcpy(keep, s->conn.err, sizeof(keep));
        s->renewed_ms = rs_monotonic_ms();
        if (take_pages(s, r->element + 1, s->pre, n, 0, t->page_size, NULL) != SQLITE_OK) /* the next read says it */
            memcpy(s->conn.err, keep, sizeof(keep));
    }
    freeReplyObject(r);
    return SQLITE_OK;
}

/* Page `at` and the `run` - 1 after it, none cached, into out. */
static int fetch(redis_store *s, kvsql_txn *t, uint32_t at, uint32_t run, unsigned char *out) {
    uint32_t idx[1 + AHEAD_MAX], *plan = run > 1 ? malloc((size_t)(run + AHEAD_MAX) * sizeof(*plan)) : idx;
    if (!plan) return rs_fail(s, SQLITE_NOMEM, "out of memory");
    uint32_t n = readahead_plan(&s->ra, &s->cache, t->npages, ahead_max(s, t), at, run, plan);
    if (s->plain && s->conn.pending > 0 && kvsql_conn_drain(&s->conn) != 0) { /* an end script's reply first */
        if (plan != idx) free(plan);
        return kvsql_conn_lost(&s->conn, SQLITE_IOERR, "read");
    }
    int rc = fast_ok(s) ? read_fast(s, plan, n, run, t->page_size, out) : FAST_NO;
    if (rc == FAST_NO) rc = read_remote(s, t, plan, n, run, out);
    if (plan != idx) free(plan);
    return rc;
}

int rs_read(kvsql_store *st, kvsql_txn *t, uint32_t first, uint32_t count, void *buf) {
    redis_store *s = (redis_store *)st;
    unsigned char *out = buf;
    if (t != s->active || t->level == KVSQL_LOCK_NONE)
        return rs_fail(s, SQLITE_MISUSE, "read outside a transaction");
    if (!s->conn.c) return rs_connection_gone(s);
    if (count && (first >= t->npages || count > t->npages - first))
        return rs_fail(s, SQLITE_IOERR_SHORT_READ, "key %s: read past the end of the snapshot", s->key);
    uint32_t psz = t->page_size;
    int rc = SQLITE_OK;
    for (uint32_t i = 0; i < count && rc == SQLITE_OK;) {
        const void *p = pagecache_get(&s->cache, first + i);
        if (!p && s->npre) {
            rc = take_prefetch(s, t);
            p = pagecache_get(&s->cache, first + i);
        }
        if (p) {
            memcpy(out + (size_t)i * psz, p, psz);
            i++;
            continue;
        }
        if (rc != SQLITE_OK) break;
        uint32_t at = first + i, run = 1;
        while (i + run < count && !pagecache_has(&s->cache, at + run)) run++;
        rc = fetch(s, t, at, run, out + (size_t)i * psz);
        i += run;
    }
    for (uint32_t i = 0; i < count && rc == SQLITE_OK; i++)
        readahead_note(&s->ra, first + i, out + (size_t)i * psz, psz);
    if (rc == SQLITE_OK && count) prefetch_next(s, t, first + count - 1);
    return rc;
}

