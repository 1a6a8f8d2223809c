/* pcache.c - SQLite's page cache for the module's connections; see
 * pcache.h. Called by SQLite only (sqlite3_pcache_methods2), installed
 * by module.c.
 *
 * A cache holds its pages in a hash table by key (the page number) and
 * its unpinned pages in a list, most recently unpinned first. Each page
 * is one block: the page's bytes, then this file's header (which also
 * serves as the overrun area the b-tree layer needs after a page: it may
 * read up to 16 bytes past the end of a corrupt page), then SQLite's extra
 * bytes. A purgeable cache (a database file) recycles or frees unpinned
 * pages past its size (PRAGMA cache_size); a cache that is not purgeable
 * (an in-memory database: TEMP tables, sorters) is the database itself and
 * drops a page only when SQLite says so (xUnpin discard, xTruncate).
 * Caches share nothing but a few spare blocks (blockpool.h) and the count
 * of their pages' bytes. */
#include "pcache.h"

#include "blockpool.h"

#include "sqlite.h"
#include <stddef.h>
#include <string.h>

#define INLINE_SLOTS 8 /* the table's size at the first page, inside the cache */
#define SPARE_BLOCKS 8 /* pages freed kept for the next cache that needs one */

typedef struct pc_page {
    sqlite3_pcache_page base; /* pBuf: the block's start; pExtra: after this header */
    unsigned key;
    int pinned;
    struct pc_page *next;                /* in the same slot of the table */
    struct pc_page *lru_prev, *lru_next; /* unpinned pages, most recently unpinned first */
} pc_page;

typedef struct pc_cache {
    int page_size, extra_size, purgeable;
    unsigned max_pages; /* PRAGMA cache_size, in pages */
    unsigned npages;    /* pinned or not */
    unsigned max_key;   /* no page's key is above it (0 when empty) */
    unsigned fetches;   /* counts to PCACHE_CHECK_FETCHES, then the hook runs */
    unsigned nslots;    /* a power of two, or 0 (no table) */
    pc_page **table;    /* inline_table, or a larger one of its own */
    void **owner;       /* where kvsql_pcache_watch() reported it, or NULL */
    pc_page *lru_head, *lru_tail;
    pc_page *inline_table[INLINE_SLOTS];
} pc_cache;

#define ROUND8(n) (((n) + 7) & ~(size_t)7)

static pc_page *header_of(const pc_cache *c, void *block) {
    return (pc_page *)((char *)block + c->page_size);
}

static size_t block_size(const pc_cache *c) {
    return (size_t)c->page_size + ROUND8(sizeof(pc_page)) + ROUND8((size_t)c->extra_size);
}

/* ---- spare blocks ----
 * A connection that cools down (cache.c) frees its pages, and the next
 * cold call allocates as many: a few freed blocks wait here for it. */
static blockpool spare = BLOCKPOOL(SPARE_BLOCKS);

/* ---- the bytes of database pages ----
 * Of every purgeable cache's pages (database pages, not TEMP tables or
 * sorters): cache.c bounds the module's total with it. Worker threads'
 * caches change it too, hence atomically. */
static long long purgeable_bytes;

long long kvsql_pcache_bytes(void) {
    return __atomic_load_n(&purgeable_bytes, __ATOMIC_RELAXED);
}

static void count_page(const pc_cache *c, long long sign) {
    if (c->purgeable) __atomic_fetch_add(&purgeable_bytes, sign * (long long)block_size(c), __ATOMIC_RELAXED);
}

/* ---- the list of unpinned pages ---- */

static void lru_unlink(pc_cache *c, pc_page *p) {
    if (p->lru_prev) p->lru_prev->lru_next = p->lru_next;
    else c->lru_head = p->lru_next;
    if (p->lru_next) p->lru_next->lru_prev = p->lru_prev;
    else c->lru_tail = p->lru_prev;
    p->lru_prev = p->lru_next = NULL;
}

static void lru_push_front(pc_cache *c, pc_page *p) {
    p->lru_prev = NULL;
    p->lru_next = c->lru_head;
    if (c->lru_head) c->lru_head->lru_prev = p;
    c->lru_head = p;
    if (!c->lru_tail) c->lru_tail = p;
}

/* ---- the table ---- */

static pc_page *find(const pc_cache *c, unsigned key) {
    if (!c->nslots) return NULL;
    pc_page *p = c->table[key & (c->nslots - 1)];
    while (p && p->key != key) p = p->next;
    return p;
}

static void table_insert(pc_cache *c, pc_page *p) {
    pc_page **slot = &c->table[p->key & (c->nslots - 1)];
    if (p->key > c->max_key) c->max_key = p->key;
    p->next = *slot;
    *slot = p;
}

