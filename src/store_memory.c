/* store_memory.c - a page store in process memory.
 *
 * The simplest store behind store.h: used by the unit and contract tests,
 * the `memory` engine of the conformance runner and the `kvsql-memory` VFS
 * (speedtest1). Several connections may share one store, from several
 * threads: it keeps every committed state as an immutable version (an array
 * of reference-counted pages), so a snapshot is a reference to a version
 * and stays as it was while others commit; a commit builds the next
 * version, sharing the pages it did not change. One writer at a time. */
#include "kvsql.h"
#include "sqlite.h"
#include "store.h"

#include <string.h>

typedef struct mpage {
    int refs;
    unsigned char data[];
} mpage;

/* One committed state of the database. Immutable once published. */
typedef struct version {
    int refs; /* the store's, while current, and one per snapshot */
    uint64_t number;
    uint32_t npages, page_size;
    mpage **pages; /* npages entries; NULL reads as zeros */
} version;

typedef struct memory_store {
    kvsql_store base;
    sqlite3_mutex *mx;
    version *current;
    const kvsql_txn *writer; /* the transaction holding the write lock */
    char err[128];
} memory_store;

static void page_release(mpage *p) {
    if (p && --p->refs == 0) sqlite3_free(p);
}

/* Caller holds the mutex (or is the only user). */
static void version_release(version *v) {
    if (!v || --v->refs > 0) return;
    for (uint32_t i = 0; i < v->npages; i++) page_release(v->pages[i]);
    sqlite3_free(v->pages);
    sqlite3_free(v);
}

static version *version_new(uint64_t number, uint32_t npages, uint32_t page_size) {
    version *v = sqlite3_malloc(sizeof(*v));
    mpage **pages = sqlite3_malloc64(sizeof(*pages) * ((size_t)npages + 1));
    if (!v || !pages) {
        sqlite3_free(v);
        sqlite3_free(pages);
        return NULL;
    }
    memset(pages, 0, sizeof(*pages) * ((size_t)npages + 1));
    *v = (version){1, number, npages, page_size, pages};
    return v;
}

static int fail(memory_store *m, int rc, const char *msg) {
    memcpy(m->err, msg, strlen(msg) + 1);
    return rc;
}

static int mem_begin(kvsql_store *s, kvsql_txn *t) {
    memory_store *m = (memory_store *)s;
    sqlite3_mutex_enter(m->mx);
    version *v = m->current;
    v->refs++;
    sqlite3_mutex_leave(m->mx);
    t->priv = v;
    t->version = v->number;
    t->npages = v->npages;
    t->page_size = v->page_size;
    t->level = KVSQL_LOCK_READ;
    return SQLITE_OK;
}

static int mem_read(kvsql_store *s, kvsql_txn *t, uint32_t first, uint32_t count, void *buf) {
    const version *v = t->priv;
    if (!v || (uint64_t)first + count > v->npages)
        return fail((memory_store *)s, SQLITE_IOERR_READ, "read outside the snapshot");
    unsigned char *out = buf;
    for (uint32_t i = 0; i < count; i++, out += v->page_size) {
        const mpage *p = v->pages[first + i];
        if (p) memcpy(out, p->data, v->page_size);
        else memset(out, 0, v->page_size);
    }
    return SQLITE_OK;
}

static int mem_lock(kvsql_store *s, kvsql_txn *t) {
    memory_store *m = (memory_store *)s;
    int rc = SQLITE_OK;
    sqlite3_mutex_enter(m->mx);
    if (m->writer && m->writer != t) rc = SQLITE_BUSY;
    else if (m->current->number != t->version) rc = SQLITE_BUSY_SNAPSHOT;
    else m->writer = t;
    sqlite3_mutex_leave(m->mx);
    if (rc == SQLITE_OK) t->level = KVSQL_LOCK_WRITE;
    else if (rc == SQLITE_BUSY) fail(m, rc, "another connection is writing");
    else fail(m, rc, "the database changed since this transaction began");
    return rc;
}

