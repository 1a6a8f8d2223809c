/* store.h - the page store interface: where a database's pages live.
 *
 * The VFS (vfs.c) is written against this interface only. A store keeps
 * the pages of one database, page i+1 of the SQLite file at index i, and
 * applies a transaction's pages as one atomic batch. Implementations:
 *   store_memory.c    in-process memory (unit tests, slt, speedtest1)
 *   store_keyspace.c  a Redis hash, from inside the module
 * and next, a remote Redis reached over the network (the `redis` VFS),
 * which is why locking is spelled out: a remote store takes a snapshot at
 * KVSQL_LOCK_READ and a writer lease at KVSQL_LOCK_WRITE.
 *
 * Every method returns an SQLite result code; on failure errmsg() says
 * why, in words for the user. */
#ifndef KVSQL_STORE_H
#define KVSQL_STORE_H

#include <stdint.h>

typedef struct kvsql_store kvsql_store;

enum { KVSQL_LOCK_NONE = 0, KVSQL_LOCK_READ = 1, KVSQL_LOCK_WRITE = 2 };

/* One page of a commit. */
typedef struct kvsql_page_ref {
    uint32_t index;
    const void *data; /* page_size bytes */
} kvsql_page_ref;

/* Everything one commit changes: the pages written and the new length. */
typedef struct kvsql_batch {
    uint32_t page_size;
    uint32_t npages;          /* database length after the commit, in pages */
    uint32_t count;           /* entries in pages[] */
    const kvsql_page_ref *pages; /* every index < npages */
} kvsql_batch;

typedef struct kvsql_store_methods {
    /* Move between NONE, READ (a consistent snapshot) and WRITE (the only
     * writer). May answer SQLITE_BUSY when another writer holds the store. */
    int (*lock)(kvsql_store *s, int level);
    int (*unlock)(kvsql_store *s, int level);
    /* Length in pages and page size (0 and 0 for an empty database). */
    int (*size)(kvsql_store *s, uint32_t *npages, uint32_t *page_size);
    /* Copies page index into buf (page_size bytes). */
    int (*read)(kvsql_store *s, uint32_t index, void *buf, uint32_t page_size);
    /* Applies the batch whole, or not at all. */
    int (*commit)(kvsql_store *s, const kvsql_batch *b);
    const char *(*errmsg)(kvsql_store *s);
    void (*destroy)(kvsql_store *s);
} kvsql_store_methods;

struct kvsql_store {
    const kvsql_store_methods *m;
};

/* The page size recorded in page 1's header (bytes 16-17; 1 means 65536). */
static inline uint32_t kvsql_header_page_size(const unsigned char *page1) {
    uint32_t v = (uint32_t)page1[16] << 8 | page1[17];
    return v == 1 ? 65536 : v;
}

#endif
