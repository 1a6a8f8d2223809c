/* store_stage.c - big commits of a `redis` VFS store (redis_store.h),
 * staged in short scripts so that Redis never stalls on them. Called by
 * store_redis.c's commit. */
#include "client/hash/redis_store.h"
#include "sqlite.h"

#include "format.h"

#include <stdio.h>
#include <string.h>

/* ---- big commits: staged ------------------------------------------------- */

/* A commit of more than stage_kb= of pages in one script would hold Redis
 * for as long as the script runs (about 0.2 s for 40 MB on loopback) while
 * every other client waits. Such a commit is staged instead
 * (docs/FORMAT.md, "Big commits"), in short scripts (client/hash/scripts.c):
 *   upload  its pages into T:stage, STAGE_CHUNK per script, each saving the
 *           undo of the pages it overwrites;
 *   copy    the pages of K it does not write into T:stage, STAGE_COPY per
 *           script;
 *   publish T:stage becomes K (two RENAMEs), T:v grows: the commit, atomic.
 * Every step after the first, and the publish, first checks that T:stage
 * holds exactly the fields the steps before left (`have`, the HLEN each
 * step answers): a T:stage deleted or evicted between steps (a copy would
 * refill it from the old pages) fails the commit with nothing published.
 * Every script checks the lease (and renews it), so a writer that lost it
 * never publishes, and the next staged writer drops a T:stage left
 * behind (which also lapses by itself after STAGE_TTL_LEASES leases). Not
 * used while capture is on (the commit script publishes the changes), on
 * a hash with the lock-byte gap, or when the commit shortens the
 * database: those commit in one script. */
#define STAGE_CHUNK 256
#define STAGE_COPY 1024
#define STAGE_TTL_LEASES 6

int rs_stage_wanted(const redis_store *s, const kvsql_txn *t, const kvsql_batch *b, const void *log) {
    return s->cfg.stage_kb > 0 && !log && !s->gap && b->npages >= t->npages &&
           (uint64_t)b->count * b->page_size > (uint64_t)s->cfg.stage_kb * 1024;
}

/* Runs a staging script. 1 when it answered {'ok', HLEN of T:stage}
 * (freed; *have is that HLEN); else 0 with its reply in *r (NULL: the
 * connection broke). */
static int stage_step(redis_store *s, int id, kvsql_call *k, redisReply **r, long long *have) {
    *r = kvsql_conn_run_script(&s->conn, id, k);
    if (!*r || !rs_reply_is(*r, 0, "ok") || (*r)->elements != 2) return 0;
    *have = rs_reply_int((*r)->element[1]);
    freeReplyObject(*r);
    *r = NULL;
    return 1;
}

/* Uploads the pages of b from `from`, STAGE_CHUNK of them. */
static int stage_put(redis_store *s, const kvsql_txn *t, const kvsql_batch *b, uint32_t from, const char *ttl,
                     redisReply **r, long long *have) {
    uint32_t n = b->count - from < STAGE_CHUNK ? b->count - from : STAGE_CHUNK;
    char nkeys[8], old[16], hv[24], names[STAGE_CHUNK][KVSQL_FIELD_MAX];
    const char *argv[3 + SCRIPT_KEYS_MAX + 7 + 2 * STAGE_CHUNK];
    size_t lens[3 + SCRIPT_KEYS_MAX + 7 + 2 * STAGE_CHUNK];
    kvsql_call k = {0, argv, lens};
    snprintf(old, sizeof(old), "%u", t->npages);
    snprintf(hv, sizeof(hv), "%lld", *have);
    const char *head[] = {s->conn.token, s->snapshot, s->lease, from == 0 ? "1" : "0", old, ttl, hv};
    rs_call_keys(s, &k, SCRIPT_STAGE_PUT, nkeys);
    for (int i = 0; i < NARGS(head); i++) kvsql_call_str(&k, head[i]);
    for (uint32_t i = 0; i < n; i++) {
        kvsql_call_add(&k, names[i], kvsql_field_name(names[i], b->pages[from + i].index));
        kvsql_call_add(&k, b->pages[from + i].data, b->page_size);
    }
    return stage_step(s, SCRIPT_STAGE_PUT, &k, r, have);
}

/* Copies pages from..from+STAGE_COPY-1 (below `to`) of K it lacks. */
static int stage_copy(redis_store *s, uint32_t from, uint32_t to, const char *ttl, redisReply **r, long long *have) {
    char nkeys[8], a[16], z[16], hv[24];
    snprintf(hv, sizeof(hv), "%lld", *have);
    snprintf(a, sizeof(a), "%u", from);
    snprintf(z, sizeof(z), "%u", to - from < STAGE_COPY ? to : from + STAGE_COPY);
    const char *argv[3 + SCRIPT_KEYS_MAX + 6];
    size_t lens[3 + SCRIPT_KEYS_MAX + 6];
    kvsql_call k = {0, argv, lens};
    const char *args[] = {s->conn.token, s->lease, a, z, ttl, hv};
    rs_call_keys(s, &k, SCRIPT_STAGE_COPY, nkeys);
    for (int i = 0; i < NARGS(args); i++) kvsql_call_str(&k, args[i]);
    return stage_step(s, SCRIPT_STAGE_COPY, &k, r, have);
}

/* The publish script's reply (NULL: the connection broke). */
static redisReply *stage_publish(redis_store *s, const kvsql_batch *b, long long have) {
    char nkeys[8], npages[16], hv[24], newid[KVSQL_ID_HEX + 1];
    snprintf(npages, sizeof(npages), "%u", b->npages);
    snprintf(hv, sizeof(hv), "%lld", have);
    kvsql_random_hex(newid, KVSQL_ID_HEX / 2);
    const char *argv[3 + SCRIPT_KEYS_MAX + 6];
    size_t lens[3 + SCRIPT_KEYS_MAX + 6];
    kvsql_call k = {0, argv, lens};
    const char *args[] = {s->conn.token, s->snapshot, s->lease, npages, newid, hv};
    rs_call_keys(s, &k, SCRIPT_STAGE_PUBLISH, nkeys);
    for (int i = 0; i < NARGS(args); i++) kvsql_call_str(&k, args[i]);
    return kvsql_conn_run_script(&s->conn, SCRIPT_STAGE_PUBLISH, &k);
}

/* Commits b in steps. The reply for commit_outcome: the publish's, or the
 * step's that refused ({'lease'}, {'stale', v}, an error); NULL when the
 * connection broke (nothing was published if it broke before the publish:
 * the next transaction shows which). */
redisReply *rs_commit_staged(redis_store *s, const kvsql_txn *t, const kvsql_batch *b) {
    char ttl[24];
    redisReply *r = NULL;
    int ok = 1;
    long long have = 0; /* the fields T:stage holds after the last step */
    snprintf(ttl, sizeof(ttl), "%lld", (long long)s->cfg.lease_ms * STAGE_TTL_LEASES);
    for (uint32_t i = 0; ok && i < b->count; i += STAGE_CHUNK) ok = stage_put(s, t, b, i, ttl, &r, &have);
    for (uint32_t i = 0; ok && i < t->npages; i += STAGE_COPY) ok = stage_copy(s, i, t->npages, ttl, &r, &have);
    if (!ok) return r;
    r = stage_publish(s, b, have);
    if (r && rs_reply_is(r, 0, "ok")) s->stats.staged_commits++;
    return r;
}

