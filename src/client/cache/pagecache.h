/* pagecache.h - the bounded page cache of a `redis` VFS store.
 *
 * Used by client/hash/store_redis.c only: each store keeps the pages it read
 * (and wrote) as of one version of its database here, so that a warm
 * transaction costs no page reads. The cache never holds more than its
 * byte limit (the URI parameter cache_kb=, docs/LIBRARY.md): the page
 * buffers plus its own tables count; the allocator's overhead per buffer
 * does not. When full, a new page replaces one chosen by CLOCK (second
 * chance): a page read since the hand last passed it stays, so the root
 * and interior pages of the b-trees survive a scan while the scan's leaves
 * take turns. Page 0 (the header) is never replaced: a begin needs it to
 * find the cache warm. Every page held has the same length. */
#ifndef KVSQL_CLIENT_PAGECACHE_H
#define KVSQL_CLIENT_PAGECACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct pagecache_entry {
    uint32_t index;      /* page index (page number - 1) */
    uint32_t used;       /* put or read since the hand last passed */
    unsigned char *page; /* page_len bytes */
} pagecache_entry;

typedef struct pagecache {
    size_t limit;          /* bytes it may use */
    uint32_t page_len;     /* length of the pages held; 0 before the first */
    uint32_t cap;          /* pages it may hold at page_len (at least 1) */
    uint32_t count;        /* pages held: entries 0..count-1 */
    uint32_t entries_cap;  /* entries allocated */
    pagecache_entry *entries;
    int32_t *slots;        /* hash of index -> entry number, -1 empty */
    uint32_t nslots;       /* power of two, or 0 */
    uint32_t hand;         /* CLOCK's hand: the next entry it looks at */
    uint64_t evictions;    /* pages replaced to make room */
} pagecache;

/* An empty cache that may use limit bytes. */
void pagecache_init(pagecache *c, size_t limit);
/* Frees everything; the cache stays usable (empty). */
void pagecache_clear(pagecache *c);
/* Drops every page (frees them). */
void pagecache_reset(pagecache *c);
/* The page at index, marking it used; NULL when absent. */
const void *pagecache_get(pagecache *c, uint32_t index);
/* Whether index is held, without marking it. */
int pagecache_has(const pagecache *c, uint32_t index);
/* Copies len bytes as the page at index. A page of another length than
 * those held first drops them all. Returns 0 when kept, 1 when there was
 * no room (only page 0 held, and the limit allows one page), -1 when out
 * of memory (the cache is then unchanged but for index, dropped). */
int pagecache_put(pagecache *c, uint32_t index, const void *data, uint32_t len);
/* Drops the page at index if held. */
void pagecache_remove(pagecache *c, uint32_t index);
/* Drops every page whose index is >= first. */
void pagecache_drop_from(pagecache *c, uint32_t first);
/* Pages it may hold at page length len (at least 1). */
uint32_t pagecache_capacity(const pagecache *c, uint32_t len);
/* Bytes in use: page buffers plus tables. */
size_t pagecache_bytes(const pagecache *c);

#endif
