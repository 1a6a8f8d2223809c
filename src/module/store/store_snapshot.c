/* store_snapshot.c - the page store of SQL on a worker thread; see
 * store_snapshot.h. Called by the VFS (vfs.c) on the worker's private
 * connection, which exec.c opens and closes for each offloaded call.
 *
 * Each miss takes Redis's lock (the GIL) once and copies a run of pages
 * into a window, so the main thread waits for at most one run's copy.
 * The run grows while SQLite reads forward (a scan) and shrinks back when
 * it jumps (index lookups). */
#include "module/store/store_snapshot.h"

#include "module/offload/worker.h"

#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#define RUN_MIN 4
#define RUN_MAX 64

typedef struct snapshot_store {
    kvsql_store base;
    snapshot *snap;
    RedisModuleCtx *tsctx;
    int gil_held, writable;
    /* the last run of pages fetched: pages win_first .. win_first+win_count-1 */
    unsigned char *win;
    uint32_t win_first, win_count, run;
    int state_seen; /* SNAPSHOT_*: as the last failed fetch found it */
    pending_pages pending; /* what SQLite committed */
    char err[160];
} snapshot_store;

static int fail(snapshot_store *s, int rc, const char *msg) {
    snprintf(s->err, sizeof(s->err), "%s", msg);
    return rc;
}

static int ss_begin(kvsql_store *st, kvsql_txn *t) {
    snapshot_store *s = (snapshot_store *)st;
    t->npages = s->pending.any ? s->pending.npages : snapshot_npages(s->snap);
    t->page_size = s->pending.any ? s->pending.page_size : snapshot_page_size(s->snap);
    if (!t->npages) t->page_size = 0;
    t->level = KVSQL_LOCK_READ;
    return SQLITE_OK;
}

static int ss_lock(kvsql_store *st, kvsql_txn *t) {
    snapshot_store *s = (snapshot_store *)st;
    if (!s->writable) return fail(s, SQLITE_READONLY, "kvsql: this command is read-only");
    t->level = KVSQL_LOCK_WRITE;
    return SQLITE_OK;
}

static void ss_unlock(kvsql_store *st, kvsql_txn *t, int level) {
    (void)st;
    t->level = level;
}

/* The next run's length: longer while reads go forward from the window. */
static uint32_t next_run(snapshot_store *s, uint32_t index) {
    int forward = s->win_count && index >= s->win_first && index <= s->win_first + s->win_count + RUN_MAX;
    s->run = forward ? (s->run * 2 > RUN_MAX ? RUN_MAX : s->run * 2) : RUN_MIN;
    return s->run;
}

/* Fills the window with the run of pages from index on. */
static int fetch(snapshot_store *s, uint32_t index, uint32_t npages, uint32_t psz) {
    uint32_t n = next_run(s, index);
    if (n > npages - index) n = npages - index;
    if (!s->win && !(s->win = sqlite3_malloc64((sqlite3_uint64)RUN_MAX * psz))) return SQLITE_NOMEM;
    if (!s->gil_held) worker_gil_lock(s->tsctx);
    int rc = snapshot_read(s->snap, s->tsctx, index, n, s->win);
    if (rc == SQLITE_ABORT) s->state_seen = snapshot_state(s->snap);
    if (!s->gil_held) worker_gil_unlock(s->tsctx);
    s->win_first = index;
    s->win_count = rc == SQLITE_OK ? n : 0;
    if (rc == SQLITE_ABORT) return fail(s, SQLITE_ABORT, "kvsql: the database changed while the SQL ran");
    if (rc != SQLITE_OK) return fail(s, rc, "kvsql: a page of the hash is missing or not one page long");
    return SQLITE_OK;
}

static int read_one(snapshot_store *s, kvsql_txn *t, uint32_t index, unsigned char *out) {
    const void *p = pagemap_get(&s->pending.map, index);
    if (p) {
        memcpy(out, p, t->page_size);
        return SQLITE_OK;
    }
    if (!(s->win_count && index >= s->win_first && index - s->win_first < s->win_count)) {
        int rc = fetch(s, index, snapshot_npages(s->snap), t->page_size);
        if (rc != SQLITE_OK) return rc;
    }
    memcpy(out, s->win + (size_t)(index - s->win_first) * t->page_size, t->page_size);
    return SQLITE_OK;
}

static int ss_read(kvsql_store *st, kvsql_txn *t, uint32_t first, uint32_t count, void *buf) {
    snapshot_store *s = (snapshot_store *)st;
    unsigned char *out = buf;
    for (uint32_t i = 0; i < count; i++, out += t->page_size) {
        int rc = read_one(s, t, first + i, out);
        if (rc != SQLITE_OK) return rc;
    }
    return SQLITE_OK;
}

static int ss_commit(kvsql_store *st, kvsql_txn *t, const kvsql_batch *b) {
    snapshot_store *s = (snapshot_store *)st;
    if (!s->writable) return fail(s, SQLITE_READONLY, "kvsql: this command is read-only");
    return pending_add(&s->pending, t, b) == 0 ? SQLITE_OK : SQLITE_NOMEM;
}

static const char *ss_errmsg(kvsql_store *st) {
    return ((snapshot_store *)st)->err;
}

static void ss_destroy(kvsql_store *st) {
    snapshot_store *s = (snapshot_store *)st;
    pagemap_clear(&s->pending.map);
    sqlite3_free(s->win);
    sqlite3_free(s);
}

static const kvsql_store_methods snapshot_methods = {
    ss_begin, ss_read, ss_lock, ss_commit, ss_unlock, ss_errmsg, ss_destroy,
};

kvsql_store *snapshot_store_new(snapshot *snap, RedisModuleCtx *tsctx, int gil_held, int writable) {
    snapshot_store *s = sqlite3_malloc(sizeof(*s));
    if (!s) return NULL;
    memset(s, 0, sizeof(*s));
    s->base.m = &snapshot_methods;
    s->snap = snap;
    s->tsctx = tsctx;
    s->gil_held = gil_held;
    s->writable = writable;
    s->run = RUN_MIN;
    pagemap_init(&s->pending.map);
    return &s->base;
}

int snapshot_store_take_pending(kvsql_store *st, pending_pages *out) {
    return pending_move(&((snapshot_store *)st)->pending, out);
}

int snapshot_store_state(kvsql_store *st) {
    return ((snapshot_store *)st)->state_seen;
}