static void table_remove(pc_cache *c, pc_page *p) {
    pc_page **pp = &c->table[p->key & (c->nslots - 1)];
    while (*pp != p) pp = &(*pp)->next;
    *pp = p->next;
    p->next = NULL;
}

/* Room for one more page: a table at least as large as the pages it will
 * hold (a full table that cannot grow still works, with longer chains).
 * Returns 0, or -1 when there is no table and none can be made. */
static int make_room(pc_cache *c) {
    if (c->nslots && c->npages < c->nslots) return 0;
    if (!c->nslots) {
        memset(c->inline_table, 0, sizeof(c->inline_table));
        c->table = c->inline_table;
        c->nslots = INLINE_SLOTS;
        return 0;
    }
    unsigned n = c->nslots * 2;
    pc_page **t = sqlite3_malloc64(sizeof(*t) * n);
    if (!t) return 0;
    memset(t, 0, sizeof(*t) * n);
    pc_page **old = c->table;
    unsigned nold = c->nslots;
    c->table = t;
    c->nslots = n;
    for (unsigned i = 0; i < nold; i++) {
        for (pc_page *p = old[i], *next; p; p = next) {
            next = p->next;
            table_insert(c, p);
        }
    }
    if (old != c->inline_table) sqlite3_free(old);
    return 0;
}

/* Removes p from the cache and frees it. */
static void free_page(pc_cache *c, pc_page *p) {
    table_remove(c, p);
    if (!p->pinned) lru_unlink(c, p);
    c->npages--;
    count_page(c, -1);
    blockpool_give(&spare, p->base.pBuf, block_size(c));
}

/* Frees the least recently unpinned pages while the cache holds more than
 * max pages. */
static void free_past(pc_cache *c, unsigned max) {
    while (c->npages > max && c->lru_tail) free_page(c, c->lru_tail);
}

/* An empty cache gives its table back. */
static void drop_table_if_empty(pc_cache *c) {
    if (c->npages) return;
    if (c->table != c->inline_table) sqlite3_free(c->table);
    c->table = NULL;
    c->nslots = 0;
    c->max_key = 0;
}

/* ---- the methods ---- */

static int pc_init(void *arg) {
    (void)arg;
    return SQLITE_OK;
}

static void pc_shutdown(void *arg) {
    (void)arg;
}

/* ---- one cache reported to its owner ----
 * The module's connection cache drops single pages that changed behind a
 * connection (cache.c): it asks to be told of its database's cache. */

static _Thread_local void **watch_slot;

void kvsql_pcache_watch(void **slot) {
    watch_slot = slot;
}

static void report_to_watcher(pc_cache *c) {
    if (!watch_slot || !c->purgeable) return;
    c->owner = watch_slot;
    *watch_slot = c;
    watch_slot = NULL;
}

int kvsql_pcache_forget(void *cache, unsigned key) {
    pc_cache *c = cache;
    pc_page *p = find(c, key);
    if (!p) return 0;
    if (p->pinned) return -1;
    free_page(c, p);
    return 0;
}

static sqlite3_pcache *pc_create(int page_size, int extra_size, int purgeable) {
    pc_cache *c = sqlite3_malloc(sizeof(*c));
    if (!c) return NULL;
    memset(c, 0, sizeof(*c));
    c->page_size = page_size;
    c->extra_size = extra_size;
    c->purgeable = purgeable;
    c->max_pages = 100; /* until xCachesize */
    report_to_watcher(c);
    return (sqlite3_pcache *)c;
}

static void pc_cachesize(sqlite3_pcache *pc, int n) {
    pc_cache *c = (pc_cache *)pc;
    c->max_pages = n > 0 ? (unsigned)n : 1;
    if (c->purgeable) free_past(c, c->max_pages);
}

static int pc_pagecount(sqlite3_pcache *pc) {
    return (int)((pc_cache *)pc)->npages;
}

/* A page for a key not in the cache: the least recently unpinned one when
 * a purgeable cache is full, else a new block; NULL when createFlag 1
 * finds the cache full of pinned pages (SQLite then writes dirty pages
 * out and asks again with 2) or memory runs out. */
static pc_page *new_page(pc_cache *c, int create) {
    if (c->purgeable && c->npages >= c->max_pages) {
        pc_page *p = c->lru_tail;
        if (p) {
            table_remove(c, p);
            lru_unlink(c, p);
            c->npages--;
            return p;
        }
        if (create == 1) return NULL;
    }
    if (make_room(c) != 0) return NULL;
    void *block = blockpool_take(&spare, block_size(c));
    if (!block) return NULL;
    count_page(c, 1);
    pc_page *p = header_of(c, block);
    memset(p, 0, sizeof(*p));
    p->base.pBuf = block;
    p->base.pExtra = (char *)p + ROUND8(sizeof(pc_page));
    return p;
}

