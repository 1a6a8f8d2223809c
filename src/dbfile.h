/* dbfile.h - the main database file of a kvsql VFS: SQLite's file
 * methods over a page store (store.h), in the snapshot of the transaction
 * that SQLite's SHARED lock began.
 *
 * Writes are kept in `dirty` until SQLite syncs the file
 * (SQLITE_FCNTL_SYNC, sent even with synchronous=OFF, or xSync): then
 * they go to the store as one batch, which also carries the new length
 * from the header of page 1. Pages SQLite wrote early (a cache spill) and a
 * rollback then wrote back are committed as the old bytes they are; a
 * transaction that ends without a sync leaves dirty pages that are dropped
 * at unlock. SQLite is shown a file change counter that moves when the
 * snapshot does, so its page cache is kept exactly while valid.
 *
 * The VFS (vfs.c) makes one for each main database it opens; which store
 * a name means, and who else shares it, is the VFS's business. */
#ifndef KVSQL_DBFILE_H
#define KVSQL_DBFILE_H

#include "pagemap.h"
#include "store.h"

#include "sqlite.h"
#include <stdint.h>

typedef struct dbfile {
    sqlite3_file base;
    /* main database file */
    const char *vfs_name;
    void *owner;         /* the opener's (vfs.c: the registry entry of a shared store, else NULL) */
    void (*release)(struct dbfile *f); /* lets go of the store at close (the opener's) */
    kvsql_store *store;
    kvsql_txn txn;       /* the transaction on the store */
    int lock;            /* SQLITE_LOCK_* held */
    uint32_t page_size;  /* 0 until known */
    uint32_t npages;     /* length as SQLite sees it (snapshot + dirty) */
    int size_changed;    /* npages differs from the snapshot's */
    int refused;         /* the commit was refused (refuse_page_size): until the lock drops below RESERVED, nothing is written */
    /* Pages written since the last sync, or NULL: made at the first write,
     * freed by KVSQL_FCNTL_TRIM when empty. SQLite holds three files of
     * this size per connection (the database and two journals), so every
     * 8 bytes here are 24 per connection. */
    pagemap *dirty;
    unsigned char *scratch; /* one page, for reads smaller than a page; made on
                             * demand and freed by KVSQL_FCNTL_TRIM */
    uint64_t seen_version;
    /* The file change counter SQLite is shown (page 1, bytes 24-27): it
     * moves whenever the snapshot is not the version seen last, so that
     * SQLite keeps its page cache exactly while nothing changed. */
    uint32_t counter;
    uint32_t seen_generation;
    int seen_any;
} dbfile;

/* Makes f the main database file on store, for the VFS vfs_name (its
 * SQLITE_FCNTL_VFSNAME); release(f) is called at close, with f->owner
 * as given. */
void dbfile_init(dbfile *f, const char *vfs_name, kvsql_store *store, void *owner, void (*release)(dbfile *f));

#endif
