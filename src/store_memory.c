/* store_memory.c - a page store in process memory.
 *
 * The simplest store behind store.h: used by the unit tests, the `memory`
 * engine of the conformance runner and the `kvsql-memory` VFS (speedtest1).
 * One writer at a time within the process is SQLite's to arrange; this
 * store only keeps pages and applies batches. */
#include "kvsql.h"
#include "pagemap.h"
#include "store.h"

#include <string.h>

typedef struct memory_store {
    kvsql_store base;
    pagemap pages;
    uint32_t npages;
    uint32_t page_size;
} memory_store;

static int mem_lock(kvsql_store *s, int level) {
    (void)s;
    (void)level;
    return SQLITE_OK;
}

static int mem_size(kvsql_store *s, uint32_t *npages, uint32_t *page_size) {
    memory_store *m = (memory_store *)s;
    *npages = m->npages;
    *page_size = m->page_size;
    return SQLITE_OK;
}

static int mem_read(kvsql_store *s, uint32_t index, void *buf, uint32_t page_size) {
    memory_store *m = (memory_store *)s;
    void *p = pagemap_get(&m->pages, index);
    if (!p || page_size != m->page_size) return SQLITE_IOERR_READ;
    memcpy(buf, p, page_size);
    return SQLITE_OK;
}

static int mem_commit(kvsql_store *s, const kvsql_batch *b) {
    memory_store *m = (memory_store *)s;
    if (m->page_size && b->page_size != m->page_size && m->npages) return SQLITE_IOERR_WRITE;
    /* Copy into a new map first, so that running out of memory midway
     * leaves the store as it was. */
    pagemap staged;
    pagemap_init(&staged);
    for (uint32_t i = 0; i < b->count; i++) {
        if (pagemap_put(&staged, b->pages[i].index, b->pages[i].data, b->page_size) != 0) {
            pagemap_clear(&staged);
            return SQLITE_NOMEM;
        }
    }
    if (pagemap_reserve(&m->pages, staged.count) != 0) {
        pagemap_clear(&staged);
        return SQLITE_NOMEM;
    }
    for (size_t i = 0; i < staged.cap; i++) {
        pagemap_slot *sl = &staged.slots[i];
        if (!sl->page) continue;
        pagemap_set_owned(&m->pages, sl->index, sl->page);
        sl->page = NULL; /* moved */
    }
    pagemap_clear(&staged);
    pagemap_drop_from(&m->pages, b->npages);
    m->npages = b->npages;
    m->page_size = b->page_size;
    return SQLITE_OK;
}

static const char *mem_errmsg(kvsql_store *s) {
    (void)s;
    return "";
}

static void mem_destroy(kvsql_store *s) {
    memory_store *m = (memory_store *)s;
    pagemap_clear(&m->pages);
    sqlite3_free(m);
}

static const kvsql_store_methods memory_methods = {
    mem_lock, mem_lock, mem_size, mem_read, mem_commit, mem_errmsg, mem_destroy,
};

int kvsql_memory_store_new(kvsql_store **out) {
    memory_store *m = sqlite3_malloc(sizeof(*m));
    *out = NULL;
    if (!m) return SQLITE_NOMEM;
    memset(m, 0, sizeof(*m));
    m->base.m = &memory_methods;
    pagemap_init(&m->pages);
    *out = &m->base;
    return SQLITE_OK;
}