/* The version after b: the unchanged pages shared with base, b's copied. */
static version *apply_batch(const version *base, const kvsql_batch *b) {
    version *v = version_new(base->number + 1, b->npages, b->page_size);
    if (!v) return NULL;
    for (uint32_t i = 0; i < b->count; i++) {
        mpage *p = sqlite3_malloc64(sizeof(*p) + b->page_size);
        if (!p) {
            version_release(v);
            return NULL;
        }
        p->refs = 1;
        memcpy(p->data, b->pages[i].data, b->page_size);
        page_release(v->pages[b->pages[i].index]);
        v->pages[b->pages[i].index] = p;
    }
    uint32_t keep = base->npages < b->npages ? base->npages : b->npages;
    for (uint32_t i = 0; i < keep; i++) {
        if (v->pages[i] || !base->pages[i]) continue;
        v->pages[i] = base->pages[i];
        v->pages[i]->refs++;
    }
    return v;
}

static int mem_commit(kvsql_store *s, kvsql_txn *t, const kvsql_batch *b) {
    memory_store *m = (memory_store *)s;
    sqlite3_mutex_enter(m->mx);
    version *base = m->current;
    int rc = SQLITE_OK;
    if (m->writer != t) rc = fail(m, SQLITE_IOERR_LOCK, "this connection is not the writer");
    else if (base->number != t->version) rc = fail(m, SQLITE_BUSY_SNAPSHOT, "the database changed");
    else if (base->npages && b->page_size != base->page_size)
        rc = fail(m, SQLITE_IOERR_WRITE, "the page size of a database never changes");
    for (uint32_t i = 0; rc == SQLITE_OK && i < b->count; i++)
        if (b->pages[i].index >= b->npages) rc = fail(m, SQLITE_IOERR_WRITE, "a page beyond the new length");
    version *v = rc == SQLITE_OK ? apply_batch(base, b) : NULL;
    if (rc == SQLITE_OK && !v) rc = SQLITE_NOMEM;
    if (rc == SQLITE_OK) {
        m->current = v;   /* the store's reference moves to v */
        v->refs++;        /* and t's snapshot moves from base to v */
        version_release(t->priv);
        version_release(base);
        t->priv = v;
        t->version = v->number;
        t->npages = v->npages;
        t->page_size = v->page_size;
    }
    sqlite3_mutex_leave(m->mx);
    return rc;
}

static void mem_unlock(kvsql_store *s, kvsql_txn *t, int level) {
    memory_store *m = (memory_store *)s;
    sqlite3_mutex_enter(m->mx);
    if (m->writer == t) m->writer = NULL;
    if (level == KVSQL_LOCK_NONE) {
        version_release(t->priv);
        t->priv = NULL;
    }
    sqlite3_mutex_leave(m->mx);
    t->level = level < t->level ? level : t->level;
}

static const char *mem_errmsg(kvsql_store *s) {
    return ((memory_store *)s)->err;
}

static void mem_destroy(kvsql_store *s) {
    memory_store *m = (memory_store *)s;
    version_release(m->current);
    sqlite3_mutex_free(m->mx);
    sqlite3_free(m);
}

static const kvsql_store_methods memory_methods = {
    mem_begin, mem_read, mem_lock, mem_commit, mem_unlock, mem_errmsg, mem_destroy,
};

int kvsql_memory_store_new(kvsql_store **out) {
    *out = NULL;
    int rc = sqlite3_initialize();
    if (rc != SQLITE_OK) return rc;
    memory_store *m = sqlite3_malloc(sizeof(*m));
    if (!m) return SQLITE_NOMEM;
    memset(m, 0, sizeof(*m));
    m->base.m = &memory_methods;
    m->mx = sqlite3_mutex_alloc(SQLITE_MUTEX_FAST);
    m->current = version_new(0, 0, 0);
    if (!m->current) {
        sqlite3_mutex_free(m->mx);
        sqlite3_free(m);
        return SQLITE_NOMEM;
    }
    *out = &m->base;
    return SQLITE_OK;
}