static void (*fetch_hook)(void);

void kvsql_pcache_on_fetches(void (*hook)(void)) {
    __atomic_store_n(&fetch_hook, hook, __ATOMIC_RELAXED);
}

static sqlite3_pcache_page *pc_fetch(sqlite3_pcache *pc, unsigned key, int create) {
    pc_cache *c = (pc_cache *)pc;
    if (++c->fetches == PCACHE_CHECK_FETCHES) { /* one VM step may read a whole table (OP_Count) */
        c->fetches = 0;
        void (*hook)(void) = __atomic_load_n(&fetch_hook, __ATOMIC_RELAXED);
        if (hook) hook();
    }
    pc_page *p = find(c, key);
    if (p) {
        if (!p->pinned) {
            lru_unlink(c, p);
            p->pinned = 1;
        }
        return &p->base;
    }
    if (!create || !(p = new_page(c, create))) return NULL; /* a recycled page leaves a table behind */
    p->key = key;
    p->pinned = 1;
    p->next = p->lru_prev = p->lru_next = NULL;
    *(void **)p->base.pExtra = NULL; /* SQLite's sign of a page it has not set up yet */
    table_insert(c, p);
    c->npages++;
    return &p->base;
}

static pc_page *page_of(sqlite3_pcache_page *pg) {
    return (pc_page *)pg;
}

static void pc_unpin(sqlite3_pcache *pc, sqlite3_pcache_page *pg, int discard) {
    pc_cache *c = (pc_cache *)pc;
    pc_page *p = page_of(pg);
    if (discard || (c->purgeable && c->npages > c->max_pages)) {
        free_page(c, p);
        return;
    }
    p->pinned = 0;
    lru_push_front(c, p);
}

static void pc_rekey(sqlite3_pcache *pc, sqlite3_pcache_page *pg, unsigned old_key, unsigned new_key) {
    pc_cache *c = (pc_cache *)pc;
    pc_page *p = page_of(pg);
    (void)old_key;
    table_remove(c, p);
    pc_page *other = find(c, new_key); /* SQLite drops it first; never pinned */
    if (other) free_page(c, other);
    p->key = new_key;
    table_insert(c, p);
}

/* Drops the page with this key, if cached, pinned or not. */
static void drop_key(pc_cache *c, unsigned key) {
    pc_page *p = find(c, key);
    if (p) free_page(c, p);
}

/* Drops every page whose key is limit or more, pinned or not (SQLite no
 * longer uses them). It costs what it drops, not what is cached: nothing
 * when no key reaches limit (every commit asks), the keys from limit to
 * max_key one by one when they are fewer than the table's slots, else one
 * walk of the table (SQLite's pcache1 does the same). */
static void pc_truncate(sqlite3_pcache *pc, unsigned limit) {
    pc_cache *c = (pc_cache *)pc;
    if (!c->npages || limit > c->max_key) return;
    if (c->max_key - limit < c->nslots) {
        for (unsigned key = limit; key <= c->max_key && key >= limit; key++) drop_key(c, key);
    } else {
        for (unsigned i = 0; i < c->nslots; i++) {
            pc_page *p = c->table[i];
            while (p) {
                pc_page *next = p->next;
                if (p->key >= limit) free_page(c, p);
                p = next;
            }
        }
    }
    c->max_key = limit ? limit - 1 : 0;
}

static void pc_destroy(sqlite3_pcache *pc) {
    pc_cache *c = (pc_cache *)pc;
    if (c->owner && *c->owner == c) *c->owner = NULL; /* its owner falls back to dropping every page */
    pc_truncate(pc, 0);
    drop_table_if_empty(c);
    sqlite3_free(c);
}

/* sqlite3_db_release_memory: a purgeable cache frees its unpinned pages,
 * and its table when that leaves it empty. */
static void pc_shrink(sqlite3_pcache *pc) {
    pc_cache *c = (pc_cache *)pc;
    if (!c->purgeable) return;
    free_past(c, 0);
    drop_table_if_empty(c);
}

static const sqlite3_pcache_methods2 methods = {
    1, NULL, pc_init, pc_shutdown, pc_create, pc_cachesize, pc_pagecount, pc_fetch,
    pc_unpin, pc_rekey, pc_truncate, pc_destroy, pc_shrink,
};

int kvsql_pcache_install(void) {
    return sqlite3_config(SQLITE_CONFIG_PCACHE2, &methods);
}
