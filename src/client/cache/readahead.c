/* readahead.c - which pages a `redis` VFS store reads ahead of SQLite
 * (readahead.h); called by client/hash/store_read.c. */
#include "client/cache/readahead.h"
#include "sqlite.h"

#include <stdlib.h>

void readahead_free(readahead *ra) {
    free(ra->kids);
    free(ra->up);
    *ra = (readahead){0};
}

void readahead_begin(readahead *ra) {
    ra->window = 1;
}

static uint32_t get16(const unsigned char *p) {
    return (uint32_t)p[0] << 8 | p[1];
}

static uint32_t get32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A new list of children comes for interior page idx: when the scan went
 * down into idx from the current list, that list becomes the parent's
 * (whose next child is the next interior page of the scan); when idx is
 * the parent's next child, the parent's stays; else there is none. */
static void descend(readahead *ra, uint32_t idx) {
    if (ra->kid_next > 0 && ra->kid_next <= ra->nkids && ra->kids[ra->kid_next - 1] == idx) {
        uint32_t *k = ra->up, cap = ra->up_cap;
        ra->up = ra->kids, ra->up_cap = ra->kids_cap, ra->nup = ra->nkids, ra->up_next = ra->kid_next;
        ra->kids = k, ra->kids_cap = cap, ra->nkids = 0;
    } else if (ra->up_next < ra->nup && ra->up[ra->up_next] == idx) {
        ra->up_next++;
    } else {
        ra->nup = 0;
    }
}

/* Keeps the children of page idx when it is a b-tree interior page: the
 * cells' left children in order, then the right-most (SQLite's file
 * format; page 1's header comes first). */
static void note_interior(readahead *ra, uint32_t idx, const unsigned char *p, uint32_t psz) {
    uint32_t h = idx == 0 ? 100 : 0;
    if (psz < 512 || (p[h] != 0x02 && p[h] != 0x05)) return;
    uint32_t ncells = get16(p + h + 3);
    if (ncells > psz / 4) return;
    descend(ra, idx);
    if (ncells + 1 > ra->kids_cap) {
        uint32_t *k = realloc(ra->kids, (ncells + 1) * sizeof(*k));
        if (!k) {
            ra->nkids = 0;
            return;
        }
        ra->kids = k;
        ra->kids_cap = ncells + 1;
    }
    uint32_t n = 0;
    for (uint32_t i = 0; i < ncells && h + 12 + 2 * i + 2 <= psz; i++) {
        uint32_t off = get16(p + h + 12 + 2 * i);
        if (off < h + 12 || off + 4 > psz) break;
        ra->kids[n++] = get32(p + off) - 1;
    }
    if (n == ncells) ra->kids[n++] = get32(p + h + 8) - 1;
    ra->nkids = n;
    ra->kid_next = 0;
}

void readahead_note(readahead *ra, uint32_t idx, const unsigned char *p, uint32_t page_size) {
    if (ra->kid_next < ra->nkids && ra->kids[ra->kid_next] == idx) ra->kid_next++;
    note_interior(ra, idx, p, page_size);
    ra->next_read = idx + 1;
}

/* Appends to idx (n used) up to `max` pages in all, uncached, below
 * npages and not among the `skip` from `at`, following ra->kind: the
 * children from position `from` on, then the parent's next child; or the
 * pages after `at`. */
static uint32_t add_ahead(const readahead *ra, const pagecache *c, uint32_t npages, uint32_t at, uint32_t skip,
                          uint32_t from, uint32_t *idx, uint32_t n, uint32_t max) {
    if (ra->kind == AHEAD_KIDS) {
        for (uint32_t k = from; k <= ra->nkids && n < max; k++) {
            if (k == ra->nkids && ra->up_next >= ra->nup) break;
            uint32_t i = k < ra->nkids ? ra->kids[k] : ra->up[ra->up_next];
            if (i < npages && (i < at || i >= at + skip) && !pagecache_has(c, i)) idx[n++] = i;
        }
    } else if (ra->kind == AHEAD_LINE) {
        for (uint32_t i = at + skip; i < npages && i < at + 2 * max && n < max; i++)
            if (!pagecache_has(c, i)) idx[n++] = i;
    }
    return n;
}

uint32_t readahead_plan(readahead *ra, const pagecache *c, uint32_t npages, uint32_t max, uint32_t at, uint32_t run,
                        uint32_t *idx) {
    int in_list = ra->kid_next < ra->nkids && ra->kids[ra->kid_next] == at;
    int in_line = at == ra->next_read;
    uint32_t n = 0;
    for (; n < run; n++) idx[n] = at + n;
    if (in_list || in_line) ra->window = ra->window * 2 < max ? ra->window * 2 : max;
    else if (!(ra->nkids && ra->kid_next == ra->nkids)) ra->window = 1; /* not a scan's next interior page */
    if (ra->window > max) ra->window = max;
    ra->kind = in_list ? AHEAD_KIDS : in_line ? AHEAD_LINE : AHEAD_NONE;
    return add_ahead(ra, c, npages, at, run, ra->kid_next + 1, idx, n, run + ra->window - 1);
}

uint32_t readahead_next(const readahead *ra, const pagecache *c, uint32_t npages, uint32_t max, uint32_t at,
                        uint32_t *idx) {
    if (ra->window < max || ra->kind == AHEAD_NONE) return 0;
    return add_ahead(ra, c, npages, at, 1, ra->kid_next, idx, 0, ra->window);
}
