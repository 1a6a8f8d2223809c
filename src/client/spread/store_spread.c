/* store_spread.c - the spread store (store_spread.h; docs/FORMAT.md, "The spread
 * layout"): implements src/store.h on a page map in the home slot and
 * immutable page copies in run keys.
 *
 * Promises, each argued in docs/FORMAT.md:
 *   - a commit is visible whole or not at all: only the publish script
 *     changes the map, T:v and T:id, in one atomic step on the home slot;
 *   - a copy is never changed: it is written under the commit's own random
 *     copy id, which only that commit's publish can make visible;
 *   - a read returns the snapshot's bytes or fails "snapshot too old"
 *     (SQLITE_IOERR_SHORT_READ): the copy ids come from the map as of the
 *     snapshot (cached along T:log, or read with the undo records), and a
 *     copy once collected answers nil, never other bytes.
 * Every request goes through client/spread/io.c (the home slot's
 * connection, or every node of a Redis Cluster at once). Pages read or written are cached with their copy id
 * (valid forever: a copy never changes); the map as of the snapshot is
 * cached and kept across other clients' commits by following T:log.
 *
 * Test knob: KVSQL_TEST_SPREAD_STOP=lock|copies makes the committing
 * process stop itself (SIGSTOP), once, before it writes its copies, or
 * after it wrote them and before the publish: the fault tests stop a writer
 * exactly at a step boundary this way (tests/test_spread.py, test_spread_cluster.py,
 * tools/soak_spread.py). */
#include "client/spread/store_spread.h"
#include "client/cache/pagecache.h"
#include "client/cache/readahead.h"
#include "client/spread/io.h"
#include "client/spread/scripts.h"
#include "client/hash/scripts.h"
#include "client/capture.h"
#include "format.h"
#include "sqlite.h"

#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* The auxiliary keys, in one order (names from format.h). */
enum {
    SA_V, SA_LEASE, SA_READERS, SA_UNDO, SA_UNDO_IDX, SA_UNDO_VER, SA_LOG, SA_ID, SA_GC, SA_PENDING, SA_QUEUE,
    SA_CHANGES_CFG, SA_CHANGES, SA_COUNT
};
static const char *const sa_suffix[SA_COUNT] = {
    KVSQL_AUX_VERSION, KVSQL_AUX_LEASE,   KVSQL_AUX_READERS, KVSQL_AUX_UNDO,    KVSQL_AUX_UNDO_IDX, KVSQL_AUX_UNDO_VER,
    KVSQL_AUX_LOG,     KVSQL_AUX_ID,      KVSQL_AUX_GC,      KVSQL_AUX_PENDING, KVSQL_AUX_QUEUE,    KVSQL_AUX_CHANGES_CONFIG,
    KVSQL_AUX_CHANGES,
};

/* Pages one read brings at most beyond those asked (client/cache/readahead.c),
 * and the copy ids one read asks the home slot for at most. */
#define READ_AHEAD_MAX 256
#define IDS_MAX 1024

/* An intent names at most this many pages; more: "*" (collected by a scan). */
#define INTENT_PAGES 256
/* An intent's copies are garbage this many leases after they were written
 * unpublished: the writer could publish only while its lease lived (the
 * rest covers clock skew between client and server). */
#define INTENT_LEASES 6

typedef struct spread_store {
    kvsql_store base;
    kvsql_redis_config cfg;
    char lease[16];        /* cfg.lease_ms in decimal */
    char *key;
    char *aux[SA_COUNT];
    sp_io io;
    kvsql_redis_stats stats;
    kvsql_txn *active;
    char snapshot[48];     /* the snapshot's identity */
    char member[96];       /* our reader registration, "" when none */
    int holds_lease;
    int leased_txn;        /* the transaction held the lease at some point: its end drops the registration */
    int intent;            /* write-intent hint (client/hooks.c): the next begin takes the lease */
    kvsql_capture *capture; /* the connection's hooks (client/hooks.c), ours */
    int capture_on;         /* the begin saw T:changes:cfg: commits publish their row changes */
    int committed;          /* this transaction committed once already (capture: a second commit) */
    /* The map as of map_ident: copy ids of pages (have[i] says known). */
    char (*map)[KVSQL_ID_HEX];
    unsigned char *have;
    uint32_t map_cap;
    char map_ident[48];
    uint32_t map_connection; /* conn.connections when the map was made */
    pagecache cache;       /* page bytes then their copy id: valid forever */
    readahead ra;          /* what a miss reads ahead (client/cache/readahead.c) */
    double renewed_ms;     /* when a script last renewed the registration */
    uint32_t restarts;     /* begins that trusted no cached map */
    double log_renewed_ms; /* when a begin script last renewed T:log */
} spread_store;

static const kvsql_store_methods spread_methods;

