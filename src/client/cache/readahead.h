/* readahead.h - which pages a `redis` VFS store reads ahead of SQLite.
 *
 * Used by client/hash/store_read.c only. SQLite asks for one page at a time;
 * a miss that follows a scan's order brings more: the children of the
 * last b-tree interior page SQLite got, in key order (a table's leaves
 * wherever they lie in the file), then the next interior page of the scan
 * (the parent's next child); or else the next page numbers. The window
 * doubles at each such miss, up to the store's maximum, and falls back to
 * 1 at a miss elsewhere. Only a hint: the pages read are checked as any
 * other, and a malformed interior page only shortens the list. */
#ifndef KVSQL_CLIENT_READAHEAD_H
#define KVSQL_CLIENT_READAHEAD_H

#include "client/cache/pagecache.h"

#include <stdint.h>

enum { AHEAD_NONE, AHEAD_KIDS, AHEAD_LINE };

typedef struct readahead {
    uint32_t next_read;                 /* the page after the last one SQLite got */
    uint32_t window;                    /* pages the next expected miss reads */
    int kind;                           /* how the last miss read ahead: AHEAD_* */
    uint32_t *kids;                     /* children of the last interior page SQLite got */
    uint32_t nkids, kids_cap, kid_next; /* how many; room; the one a scan gets next */
    uint32_t *up;                       /* the list that page was in: its parent's children */
    uint32_t nup, up_cap, up_next;
} readahead;

/* Zeroed is a valid start; readahead_free frees the lists. */
void readahead_free(readahead *ra);

/* A transaction begins: the window starts again at 1. */
void readahead_begin(readahead *ra);

/* SQLite got page idx (page_size bytes at p): follow the scan. */
void readahead_note(readahead *ra, uint32_t idx, const unsigned char *p, uint32_t page_size);

/* The pages to read for a miss of the `run` pages from `at`: those, then
 * up to max - 1 more read ahead, none cached in c and all below npages.
 * Fills idx (room for run + max); returns how many. */
uint32_t readahead_plan(readahead *ra, const pagecache *c, uint32_t npages, uint32_t max, uint32_t at, uint32_t run,
                        uint32_t *idx);

/* Whether the window is full (a scan in its stride), and if so the
 * scan's next pages after page `at` that SQLite just got and was noted:
 * up to the window, none cached. Fills idx (room for max); returns how
 * many, 0 when not scanning. */
uint32_t readahead_next(const readahead *ra, const pagecache *c, uint32_t npages, uint32_t max, uint32_t at,
                        uint32_t *idx);

#endif
