/* pagemap.h - a hash map from page index to an owned page buffer.
 *
 * Used wherever pages are held in process memory: the VFS's dirty pages of
 * the open transaction, the memory store, and the module's pages pending
 * until the end of a command. Buffers are allocated with sqlite3_malloc so
 * that inside Redis they are counted by Redis's allocator. */
#ifndef KVSQL_PAGEMAP_H
#define KVSQL_PAGEMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct pagemap_slot {
    uint32_t index; /* page index (page number - 1) */
    void *page;     /* NULL: slot is empty */
} pagemap_slot;

#define PAGEMAP_SPARES 8

typedef struct pagemap {
    pagemap_slot *slots;
    size_t cap;   /* power of two, or 0 */
    size_t count; /* pages held */
    size_t page_len; /* length of the pages put last (all the same size) */
    /* buffers of emptied pages kept for reuse, all spare_len bytes */
    void *spare[PAGEMAP_SPARES];
    size_t nspare, spare_len;
} pagemap;

void pagemap_init(pagemap *m);
/* Frees every page and the table itself (a few page buffers go to a pool
 * every map shares, for the next map that needs one). */
void pagemap_clear(pagemap *m);
/* Empties the map but keeps its table and some page buffers for the next
 * use: the VFS and the module empty their maps at every commit. */
void pagemap_reset(pagemap *m);
void *pagemap_get(const pagemap *m, uint32_t index);
/* Copies len bytes into the page at index (allocating it if new). Every
 * page a map holds has one length. Returns 0, or -1 when out of memory or
 * when len is not the length of the pages held. */
int pagemap_put(pagemap *m, uint32_t index, const void *data, size_t len);
/* Frees and removes every page whose index is >= first. */
void pagemap_drop_from(pagemap *m, uint32_t first);
/* The commits a store holds until it writes them elsewhere: the module's
 * keyspace store until the end of a call, a worker's snapshot store until
 * the main thread writes them (src/module/). */
typedef struct pending_pages {
    pagemap map;        /* the pages committed, by index */
    int any;            /* something was committed */
    uint32_t npages;    /* the database's length after the commits */
    uint32_t page_size; /* and its page size */
} pending_pages;

struct kvsql_txn;
struct kvsql_batch;
/* One more commit: its pages over those held, the pages past its length
 * dropped, and the transaction's snapshot moved to it (version + 1, the
 * batch's length). Returns 0, or -1 when out of memory (the caller then
 * discards everything pending). */
int pending_add(pending_pages *p, struct kvsql_txn *t, const struct kvsql_batch *b);
/* Moves p's content to *out (p is left empty); 0 when nothing was pending. */
int pending_move(pending_pages *p, pending_pages *out);
/* Iteration: for (i = 0; i < m->cap; i++) if (m->slots[i].page) ... */

#endif
