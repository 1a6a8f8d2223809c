/* pagemap.c - open-addressing hash map from page index to page buffer.
 * See pagemap.h; callers are dbfile.c, store_memory.c and the module's
 * stores (src/module/). */
#include "pagemap.h"

#include "blockpool.h"
#include "store.h"

#include "sqlite.h"
#include <string.h>

/* A map emptied for good (pagemap_clear: an idle connection's maps, after
 * each call) leaves a few page buffers and its first table to these
 * pools, and the next map that needs one takes it. */
#define FIRST_CAP 64 /* slots of a map's first table */
static blockpool page_pool = BLOCKPOOL(16), table_pool = BLOCKPOOL(16);

/* ---- a map ---- */

void pagemap_init(pagemap *m) {
    memset(m, 0, sizeof(*m));
}

void pagemap_clear(pagemap *m) {
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].page) blockpool_give(&page_pool, m->slots[i].page, m->page_len);
    for (size_t i = 0; i < m->nspare; i++) blockpool_give(&page_pool, m->spare[i], m->spare_len);
    if (m->cap == FIRST_CAP) blockpool_give(&table_pool, m->slots, FIRST_CAP * sizeof(*m->slots));
    else sqlite3_free(m->slots);
    pagemap_init(m);
}

/* Keeps a page buffer of len bytes for reuse, or frees it. */
static void give_back(pagemap *m, void *page, size_t len) {
    if (m->nspare == PAGEMAP_SPARES || (m->nspare && m->spare_len != len)) {
        sqlite3_free(page);
        return;
    }
    m->spare_len = len;
    m->spare[m->nspare++] = page;
}

static void *take(pagemap *m, size_t len) {
    if (m->nspare && m->spare_len == len) return m->spare[--m->nspare];
    return blockpool_take(&page_pool, len);
}

void pagemap_reset(pagemap *m) {
    if (m->count == 0) return;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].page) continue;
        give_back(m, m->slots[i].page, m->page_len);
        m->slots[i].page = NULL;
    }
    m->count = 0;
    if (m->cap > 1024) { /* a big transaction's table: do not keep it */
        sqlite3_free(m->slots);
        m->slots = NULL;
        m->cap = 0;
    }
}

static size_t slot_of(const pagemap *m, uint32_t index) {
    uint32_t h = index * 2654435761u; /* Knuth's multiplicative hash */
    return (size_t)h & (m->cap - 1);
}

/* Slot holding index, or the empty slot where it would go. */
static pagemap_slot *find(const pagemap *m, uint32_t index) {
    size_t i = slot_of(m, index);
    while (m->slots[i].page && m->slots[i].index != index) i = (i + 1) & (m->cap - 1);
    return &m->slots[i];
}

void *pagemap_get(const pagemap *m, uint32_t index) {
    if (m->count == 0) return NULL;
    return find(m, index)->page;
}

static int grow(pagemap *m) {
    size_t cap = m->cap ? m->cap * 2 : FIRST_CAP;
    pagemap_slot *old = m->slots;
    size_t oldcap = m->cap;
    pagemap_slot *slots = cap == FIRST_CAP ? blockpool_take(&table_pool, cap * sizeof(*slots))
                                           : sqlite3_malloc64(cap * sizeof(*slots));
    if (!slots) return -1;
    memset(slots, 0, cap * sizeof(*slots));
    m->slots = slots;
    m->cap = cap;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].page) *find(m, old[i].index) = old[i];
    sqlite3_free(old);
    return 0;
}

static int reserve(pagemap *m, size_t extra) {
    while ((m->count + extra) * 2 > m->cap)
        if (grow(m) != 0) return -1;
    return 0;
}

int pagemap_put(pagemap *m, uint32_t index, const void *data, size_t len) {
    if (m->count && len != m->page_len) return -1; /* every page of a map has one length */
    if (reserve(m, 1) != 0) return -1;
    pagemap_slot *s = find(m, index);
    if (!s->page) {
        m->page_len = len;
        s->page = take(m, len);
        if (!s->page) return -1;
        s->index = index;
        m->count++;
    }
    memcpy(s->page, data, len);
    return 0;
}

/* Linear probing: after emptying slot i, the run that follows is put back
 * so that no entry is cut off from its home slot. Entries only move into
 * the freed slot or stay, so a caller scanning upward from i loses none. */
static void remove_slot(pagemap *m, size_t i) {
    sqlite3_free(m->slots[i].page);
    m->slots[i].page = NULL;
    m->count--;
    for (size_t j = (i + 1) & (m->cap - 1); m->slots[j].page; j = (j + 1) & (m->cap - 1)) {
        pagemap_slot s = m->slots[j];
        m->slots[j].page = NULL;
        *find(m, s.index) = s;
    }
}

void pagemap_drop_from(pagemap *m, uint32_t first) {
    size_t i = 0;
    while (i < m->cap) {
        if (m->slots[i].page && m->slots[i].index >= first) {
            remove_slot(m, i); /* another entry may now sit in slot i: look again */
            continue;
        }
        i++;
    }
}

int pending_add(pending_pages *p, kvsql_txn *t, const kvsql_batch *b) {
    if (reserve(&p->map, b->count) != 0) return -1;
    for (uint32_t i = 0; i < b->count; i++)
        if (pagemap_put(&p->map, b->pages[i].index, b->pages[i].data, b->page_size) != 0) return -1;
    pagemap_drop_from(&p->map, b->npages);
    p->any = 1;
    p->npages = b->npages;
    p->page_size = b->page_size;
    t->version++;
    t->npages = b->npages;
    t->page_size = b->page_size;
    return 0;
}

int pending_move(pending_pages *p, pending_pages *out) {
    if (!p->any) return 0;
    *out = *p;
    memset(p, 0, sizeof(*p));
    pagemap_init(&p->map);
    return 1;
}
