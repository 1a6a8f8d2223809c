/* pagecache.c - the bounded page cache of a `redis` VFS store
 * (pagecache.h); called by client/hash/store_redis.c and store_read.c.
 *
 * Pages sit in an array of entries (their order is CLOCK's circle); an
 * open-addressing hash of entry numbers finds them by index. Both tables
 * grow by doubling up to what the byte limit allows, so a small database
 * costs little whatever the limit. */
#include "client/cache/pagecache.h"
#include "sqlite.h"

#include <stdlib.h>
#include <string.h>

/* What one page may cost besides its bytes: its entry, and up to four
 * hash slots (the hash is the power of two at or above twice the pages). */
#define PER_PAGE (sizeof(pagecache_entry) + 4 * sizeof(int32_t))

void pagecache_init(pagecache *c, size_t limit) {
    memset(c, 0, sizeof(*c));
    c->limit = limit;
}

uint32_t pagecache_capacity(const pagecache *c, uint32_t len) {
    size_t n = c->limit / ((size_t)len + PER_PAGE);
    if (n > (1u << 28)) n = 1u << 28;
    return n ? (uint32_t)n : 1;
}

static void free_pages(pagecache *c) {
    for (uint32_t i = 0; i < c->count; i++) free(c->entries[i].page);
    c->count = 0;
    c->hand = 0;
    for (uint32_t i = 0; i < c->nslots; i++) c->slots[i] = -1;
}

void pagecache_clear(pagecache *c) {
    free_pages(c);
    free(c->entries);
    free(c->slots);
    uint64_t ev = c->evictions;
    pagecache_init(c, c->limit);
    c->evictions = ev;
}

void pagecache_reset(pagecache *c) {
    free_pages(c);
}

static uint32_t find_slot(const pagecache *c, uint32_t index) {
    uint32_t mask = c->nslots - 1, i = (index * 2654435761u) & mask;
    while (c->slots[i] >= 0 && c->entries[c->slots[i]].index != index) i = (i + 1) & mask;
    return i;
}

/* Entry number of index, or -1. */
static int32_t lookup(const pagecache *c, uint32_t index) {
    return c->count ? c->slots[find_slot(c, index)] : -1;
}

const void *pagecache_get(pagecache *c, uint32_t index) {
    int32_t n = lookup(c, index);
    if (n < 0) return NULL;
    c->entries[n].used = 1;
    return c->entries[n].page;
}

int pagecache_has(const pagecache *c, uint32_t index) {
    return lookup(c, index) >= 0;
}

/* Empties slot i; the run after it moves back so none is cut off from
 * its home slot (linear probing). */
static void unlink_slot(pagecache *c, uint32_t i) {
    uint32_t mask = c->nslots - 1;
    c->slots[i] = -1;
    for (uint32_t j = (i + 1) & mask; c->slots[j] >= 0; j = (j + 1) & mask) {
        int32_t n = c->slots[j];
        c->slots[j] = -1;
        c->slots[find_slot(c, c->entries[n].index)] = n;
    }
}

/* Frees entry n; the last entry takes its place. */
static void remove_entry(pagecache *c, uint32_t n) {
    unlink_slot(c, find_slot(c, c->entries[n].index));
    free(c->entries[n].page);
    uint32_t last = --c->count;
    if (n != last) {
        c->entries[n] = c->entries[last];
        c->slots[find_slot(c, c->entries[n].index)] = (int32_t)n;
    }
    if (c->hand >= c->count) c->hand = 0;
}

void pagecache_remove(pagecache *c, uint32_t index) {
    int32_t n = lookup(c, index);
    if (n >= 0) remove_entry(c, (uint32_t)n);
}

void pagecache_drop_from(pagecache *c, uint32_t first) {
    for (uint32_t n = c->count; n-- > 0;)
        if (c->entries[n].index >= first) remove_entry(c, n);
}

/* Room for one more entry: 0, or -1 when out of memory. */
static int grow(pagecache *c) {
    if (c->count == c->entries_cap) {
        uint32_t n = c->entries_cap ? c->entries_cap * 2 : 16;
        if (n > c->cap) n = c->cap;
        pagecache_entry *e = realloc(c->entries, (size_t)n * sizeof(*e));
        if (!e) return -1;
        c->entries = e;
        c->entries_cap = n;
    }
    if ((size_t)(c->count + 1) * 2 <= c->nslots) return 0;
    uint32_t ns = c->nslots ? c->nslots * 2 : 4;
    int32_t *slots = malloc((size_t)ns * sizeof(*slots));
    if (!slots) return -1;
    free(c->slots);
    c->slots = slots;
    c->nslots = ns;
    for (uint32_t i = 0; i < ns; i++) slots[i] = -1;
    for (uint32_t n = 0; n < c->count; n++) slots[find_slot(c, c->entries[n].index)] = (int32_t)n;
    return 0;
}

/* CLOCK: the entry to replace, or -1 when only page 0 is held. A page
 * put or read since the hand passed gets a second chance (so a batch read
 * ahead is not replaced before SQLite asks for it). */
static int32_t victim(pagecache *c) {
    for (uint32_t step = 0; step <= 2 * c->count; step++) {
        uint32_t n = c->hand;
        c->hand = (c->hand + 1) % c->count;
        pagecache_entry *e = &c->entries[n];
        if (e->index == 0) continue;
        if (!e->used) return (int32_t)n;
        e->used = 0;
    }
    return -1;
}

int pagecache_put(pagecache *c, uint32_t index, const void *data, uint32_t len) {
    if (len != c->page_len) {
        pagecache_clear(c);
        c->page_len = len;
        c->cap = pagecache_capacity(c, len);
    }
    int32_t n = lookup(c, index);
    if (n >= 0) {
        memcpy(c->entries[n].page, data, len);
        return 0;
    }
    if (c->count < c->cap) {
        if (grow(c) != 0) return -1;
        unsigned char *p = malloc(len);
        if (!p) return -1;
        memcpy(p, data, len);
        c->entries[c->count] = (pagecache_entry){index, 1, p};
        c->slots[find_slot(c, index)] = (int32_t)c->count;
        c->count++;
        return 0;
    }
    n = victim(c);
    if (n < 0) return 1;
    pagecache_entry *e = &c->entries[n];
    unlink_slot(c, find_slot(c, e->index));
    e->index = index;
    e->used = 1;
    memcpy(e->page, data, len);
    c->slots[find_slot(c, index)] = n;
    c->evictions++;
    return 0;
}

size_t pagecache_bytes(const pagecache *c) {
    return (size_t)c->count * c->page_len + (size_t)c->entries_cap * sizeof(pagecache_entry) +
           (size_t)c->nslots * sizeof(int32_t);
}