static int fail(spread_store *s, int rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    kvsql_conn_vfail(&s->io.conn, rc, fmt, ap);
    va_end(ap);
    return rc;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static long long wall_ms(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* ---- replies ------------------------------------------------------------- */

static int is_word(const redisReply *r, size_t i, const char *w) {
    return r && r->type == REDIS_REPLY_ARRAY && i < r->elements &&
           (r->element[i]->type == REDIS_REPLY_STRING || r->element[i]->type == REDIS_REPLY_STATUS) &&
           strcmp(r->element[i]->str, w) == 0;
}

static const char *elem_str(const redisReply *r, size_t i) {
    if (!r || r->type != REDIS_REPLY_ARRAY || i >= r->elements) return NULL;
    const redisReply *e = r->element[i];
    return e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS ? e->str : NULL;
}

/* The refusals any home script may answer before writing: damaged keys. */
static int refusal(spread_store *s, const redisReply *r, const char *what) {
    if (is_word(r, 0, "aux"))
        return fail(s, SQLITE_CORRUPT, "%s: key %s holds a %s, not a %s", what, elem_str(r, 1) ? elem_str(r, 1) : "?",
                    elem_str(r, 2) ? elem_str(r, 2) : "?", elem_str(r, 3) ? elem_str(r, 3) : "?");
    if (is_word(r, 0, "version"))
        return fail(s, SQLITE_CORRUPT, "%s: the version of %s is not a number: %s", what, s->key,
                    elem_str(r, 1) ? elem_str(r, 1) : "?");
    if (is_word(r, 0, "layout"))
        return fail(s, SQLITE_NOTADB,
                    elem_str(r, 1) && *elem_str(r, 1)
                        ? "key %s holds a database of layout %s, not spread"
                        : "key %s holds a one-hash kvsql database (layout=hash), not a spread one: open it without "
                          "layout=spread",
                    s->key, elem_str(r, 1));
    if (is_word(r, 0, "capture")) {
        s->stats.stale++;
        return fail(s, SQLITE_BUSY_SNAPSHOT, "key %s: change capture was turned on after this transaction began, so "
                    "its changes were not captured; nothing was written, run it again", s->key);
    }
    if (is_word(r, 0, "cfg"))
        return fail(s, SQLITE_ERROR, "key %s: kvsql changes: %s holds %s '%.40s', which is not valid (maxlen: 0 or a "
                    "decimal integer of at most %d digits; trim: ~ or =): nothing was written", s->key,
                    s->aux[SA_CHANGES_CFG], elem_str(r, 1) ? elem_str(r, 1) : "?", elem_str(r, 2) ? elem_str(r, 2) : "?",
                    KVSQL_CHANGES_MAXLEN_DIGITS);
    if (is_word(r, 0, "changes") && elem_str(r, 1) && strcmp(elem_str(r, 1), "exhausted") == 0)
        return fail(s, SQLITE_ERROR, "key %s: kvsql changes: the stream %s has no stream IDs left for this commit's "
                    "entries: nothing was written", s->key, s->aux[SA_CHANGES]);
    if (is_word(r, 0, "changes"))
        return fail(s, SQLITE_ERROR, "key %s: kvsql changes: %s holds a %s, not a stream: nothing was written", s->key,
                    s->aux[SA_CHANGES], elem_str(r, 1) ? elem_str(r, 1) : "?");
    return fail(s, SQLITE_IOERR, "%s: unexpected answer from %s", what, s->io.conn.where);
}

/* A script's reply, checked: NULL (with the error recorded in *rc) when the
 * connection broke or the reply is an error. */
static redisReply *checked(spread_store *s, redisReply *r, const char *what, int *rc) {
    if (!r) {
        *rc = kvsql_conn_lost(&s->io.conn, SQLITE_IOERR, what);
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        *rc = kvsql_conn_reply_error(&s->io.conn, r, what);
        freeReplyObject(r);
        return NULL;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
        *rc = fail(s, SQLITE_IOERR, "%s: unexpected answer from %s", what, s->io.conn.where);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* ---- the cached map ------------------------------------------------------ */

static void map_reset(spread_store *s) {
    if (s->have) memset(s->have, 0, s->map_cap);
    s->map_ident[0] = 0;
}

static int map_reserve(spread_store *s, uint32_t n) {
    if (n <= s->map_cap) return 0;
    uint32_t cap = s->map_cap ? s->map_cap : 64;
    while (cap < n) cap = cap > UINT32_MAX / 2 ? n : cap * 2;
    char(*m)[KVSQL_ID_HEX] = realloc(s->map, (size_t)cap * KVSQL_ID_HEX);
    if (!m) return -1;
    s->map = m;
    unsigned char *h = realloc(s->have, cap);
    if (!h) return -1;
    memset(h + s->map_cap, 0, cap - s->map_cap);
    s->have = h;
    s->map_cap = cap;
    return 0;
}

static void map_set(spread_store *s, uint32_t page, const char *id) {
    if (map_reserve(s, page + 1) != 0) return; /* not cached: read again */
    memcpy(s->map[page], id, KVSQL_ID_HEX);
    s->have[page] = 1;
}

static const char *map_get(const spread_store *s, uint32_t page) {
    return page < s->map_cap && s->have[page] ? s->map[page] : NULL;
}

static void map_cut(spread_store *s, uint32_t npages) {
    if (npages < s->map_cap) memset(s->have + npages, 0, s->map_cap - npages);
}

/* The copy id of an identity "<v>:<copy>", or NULL. */
static const char *ident_copy(const char *ident) {
    const char *c = strchr(ident, ':');
    return c && kvsql_spread_copy_id_valid(c + 1, strlen(c + 1)) ? c + 1 : NULL;
}

/* One T:log entry "<v>:<pages>;<base>;<identity>", cut in its parts:
 * pages (to the first ';'), base and identity. -1 when malformed. */
typedef struct log_entry {
    const char *pages, *pages_end, *base, *ident;
    size_t base_len;
} log_entry;

static int log_parse(const char *e, log_entry *out) {
    const char *colon = e ? strchr(e, ':') : NULL, *semi = colon ? strchr(colon, ';') : NULL;
    const char *semi2 = semi ? strchr(semi + 1, ';') : NULL;
    if (!semi2) return -1;
    out->pages = colon + 1;
    out->pages_end = semi;
    out->base = semi + 1;
    out->base_len = (size_t)(semi2 - out->base);
    out->ident = semi2 + 1;
    return 0;
}

/* Follows T:log entries r->element[from..] (newest first) from map_ident
 * to ident: 0 when they are exactly the commits between (each starting
 * from the one before, none '*'), and the map is then as of ident; -1
 * (nothing applied) otherwise. */
static int follow_log(spread_store *s, const redisReply *r, size_t from, const char *ident) {
    size_t n = r->elements - from;
    uint64_t cv = strtoull(s->map_ident, NULL, 10), v = strtoull(ident, NULL, 10);
    if (n == 0 || v <= cv || v - cv != n) return -1;
    log_entry e;
    const char *want = ident;
    size_t want_len = strlen(ident);
    for (size_t i = from; i < r->elements; i++) { /* newest first: the chain */
        if (log_parse(elem_str(r, i), &e) != 0 || strlen(e.ident) != want_len || memcmp(e.ident, want, want_len) != 0 ||
            memchr(e.pages, '*', (size_t)(e.pages_end - e.pages)) || !ident_copy(e.ident))
            return -1;
        want = e.base;
        want_len = e.base_len;
    }
    if (strlen(s->map_ident) != want_len || memcmp(s->map_ident, want, want_len) != 0) return -1;
    for (size_t i = r->elements; i-- > from;) { /* oldest first: apply */
        log_parse(elem_str(r, i), &e);
        const char *copy = ident_copy(e.ident);
        for (const char *p = e.pages; p < e.pages_end;) {
            char *end;
            unsigned long page = strtoul(p, &end, 10);
            if (end == p || page > UINT32_MAX) {
                map_reset(s);
                return -1;
            }
            map_set(s, (uint32_t)page, copy);
            p = *end == ',' ? end + 1 : end;
        }
    }
    s->stats.log_begins++;
    return 0;
}

/* ---- names ---------------------------------------------------------------- */

/* Run r's key, malloc'd. */
static char *run_key(const spread_store *s, uint32_t run) {
    size_t n = kvsql_spread_run_key(NULL, 0, s->key, strlen(s->key), run) + 1;
    char *out = malloc(n);
    if (out) kvsql_spread_run_key(out, n, s->key, strlen(s->key), run);
    return out;
}

/* ---- the page cache: bytes, then the copy id ------------------------------ */

static const unsigned char *cached_page(spread_store *s, uint32_t page, uint32_t psz, const char *copy) {
    if (s->cache.page_len != psz + KVSQL_ID_HEX) return NULL;
    const unsigned char *p = pagecache_get(&s->cache, page);
    return p && memcmp(p + psz, copy, KVSQL_ID_HEX) == 0 ? p : NULL;
}

static void cache_page(spread_store *s, uint32_t page, uint32_t psz, const void *data, const char *copy) {
    unsigned char *tmp = malloc(psz + KVSQL_ID_HEX);
    if (!tmp) return;
    memcpy(tmp, data, psz);
    memcpy(tmp + psz, copy, KVSQL_ID_HEX);
    pagecache_put(&s->cache, page, tmp, psz + KVSQL_ID_HEX);
    free(tmp);
}

/* ---- begin ----------------------------------------------------------------- */

static int parse_u32(const char *p, uint32_t *out) {
    char *end;
    unsigned long v = p ? strtoul(p, &end, 10) : 0;
    if (!p || !*p || *end || v > UINT32_MAX) return -1;
    *out = (uint32_t)v;
    return 0;
}

/* ---- warm begins ----
 * As the one-hash layout's (client/hash/store_redis.c, "warm begins";
 * docs/FORMAT.md, "The spread layout"): a begin that finds the identity
 * still the cached map's needs none of begin's writes when the reader's
 * registration "<c>:<token>" at that identity's version c is fresh (a
 * begin or read script of this connection renewed it less than
 * lease_ms/4 ago, so it outlives a transaction that reads no longer than
 * that; reads of copy ids renew it), no write intent is pending and T:log
 * was renewed less than LOG_RENEW_MS ago. Then begin sends the warm script
 * (client/spread/scripts.c), which only reads. A registration that lapses
 * anyway (a paused client) is as safe as before: collection may then take
 * a copy the snapshot needs, and its read answers nil, "snapshot too old",
 * never bytes of another snapshot. When the identity moved, the warm
 * script goes on as begin: still one round trip. */
#define LOG_RENEW_MS 60000.0

static int warm_begin_ok(const spread_store *s, double now) {
    if (s->intent || !s->member[0] || !ident_copy(s->map_ident)) return 0;
    size_t v = strcspn(s->map_ident, ":"); /* the member is "<c>:<token>" */
    return strncmp(s->member, s->map_ident, v + 1) == 0 && strcmp(s->member + v + 1, s->io.conn.token) == 0 &&
           now - s->renewed_ms < s->cfg.lease_ms / 4.0 && now - s->log_renewed_ms < LOG_RENEW_MS;
}

/* Sends the begin script, or the warm one (warm_begin_ok); its reply
 * through checked() (NULL: *rc says why). */
static redisReply *send_begin(spread_store *s, int warm, int *rc) {
    kvsql_call k;
    char nbuf[8];
    if (kvsql_call_init(&k, 16) != 0) {
        kvsql_call_free(&k);
        *rc = SQLITE_NOMEM;
        return NULL;
    }
    kvsql_call_script(&k, 8, nbuf);
    const char *keys[8] = {s->key,        s->aux[SA_V],     s->aux[SA_READERS], s->aux[SA_LOG],
                           s->aux[SA_ID], s->aux[SA_LEASE], s->aux[SA_QUEUE],   s->aux[SA_CHANGES_CFG]};
    for (int i = 0; i < 8; i++) kvsql_call_str(&k, keys[i]);
    kvsql_call_str(&k, s->io.conn.token);
    kvsql_call_str(&k, s->lease);
    if (!warm) kvsql_call_str(&k, s->member);
    kvsql_call_str(&k, s->map_ident);
    if (!warm) kvsql_call_str(&k, s->intent ? "1" : "");
    s->intent = 0;
    redisReply *r = checked(s, sp_io_script(&s->io, warm ? SP_BEGIN_WARM : SP_BEGIN, &k, s->key), "begin", rc);
    kvsql_call_free(&k);
    return r;
}

static int spread_begin(kvsql_store *st, kvsql_txn *t) {
    spread_store *s = (spread_store *)st;
    int rc = kvsql_conn_connect(&s->io.conn);
    if (rc != SQLITE_OK) return rc;
    if (s->map_connection != s->io.conn.connections) {
        map_reset(s);
        s->map_connection = s->io.conn.connections;
    }
    double now = now_ms();
    int warm = warm_begin_ok(s, now);
    redisReply *r = send_begin(s, warm, &rc);
    if (!r) return rc;
    if (is_word(r, 0, "type")) {
        rc = fail(s, SQLITE_NOTADB, "key %s holds a %s, not a kvsql database", s->key,
                  elem_str(r, 1) ? elem_str(r, 1) : "?");
        freeReplyObject(r);
        return rc;
    }
    uint32_t npages, psize;
    const char *id = elem_str(r, 1);
    int capture = is_word(r, 0, "capture") || is_word(r, 0, "capture+lease");
    int leased = is_word(r, 0, "ok+lease") || is_word(r, 0, "capture+lease");
    if (!(leased || capture || is_word(r, 0, "ok")) || r->elements < 4 || !id || strlen(id) >= sizeof(s->snapshot) ||
        parse_u32(elem_str(r, 2), &npages) != 0 || parse_u32(elem_str(r, 3), &psize) != 0) {
        rc = refusal(s, r, "begin");
        freeReplyObject(r);
        return rc;
    }
    if (npages > 0 && !kvsql_page_size_valid(psize)) {
        rc = fail(s, SQLITE_CORRUPT, "key %s: the spread map's page size is %u", s->key, (unsigned)psize);
        freeReplyObject(r);
        return rc;
    }
    int named = ident_copy(id) != NULL;
    if (!warm || strcmp(s->map_ident, id) != 0 || !named) { /* the begin script ran: it renewed both */
        s->renewed_ms = now;
        s->log_renewed_ms = now;
    }
    if (strcmp(s->map_ident, id) != 0 || !named) {
        if (!named || !s->map_ident[0] || follow_log(s, r, 4, id) != 0) {
            map_reset(s);
            s->restarts++;
        }
    }
    snprintf(s->map_ident, sizeof(s->map_ident), "%s", id);
    map_cut(s, npages);
    snprintf(s->snapshot, sizeof(s->snapshot), "%s", id);
    t->version = strtoull(id, NULL, 10);
    snprintf(s->member, sizeof(s->member), "%llu:%s", (unsigned long long)t->version, s->io.conn.token);
    freeReplyObject(r);
    t->npages = npages;
    t->page_size = npages ? psize : 0;
    t->generation = s->io.conn.connections + s->restarts;
    t->level = KVSQL_LOCK_READ;
    s->holds_lease = leased; /* taken with the snapshot: the lock needs no round trip */
    s->leased_txn = leased;
    s->capture_on = capture;
    s->committed = 0;
    if (s->capture) kvsql_capture_begin(s->capture, capture);
    s->active = t;
    readahead_begin(&s->ra);
    s->stats.begins++;
    return SQLITE_OK;
}

/* ---- read ------------------------------------------------------------------- */

/* Asks the home slot for the copy ids of pages[0..n) as of the snapshot
 * (the one-hash read script: map fields, or undo records of copy ids),
 * and caches them. Renews the registration. */
static int fetch_ids(spread_store *s, kvsql_txn *t, const uint32_t *pages, uint32_t n) {
    kvsql_call k;
    char nbuf[8];
    char(*num)[KVSQL_FIELD_MAX] = malloc((size_t)n * KVSQL_FIELD_MAX);
    if (!num || kvsql_call_init(&k, 14 + (int)n) != 0) {
        free(num);
        kvsql_call_free(&k);
        return SQLITE_NOMEM;
    }
    kvsql_call_script(&k, 8, nbuf);
    const char *keys[8] = {s->key, s->aux[SA_V], s->aux[SA_READERS], s->aux[SA_UNDO], s->aux[SA_UNDO_IDX],
                           s->aux[SA_LEASE], s->aux[SA_ID], s->aux[SA_UNDO_VER]};
    for (int i = 0; i < 8; i++) kvsql_call_str(&k, keys[i]);
    kvsql_call_str(&k, s->io.conn.token);
    kvsql_call_str(&k, s->snapshot);
    kvsql_call_str(&k, s->lease);
    for (uint32_t i = 0; i < n; i++) kvsql_call_add(&k, num[i], kvsql_field_name(num[i], pages[i]));
    int rc = SQLITE_OK;
    redisReply *r = checked(s, sp_io_hash_script(&s->io, SCRIPT_READ, &k, s->key), "read", &rc);
    kvsql_call_free(&k);
    free(num);
    if (!r) return rc;
    if (is_word(r, 0, "old")) {
        rc = fail(s, SQLITE_IOERR_SHORT_READ,
                  "snapshot too old: version %llu of %s is no longer kept (its reader registration lapsed)",
                  (unsigned long long)t->version, s->key);
    } else if (!is_word(r, 0, "ok") || r->elements != 1 + n) {
        rc = refusal(s, r, "read");
    } else {
        for (uint32_t i = 0; i < n && rc == SQLITE_OK; i++) {
            const redisReply *e = r->element[1 + i];
            if (e->type == REDIS_REPLY_STRING && kvsql_spread_copy_id_valid(e->str, e->len)) map_set(s, pages[i], e->str);
            else rc = fail(s, SQLITE_CORRUPT, "key %s: the spread map has no copy of page %u", s->key, (unsigned)pages[i]);
        }
        s->renewed_ms = now_ms();
    }
    freeReplyObject(r);
    return rc;
}

/* Reads the bytes of pages[0..n) (ids known) with one HMGET per run, all
 * in one batch, into the cache and, for those in [first, first+count),
 * into buf. */
static int fetch_bytes(spread_store *s, kvsql_txn *t, const uint32_t *pages, uint32_t n, uint32_t first,
                       uint32_t count, unsigned char *buf) {
    uint32_t psz = t->page_size, nruns = 0;
    for (uint32_t i = 0; i < n; i++)
        if (i == 0 || kvsql_spread_run(pages[i]) != kvsql_spread_run(pages[i - 1])) nruns++;
    sp_cmd *cmds = calloc(nruns, sizeof(*cmds));
    char **names = calloc(nruns, sizeof(*names));
    const char **argv = malloc(sizeof(*argv) * (2 * nruns + n));
    char(*fields)[KVSQL_SPREAD_COPY_FIELD_MAX] = malloc((size_t)n * KVSQL_SPREAD_COPY_FIELD_MAX);
    redisReply **out = calloc(nruns, sizeof(*out));
    unsigned char *replica = calloc(nruns, 1);
    int rc = cmds && names && argv && fields && out && replica ? SQLITE_OK : SQLITE_NOMEM;
    uint32_t c = 0, a = 0;
    for (uint32_t i = 0; i < n && rc == SQLITE_OK; i++) {
        if (i == 0 || kvsql_spread_run(pages[i]) != kvsql_spread_run(pages[i - 1])) {
            if (!(names[c] = run_key(s, kvsql_spread_run(pages[i])))) rc = SQLITE_NOMEM;
            cmds[c].argv = argv + a;
            cmds[c].route = names[c];
            argv[a++] = "HMGET";
            argv[a++] = names[c];
            cmds[c++].argc = 2;
        }
        kvsql_spread_copy_field(fields[i], pages[i], map_get(s, pages[i]));
        argv[a++] = fields[i];
        cmds[c - 1].argc++;
    }
    if (rc == SQLITE_OK && sp_io_read(&s->io, (int)nruns, cmds, out, replica) != 0) /* a nil: the master's */
        rc = kvsql_conn_lost(&s->io.conn, SQLITE_IOERR, "read");
    s->stats.reads++;
    uint32_t i = 0;
    for (c = 0; c < nruns && rc == SQLITE_OK; c++) {
        const redisReply *r = out[c];
        uint32_t m = (uint32_t)cmds[c].argc - 2;
        if (r->type == REDIS_REPLY_ERROR) {
            rc = kvsql_conn_reply_error(&s->io.conn, r, "read");
            break;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements != m) {
            rc = fail(s, SQLITE_IOERR, "read: unexpected answer from %s", s->io.conn.where);
            break;
        }
        for (uint32_t j = 0; j < m && rc == SQLITE_OK; j++, i++) {
            const redisReply *e = r->element[j];
            if (e->type != REDIS_REPLY_STRING)
                rc = fail(s, SQLITE_IOERR_SHORT_READ,
                          "snapshot too old: copy %s of page %u of %s was collected (version %llu is no longer kept)",
                          fields[i], (unsigned)pages[i], s->key, (unsigned long long)t->version);
            else if (e->len != psz)
                rc = fail(s, SQLITE_CORRUPT, "key %s: copy %s is %zu bytes, not a %u-byte page", s->key, fields[i],
                          e->len, (unsigned)psz);
            else {
                if (pages[i] >= first && pages[i] - first < count)
                    memcpy(buf + (size_t)(pages[i] - first) * psz, e->str, psz);
                cache_page(s, pages[i], psz, e->str, map_get(s, pages[i]));
                s->stats.pages_read++;
                s->stats.replica_pages += replica[c];
            }
        }
    }
    for (c = 0; c < nruns && out; c++) freeReplyObject(out[c]);
    for (c = 0; c < nruns && names; c++) free(names[c]);
    free(out);
    free(replica);
    free(fields);
    free(argv);
    free(names);
    free(cmds);
    return rc;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* The pages a read of first..first+count-1 brings: those, then what the
 * b-tree read-ahead plans (client/cache/readahead.c), sorted, once each. */
static uint32_t plan_read(spread_store *s, kvsql_txn *t, uint32_t first, uint32_t count, uint32_t *plan) {
    uint32_t n = readahead_plan(&s->ra, &s->cache, t->npages, READ_AHEAD_MAX, first, count, plan);
    for (uint32_t i = 0; i < count; i++) plan[n++] = first + i; /* the plan may leave out pages cached */
    qsort(plan, n, sizeof(*plan), cmp_u32);
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++)
        if (m == 0 || plan[m - 1] != plan[i]) plan[m++] = plan[i];
    return m;
}

static int spread_read(kvsql_store *st, kvsql_txn *t, uint32_t first, uint32_t count, void *vbuf) {
    spread_store *s = (spread_store *)st;
    unsigned char *buf = vbuf;
    if (!s->io.conn.c) return fail(s, SQLITE_IOERR, "read: the connection to %s was lost", s->io.conn.where);
    uint32_t psz = t->page_size;
    uint32_t *plan = malloc(sizeof(*plan) * (2 * (size_t)count + READ_AHEAD_MAX + IDS_MAX));
    if (!plan) return SQLITE_NOMEM;
    uint32_t np = plan_read(s, t, first, count, plan), *need = plan + np, n = 0;
    /* Ids: the plan's unknown ones, then more unknown ones from the first
     * on (a scan needs no id round trip for a while), IDS_MAX at most. */
    for (uint32_t i = 0; i < np; i++)
        if (!map_get(s, plan[i])) need[n++] = plan[i];
    for (uint32_t p = first; n > 0 && n < IDS_MAX && p < t->npages; p++)
        if (!map_get(s, p) && !bsearch(&p, plan, np, sizeof(*plan), cmp_u32)) need[n++] = p;
    if (n == 0 && now_ms() - s->renewed_ms > s->cfg.lease_ms / 4.0) need[n++] = first; /* renew */
    int rc = n ? fetch_ids(s, t, need, n) : SQLITE_OK;
    n = 0;
    for (uint32_t i = 0; i < np && rc == SQLITE_OK; i++) {
        uint32_t p = plan[i];
        const unsigned char *c = cached_page(s, p, psz, map_get(s, p));
        if (!c) need[n++] = p;
        else if (p >= first && p - first < count) memcpy(buf + (size_t)(p - first) * psz, c, psz);
    }
    if (rc == SQLITE_OK && n) rc = fetch_bytes(s, t, need, n, first, count, buf);
    for (uint32_t i = 0; rc == SQLITE_OK && i < count; i++)
        readahead_note(&s->ra, first + i, buf + (size_t)i * psz, psz);
    free(plan);
    return rc;
}

/* ---- lock --------------------------------------------------------------------- */

static int spread_lock(kvsql_store *st, kvsql_txn *t) {
    spread_store *s = (spread_store *)st;
    if (s->holds_lease) { /* the begin took it, atomically with the snapshot: cannot be stale */
        t->level = KVSQL_LOCK_WRITE;
        return SQLITE_OK;
    }
    if (!s->io.conn.c) return fail(s, SQLITE_IOERR, "lock: the connection to %s was lost", s->io.conn.where);
    kvsql_call k;
    char nbuf[8];
    if (kvsql_call_init(&k, 12) != 0) {
        kvsql_call_free(&k);
        return SQLITE_NOMEM;
    }
    kvsql_call_script(&k, 4, nbuf);
    kvsql_call_str(&k, s->aux[SA_V]);
    kvsql_call_str(&k, s->aux[SA_LEASE]);
    kvsql_call_str(&k, s->aux[SA_QUEUE]);
    kvsql_call_str(&k, s->aux[SA_ID]);
    kvsql_call_str(&k, s->io.conn.token);
    kvsql_call_str(&k, s->snapshot);
    kvsql_call_str(&k, s->lease);
    kvsql_call_str(&k, "");
    kvsql_call_str(&k, "");
    int rc = SQLITE_OK;
    redisReply *r = checked(s, sp_io_hash_script(&s->io, SCRIPT_LOCK, &k, s->key), "lock", &rc);
    kvsql_call_free(&k);
    if (!r) return rc;
    s->stats.locks++;
    if (is_word(r, 0, "ok")) {
        s->holds_lease = 1;
        s->leased_txn = 1;
        t->level = KVSQL_LOCK_WRITE;
    } else if (is_word(r, 0, "stale")) {
        s->stats.stale++;
        rc = fail(s, SQLITE_BUSY_SNAPSHOT, "lock: %s changed after this transaction's snapshot", s->key);
    } else if (is_word(r, 0, "busy")) {
        s->stats.busy++;
        rc = fail(s, SQLITE_BUSY, "lock: another connection is writing %s", s->key);
    } else {
        rc = refusal(s, r, "lock");
    }
    freeReplyObject(r);
    return rc;
}

/* ---- commit -------------------------------------------------------------------- */

static int by_index(const void *a, const void *b) {
    uint32_t x = ((const kvsql_page_ref *)a)->index, y = ((const kvsql_page_ref *)b)->index;
    return x < y ? -1 : x > y;
}

/* Test knob (file header): stops this process at step boundary `at`, the
 * first time it gets there (SQLite's rollback after a failed commit
 * commits again: it goes on). */
static void stop_here(const char *at) {
    static int stopped;
    const char *want = getenv("KVSQL_TEST_SPREAD_STOP");
    if (!stopped && want && strcmp(want, at) == 0) {
        stopped = 1;
        kill(getpid(), SIGSTOP);
    }
}

/* A commit's requests to its run keys: one HSET (copies) or HDEL per run
 * of the sorted pages, plus the intent or its removal first. */
typedef struct writes {
    sp_cmd *cmds;
    char **names;
    const char **argv;
    size_t *lens;
    char (*fields)[KVSQL_SPREAD_COPY_FIELD_MAX];
    uint32_t ncmds;
    char *intent;
} writes;

static void writes_free(writes *w) {
    for (uint32_t i = 0; w->names && i < w->ncmds; i++) free(w->names[i]);
    free(w->cmds);
    free(w->names);
    free(w->argv);
    free(w->lens);
    free(w->fields);
    free(w->intent);
}

/* The intent member: "<copy>:<page>,<page>,..." or, past INTENT_PAGES
 * pages (sorted), "<copy>:*<highest page + 1>". */
static char *intent_member(const kvsql_page_ref *pages, uint32_t n, const char *copy) {
    size_t cap = KVSQL_ID_HEX + 2 + (n <= INTENT_PAGES ? (size_t)n * KVSQL_FIELD_MAX : 1 + KVSQL_FIELD_MAX);
    char *m = malloc(cap + 1), *p = m;
    if (!m) return NULL;
    memcpy(p, copy, KVSQL_ID_HEX);
    p += KVSQL_ID_HEX;
    *p++ = ':';
    if (n > INTENT_PAGES) {
        *p++ = '*';
        p += kvsql_field_name(p, pages[n - 1].index + 1);
    }
    for (uint32_t i = 0; i < n && n <= INTENT_PAGES; i++) {
        if (i) *p++ = ',';
        p += kvsql_field_name(p, pages[i].index);
    }
    *p = 0;
    return m;
}

/* Builds the intent (ZADD T:pending, or ZREM when remove) and one HSET
 * (or HDEL when remove) per run of pages[0..n) (sorted). */
static int writes_make(spread_store *s, writes *w, const kvsql_page_ref *pages, uint32_t n, uint32_t psz,
                       const char *copy, int remove, char *score) {
    memset(w, 0, sizeof(*w));
    uint32_t nruns = 0;
    for (uint32_t i = 0; i < n; i++)
        if (i == 0 || kvsql_spread_run(pages[i].index) != kvsql_spread_run(pages[i - 1].index)) nruns++;
    size_t nargs = 4 + 2 * (size_t)nruns + 2 * (size_t)n;
    w->cmds = calloc(nruns + 1, sizeof(*w->cmds));
    w->names = calloc(nruns + 1, sizeof(*w->names));
    w->argv = malloc(sizeof(*w->argv) * nargs);
    w->lens = malloc(sizeof(*w->lens) * nargs);
    w->fields = malloc((size_t)(n ? n : 1) * KVSQL_SPREAD_COPY_FIELD_MAX);
    w->intent = intent_member(pages, n, copy);
    if (!w->cmds || !w->names || !w->argv || !w->lens || !w->fields || !w->intent) return SQLITE_NOMEM;
    size_t a = 0;
    sp_cmd *c = &w->cmds[0];
    c->argv = w->argv;
    c->lens = w->lens;
    c->route = s->aux[SA_PENDING];
#define ARG(p, n) (w->argv[a] = (p), w->lens[a++] = (n), c->argc++)
    ARG(remove ? "ZREM" : "ZADD", 4);
    ARG(s->aux[SA_PENDING], strlen(s->aux[SA_PENDING]));
    if (!remove) ARG(score, strlen(score));
    ARG(w->intent, strlen(w->intent));
    w->ncmds = 1;
    for (uint32_t i = 0; i < n; i++) {
        if (i == 0 || kvsql_spread_run(pages[i].index) != kvsql_spread_run(pages[i - 1].index)) {
            char *name = w->names[w->ncmds] = run_key(s, kvsql_spread_run(pages[i].index));
            if (!name) return SQLITE_NOMEM;
            c = &w->cmds[w->ncmds++];
            c->argv = w->argv + a;
            c->lens = w->lens + a;
            c->route = name;
            ARG(remove ? "HDEL" : "HSET", 4);
            ARG(name, strlen(name));
        }
        size_t flen = kvsql_spread_copy_field(w->fields[i], pages[i].index, copy);
        ARG(w->fields[i], flen);
        if (!remove) ARG(pages[i].data, psz);
    }
#undef ARG
    return SQLITE_OK;
}

/* After a refused publish: its copies can never be published (their id
 * was this commit's alone), so they and the intent go now. Best effort:
 * what a broken connection leaves, collection sweeps. */
static void drop_copies(spread_store *s, const kvsql_page_ref *pages, uint32_t n, uint32_t psz, const char *copy) {
    writes w;
    if (writes_make(s, &w, pages, n, psz, copy, 1, NULL) == SQLITE_OK) {
        redisReply **out = calloc(w.ncmds, sizeof(*out));
        if (out && sp_io_batch(&s->io, (int)w.ncmds, w.cmds, out) == 0)
            for (uint32_t i = 0; i < w.ncmds; i++) freeReplyObject(out[i]);
        free(out);
    }
    writes_free(&w);
}

/* Collects the copies named "<page>:<copy>" in r->element[from..from+n)
 * (no reader can need them): HDEL from their run keys, then ZREM from
 * T:gc, both sent without waiting, in that order. */
static void collect(spread_store *s, const redisReply *r, size_t from, size_t n) {
    for (size_t i = from; i < from + n; i++) {
        const char *m = elem_str(r, i);
        uint32_t page;
        const char *colon = m ? strchr(m, ':') : NULL;
        if (!colon || kvsql_field_parse(m, (size_t)(colon - m), &page) != 0) continue;
        char *name = run_key(s, kvsql_spread_run(page));
        if (!name) return;
        const char *hdel[3] = {"HDEL", name, m};
        sp_io_send(&s->io, 3, hdel, name);
        free(name);
    }
    for (size_t i = from; i < from + n; i++) {
        const char *zrem[3] = {"ZREM", s->aux[SA_GC], elem_str(r, i)};
        if (zrem[2]) sp_io_send(&s->io, 3, zrem, s->aux[SA_GC]);
    }
}

/* Step 3: the publish script. Its reply, or NULL (rc set). */
static redisReply *publish(spread_store *s, const kvsql_batch *b, const kvsql_page_ref *pages, const char *copy,
                           const char *intent, const change_log *log, int *rc) {
    kvsql_call k;
    char nbuf[8], npages[16], psize[16], nchanges[24] = "";
    size_t nstr = kvsql_capture_strings(log);
    char(*num)[KVSQL_FIELD_MAX] = malloc((size_t)(b->count ? b->count : 1) * KVSQL_FIELD_MAX);
    char(*counts)[4] = log && log->n ? malloc(log->n * sizeof(*counts)) : NULL;
    if (!num || (log && log->n && !counts) || kvsql_call_init(&k, 26 + (int)b->count + (int)nstr) != 0) {
        free(num);
        free(counts);
        kvsql_call_free(&k);
        *rc = SQLITE_NOMEM;
        return NULL;
    }
    kvsql_call_script(&k, 13, nbuf);
    const int order[12] = {SA_V, SA_LEASE, SA_READERS, SA_UNDO, SA_UNDO_IDX, SA_UNDO_VER, SA_LOG, SA_ID, SA_GC,
                           SA_PENDING, SA_CHANGES_CFG, SA_CHANGES};
    kvsql_call_str(&k, s->key);
    for (int i = 0; i < 12; i++) kvsql_call_str(&k, s->aux[order[i]]);
    snprintf(npages, sizeof(npages), "%u", (unsigned)b->npages);
    snprintf(psize, sizeof(psize), "%u", (unsigned)b->page_size);
    kvsql_call_str(&k, s->io.conn.token);
    kvsql_call_str(&k, s->snapshot);
    kvsql_call_str(&k, s->lease);
    kvsql_call_str(&k, npages);
    kvsql_call_str(&k, psize);
    kvsql_call_add(&k, copy, KVSQL_ID_HEX);
    kvsql_call_str(&k, intent);
    if (log) snprintf(nchanges, sizeof(nchanges), "%zu", nstr);
    kvsql_call_str(&k, nchanges);
    if (log) kvsql_capture_add_args(&k, log, counts);
    for (uint32_t i = 0; i < b->count; i++) kvsql_call_add(&k, num[i], kvsql_field_name(num[i], pages[i].index));
    redisReply *r = checked(s, sp_io_script(&s->io, SP_PUBLISH, &k, s->key), "commit", rc);
    kvsql_call_free(&k);
    free(num);
    free(counts);
    return r;
}

/* The commit landed as identity nid: the transaction's snapshot, the
 * cached map and pages follow. */
static void committed(spread_store *s, kvsql_txn *t, const kvsql_batch *b, const kvsql_page_ref *pages,
                      const char *copy, const char *nid) {
    t->version++;
    t->npages = b->npages;
    t->page_size = b->page_size;
    snprintf(s->snapshot, sizeof(s->snapshot), "%s", nid);
    snprintf(s->map_ident, sizeof(s->map_ident), "%s", nid);
    snprintf(s->member, sizeof(s->member), "%llu:%s", (unsigned long long)t->version, s->io.conn.token);
    for (uint32_t i = 0; i < b->count; i++) {
        map_set(s, pages[i].index, copy);
        cache_page(s, pages[i].index, b->page_size, pages[i].data, copy);
    }
    map_cut(s, b->npages);
    s->stats.commits++;
    s->stats.pages_written += b->count;
}

/* wait=: WAIT for the replicas, on every node the copies went to
 * (before the publish: io.c, sp_io_wait_nodes; nothing on one server)
 * and on the home slot after the publish, whose replication stream
 * carries everything written there before it. A short answer is counted
 * and said, the commit stands (as the one-hash store's, docs/LIBRARY.md
 * "Replicas"). where: which WAIT. */
static void wait_short(spread_store *s, long long got, const char *where) {
    if (got >= s->cfg.wait_replicas) return;
    s->stats.wait_short++;
    fail(s, SQLITE_OK, "key %s: the commit landed on %s, but only %lld of wait=%d replicas acknowledged %s within "
         "wait_timeout_ms=%d", s->key, s->io.conn.where, got < 0 ? 0 : got, s->cfg.wait_replicas, where,
         s->cfg.wait_timeout_ms);
}

/* wait=N, before the publish: the copies are on N replicas of every node
 * that holds some, or the commit stops here, nothing published (its copies
 * dropped). A map published over copies that a failover could lose would
 * name pages that are gone: the database, not only this commit, would be
 * unreadable there. */
static int copies_replicated(spread_store *s, const writes *w) {
    long long got = sp_io_wait_nodes(&s->io, s->cfg.wait_replicas, s->cfg.wait_timeout_ms, (int)w->ncmds, w->cmds);
    if (got >= s->cfg.wait_replicas) return SQLITE_OK;
    s->stats.wait_short++;
    return fail(s, SQLITE_IOERR_WRITE, "key %s: the commit's page copies reached only %lld of wait=%d replicas "
                "within wait_timeout_ms=%d: nothing was published (a map naming copies a failover could lose "
                "would leave pages unreadable); retry, or give the replicas more time", s->key, got < 0 ? 0 : got,
                s->cfg.wait_replicas, s->cfg.wait_timeout_ms);
}

static void wait_for_replicas(spread_store *s) {
    wait_short(s, sp_io_wait_home(&s->io, s->cfg.wait_replicas, s->cfg.wait_timeout_ms), "its publish");
}

/* The row changes of the commit while capture is on (client/hooks.c):
 * *log, or NULL with capture off. An SQLite code: an error when they
 * cannot be published (then nothing is written). */
static int changes_of_commit(spread_store *s, const change_log **log) {
    char why[400];
    *log = NULL;
    if (!s->capture_on) return SQLITE_OK;
    if (!s->capture)
        return fail(s, SQLITE_ERROR, "key %s: change capture is on (T:changes:cfg) and this connection cannot capture: "
                    "open the database as the main database of its connection, not with ATTACH; nothing was written",
                    s->key);
    if (!(*log = kvsql_capture_commit(s->capture, s->committed, why, sizeof(why))))
        return fail(s, SQLITE_ERROR, "key %s: %s", s->key, why);
    return SQLITE_OK;
}

static int spread_commit(kvsql_store *st, kvsql_txn *t, const kvsql_batch *b) {
    spread_store *s = (spread_store *)st;
    if (!s->io.conn.c) return fail(s, SQLITE_IOERR, "commit: the connection to %s was lost", s->io.conn.where);
    const change_log *log;
    int crc = changes_of_commit(s, &log);
    if (crc != SQLITE_OK) return crc;
    char copy[KVSQL_ID_HEX + 1], score[24];
    kvsql_random_hex(copy, KVSQL_ID_HEX / 2);
    snprintf(score, sizeof(score), "%lld", wall_ms() + (long long)INTENT_LEASES * s->cfg.lease_ms);
    kvsql_page_ref *pages = malloc(sizeof(*pages) * (b->count ? b->count : 1));
    if (!pages) return SQLITE_NOMEM;
    memcpy(pages, b->pages, sizeof(*pages) * b->count);
    qsort(pages, b->count, sizeof(*pages), by_index);
    writes w;
    int rc = writes_make(s, &w, pages, b->count, b->page_size, copy, 0, score);
    redisReply **out = rc == SQLITE_OK ? calloc(w.ncmds, sizeof(*out)) : NULL;
    if (rc == SQLITE_OK && !out) rc = SQLITE_NOMEM;
    stop_here("lock");
    /* Steps 1 and 2: the intent and the copies, all in flight together. */
    if (rc == SQLITE_OK && sp_io_batch(&s->io, (int)w.ncmds, w.cmds, out) != 0)
        rc = kvsql_conn_lost(&s->io.conn, SQLITE_IOERR, "commit (writing the page copies)");
    for (uint32_t i = 0; rc == SQLITE_OK && i < w.ncmds; i++)
        if (out[i]->type == REDIS_REPLY_ERROR) /* e.g. a node at maxmemory: SQLITE_FULL, nothing published */
            rc = kvsql_conn_reply_error(&s->io.conn, out[i], "commit (writing the page copies)");
    if (rc == SQLITE_OK && s->cfg.wait_replicas > 0) rc = copies_replicated(s, &w);
    if (rc != SQLITE_OK && rc != SQLITE_NOMEM && s->io.conn.c) drop_copies(s, pages, b->count, b->page_size, copy);
    for (uint32_t i = 0; out && i < w.ncmds; i++) freeReplyObject(out[i]);
    free(out);
    if (rc == SQLITE_OK) {
        stop_here("copies");
        /* Step 3: publish. */
        redisReply *r = publish(s, b, pages, copy, w.intent, log, &rc);
        if (r && is_word(r, 0, "ok") && elem_str(r, 1)) {
            committed(s, t, b, pages, copy, elem_str(r, 1));
            if (s->capture) kvsql_capture_end(s->capture); /* published */
            s->committed = 1;
            collect(s, r, 2, r->elements - 2);
            if (s->cfg.wait_replicas > 0) wait_for_replicas(s);
        } else if (r) {
            if (is_word(r, 0, "lease")) rc = fail(s, SQLITE_IOERR_LOCK, "commit: the write lease of %s was lost", s->key);
            else if (is_word(r, 0, "stale")) {
                s->stats.stale++;
                rc = fail(s, SQLITE_BUSY_SNAPSHOT, "commit: %s changed after this transaction's snapshot", s->key);
            } else rc = refusal(s, r, "commit");
            drop_copies(s, pages, b->count, b->page_size, copy);
        }
        freeReplyObject(r);
    }
    writes_free(&w);
    free(pages);
    return rc;
}

/* ---- unlock, errmsg, destroy ----------------------------------------------- */

/* Sends the end script without waiting: drops the lease if it is ours,
 * and the registration member (when not ""). */
static void send_end(spread_store *s, const char *member) {
    if (!s->io.conn.c) return;
    const char *argv[7] = {"EVAL", kvsql_spread_scripts[SP_END], "2", s->aux[SA_LEASE], s->aux[SA_READERS],
                           s->io.conn.token, member};
    sp_io_send(&s->io, 7, argv, s->key);
}

static void spread_unlock(kvsql_store *st, kvsql_txn *t, int level) {
    spread_store *s = (spread_store *)st;
    if (s->capture) kvsql_capture_end(s->capture);
    if (level == KVSQL_LOCK_NONE) {
        /* A writer gives the lease and its registration back at once; a
         * reader's registration stays for the next begin to replace (its
         * `prev`) and lapses after lease_ms if none comes, as in the
         * one-hash layout: a warm read transaction is then one script, not
         * a begin and an end. */
        if (s->holds_lease || s->leased_txn) {
            send_end(s, s->member);
            s->member[0] = 0;
        }
        s->holds_lease = 0;
        s->leased_txn = 0;
        s->committed = 0;
        s->active = NULL;
    } else if (s->holds_lease) {
        send_end(s, "");
        s->holds_lease = 0;
    }
    t->level = level;
}

static const char *spread_errmsg(kvsql_store *st) {
    return ((spread_store *)st)->io.conn.err;
}

static void free_names(spread_store *s) {
    free(s->key);
    for (int i = 0; i < SA_COUNT; i++) free(s->aux[i]);
}

static void spread_destroy(kvsql_store *st) {
    spread_store *s = (spread_store *)st;
    if (s->member[0] || s->holds_lease) send_end(s, s->member);
    sp_io_close(&s->io);
    pagecache_clear(&s->cache);
    readahead_free(&s->ra);
    kvsql_capture_free(s->capture);
    free(s->map);
    free(s->have);
    free_names(s);
    free(s);
}

static const kvsql_store_methods spread_methods = {
    spread_begin, spread_read, spread_lock, spread_commit, spread_unlock, spread_errmsg, spread_destroy,
};

/* ---- collection ------------------------------------------------------------- */

/* Deletes a lapsed intent's copies (the pages it lists; "*<n>": every
 * page below n, one HDEL per run), then the intent, all sent without
 * waiting. */
static void sweep_intent(spread_store *s, const char *m) {
    const char *colon = strchr(m, ':');
    if (!colon || !kvsql_spread_copy_id_valid(m, (size_t)(colon - m))) return;
    char copy[KVSQL_ID_HEX + 1], field[KVSQL_SPREAD_RUN][KVSQL_SPREAD_COPY_FIELD_MAX];
    memcpy(copy, m, KVSQL_ID_HEX);
    copy[KVSQL_ID_HEX] = 0;
    uint32_t all;
    if (colon[1] == '*' && kvsql_field_parse(colon + 2, strlen(colon + 2), &all) == 0) {
        for (uint32_t run = 0; all > 0 && run <= kvsql_spread_run(all - 1); run++) {
            char *name = run_key(s, run);
            const char *hdel[2 + KVSQL_SPREAD_RUN] = {"HDEL", name};
            for (uint32_t j = 0; j < KVSQL_SPREAD_RUN; j++) {
                kvsql_spread_copy_field(field[j], run * KVSQL_SPREAD_RUN + j, copy);
                hdel[2 + j] = field[j];
            }
            if (name) sp_io_send(&s->io, 2 + KVSQL_SPREAD_RUN, hdel, name);
            free(name);
        }
    } else {
        for (const char *p = colon + 1; *p;) {
            char *end;
            unsigned long page = strtoul(p, &end, 10);
            if (end == p || page > UINT32_MAX) break;
            char *name = run_key(s, kvsql_spread_run((uint32_t)page));
            kvsql_spread_copy_field(field[0], (uint32_t)page, copy);
            const char *hdel[3] = {"HDEL", name, field[0]};
            if (name) sp_io_send(&s->io, 3, hdel, name);
            free(name);
            p = *end == ',' ? end + 1 : end;
        }
    }
    const char *zrem[3] = {"ZREM", s->aux[SA_PENDING], m};
    sp_io_send(&s->io, 3, zrem, s->aux[SA_PENDING]);
}

int kvsql_spread_store_is(const kvsql_store *st) {
    return st && st->m == &spread_methods;
}

int kvsql_spread_store_set_capture(kvsql_store *st, kvsql_capture *c) {
    if (!kvsql_spread_store_is(st) || ((spread_store *)st)->capture) return -1;
    ((spread_store *)st)->capture = c;
    return 0;
}

void kvsql_spread_store_intend_write(kvsql_store *st) {
    if (kvsql_spread_store_is(st)) ((spread_store *)st)->intent = 1;
}

void kvsql_spread_store_intend_read(kvsql_store *st) {
    if (kvsql_spread_store_is(st)) ((spread_store *)st)->intent = 0;
}

int kvsql_spread_store_stats(kvsql_store *st, kvsql_redis_stats *out) {
    if (!kvsql_spread_store_is(st)) return -1;
    const spread_store *s = (const spread_store *)st;
    *out = s->stats;
    out->cache_pages = s->cache.count;
    out->cache_bytes = (sqlite3_int64)pagecache_bytes(&s->cache);
    out->cache_limit = (sqlite3_int64)s->cache.limit;
    out->cache_evictions = (sqlite3_int64)s->cache.evictions;
    return 0;
}

int kvsql_spread_store_gc(kvsql_store *st, int max_steps, long long *removed) {
    if (!kvsql_spread_store_is(st)) return SQLITE_MISUSE;
    spread_store *s = (spread_store *)st;
    int rc = kvsql_conn_connect(&s->io.conn);
    for (int step = 0; rc == SQLITE_OK && step < max_steps; step++) {
        kvsql_call k;
        char nbuf[8], max[16];
        if (kvsql_call_init(&k, 8) != 0) {
            kvsql_call_free(&k);
            return SQLITE_NOMEM;
        }
        snprintf(max, sizeof(max), "%d", SPREAD_GC_BATCH);
        kvsql_call_script(&k, 3, nbuf);
        kvsql_call_str(&k, s->aux[SA_GC]);
        kvsql_call_str(&k, s->aux[SA_READERS]);
        kvsql_call_str(&k, s->aux[SA_PENDING]);
        kvsql_call_str(&k, max);
        redisReply *r = checked(s, sp_io_script(&s->io, SP_GC_PICK, &k, s->key), "gc", &rc);
        kvsql_call_free(&k);
        if (!r) break;
        if (!is_word(r, 0, "ok") || r->elements < 2 || r->element[1]->type != REDIS_REPLY_INTEGER ||
            (size_t)r->element[1]->integer > r->elements - 2) {
            rc = refusal(s, r, "gc");
            freeReplyObject(r);
            break;
        }
        size_t ngc = (size_t)r->element[1]->integer, nint = r->elements - 2 - ngc;
        collect(s, r, 2, ngc);
        for (size_t i = 2 + ngc; i < r->elements; i++) {
            if (elem_str(r, i)) sweep_intent(s, elem_str(r, i));
        }
        *removed += (long long)ngc;
        freeReplyObject(r);
        if (!s->io.conn.c || sp_io_flush(&s->io) != 0 || kvsql_conn_drain(&s->io.conn) != 0) {
            rc = kvsql_conn_lost(&s->io.conn, SQLITE_IOERR, "gc");
            break;
        }
        if (ngc == 0 && nint == 0) break;
    }
    return rc;
}

/* ---- making a store -------------------------------------------------------- */

static char *aux_name(const char *key, const char *suffix) {
    size_t n = kvsql_aux_key(NULL, 0, key, strlen(key), suffix) + 1;
    char *out = malloc(n);
    if (out) kvsql_aux_key(out, n, key, strlen(key), suffix);
    return out;
}

static void forget_connection(void *owner) {
    (void)owner; /* the next begin sees conn.connections move and drops the map */
}

int kvsql_spread_store_new(const char *key, const kvsql_redis_config *cfg, kvsql_store **out) {
    *out = NULL;
    spread_store *s = calloc(1, sizeof(*s));
    if (!s) return SQLITE_NOMEM;
    s->base.m = &spread_methods;
    s->cfg = *cfg;
    snprintf(s->lease, sizeof(s->lease), "%d", cfg->lease_ms);
    pagecache_init(&s->cache, (size_t)cfg->cache_kb * 1024);
    s->key = strdup(key);
    int ok = s->key != NULL;
    for (int i = 0; i < SA_COUNT; i++) ok = (s->aux[i] = aux_name(key, sa_suffix[i])) != NULL && ok;
    if (!ok) {
        free_names(s);
        free(s);
        return SQLITE_NOMEM;
    }
    kvsql_conn_init(&s->io.conn, s->key, &s->cfg, &s->stats, forget_connection, s);
    *out = &s->base;
    return SQLITE_OK;
}
