/* format.h - the rules of the kvsql storage format in code (docs/FORMAT.md
 * is the text): page 1's header, page sizes. Used by every store and the
 * VFS, so each rule has one owner. */
#ifndef KVSQL_FORMAT_H
#define KVSQL_FORMAT_H

#include <stdint.h>

/* The page size recorded in page 1's header (bytes 16-17; 1 means 65536). */
static inline uint32_t kvsql_header_page_size(const unsigned char *page1) {
    uint32_t v = (uint32_t)page1[16] << 8 | page1[17];
    return v == 1 ? 65536 : v;
}

#endif
