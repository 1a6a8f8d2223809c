/* store.h - the page store interface: where a database's pages live.
 *
 * The VFS (vfs.c, dbfile.c) is written against this interface only. A store keeps
 * the pages of one database, page i+1 of the SQLite file at index i
 * (docs/FORMAT.md), hands out consistent snapshots of it, admits one writer
 * at a time and applies a transaction's pages as one atomic batch.
 * Implementations:
 *   store_memory.c            process memory (unit tests, slt, speedtest1)
 *   module/store/store_keyspace.c   a Redis hash, from inside the module
 *   module/store/store_snapshot.c   a snapshot of that hash, for SQL on a worker thread
 *   client/hash/store_redis.c      a Redis hash over the network (the `redis` VFS)
 *
 * A connection's transaction state is a kvsql_txn that the VFS owns and
 * passes to every call; a store may be shared by several connections (the
 * memory store is), so it keeps nothing per connection except through
 * txn->priv. tests/contract.c runs the same cases on every store.
 *
 * Life of a transaction:
 *
 *   NONE --begin--> READ --lock--> WRITE --commit--> WRITE ...
 *     ^               |              |
 *     +----unlock-----+----unlock----+   (unlock to READ drops only WRITE)
 *
 * Result codes, the whole contract (every other code is an error with the
 * same meaning as in SQLite; errmsg() says why in words for a user):
 *   SQLITE_OK             done.
 *   SQLITE_BUSY           lock: another connection is the writer. Nothing
 *                         changed; try again later (SQLite's busy handler).
 *   SQLITE_BUSY_SNAPSHOT  lock or commit: a commit landed after this
 *                         transaction's snapshot, so it may not write.
 *                         Nothing changed; unlock to NONE and begin again.
 *   SQLITE_IOERR_LOCK     commit: the write lease was lost (it expired and
 *                         maybe another writer took it). Nothing was
 *                         written.
 *   SQLITE_IOERR_SHORT_READ  read: the snapshot is too old, the history it
 *                         needs was dropped. Never wrong data.
 *   SQLITE_IOERR          any call: the store could not be reached (a
 *                         connection error). For commit the fate of the
 *                         batch is unknown: it landed whole or not at all,
 *                         and the next begin shows which.
 *   SQLITE_NOTADB         begin: what is stored is not a kvsql database.
 *   SQLITE_CANTOPEN, SQLITE_AUTH, SQLITE_PERM   begin: could not connect,
 *                         bad credentials, or not allowed.
 *   SQLITE_READONLY       lock: this store only reads.
 *   SQLITE_NOMEM          out of memory; nothing changed. */
#ifndef KVSQL_STORE_H
#define KVSQL_STORE_H

#include "kvsql_core.h"

#include <stdint.h>

typedef struct kvsql_store kvsql_store;

enum { KVSQL_LOCK_NONE = 0, KVSQL_LOCK_READ = 1, KVSQL_LOCK_WRITE = 2 };

/* One connection's transaction: owned by the VFS, filled in by the store. */
typedef struct kvsql_txn {
    int level;          /* KVSQL_LOCK_*: set by the store */
    uint64_t version;   /* the snapshot: commits since the database began */
    uint32_t npages;    /* database length in the snapshot, in pages */
    uint32_t page_size; /* 0 for an empty database */
    uint32_t generation; /* changes when the store may have lost track of the
                          * database (a reconnection: a failover may have
                          * lost commits, so a version number can repeat) */
    void *priv;         /* the store's own per-connection data (NULL at first) */
} kvsql_txn;

/* One page of a commit. */
typedef struct kvsql_page_ref {
    uint32_t index;
    const void *data; /* page_size bytes */
} kvsql_page_ref;

/* Everything one commit changes: the pages written and the new length. */
typedef struct kvsql_batch {
    uint32_t page_size;
    uint32_t npages;             /* database length after the commit, in pages */
    uint32_t count;              /* entries in pages[] */
    const kvsql_page_ref *pages; /* every index < npages, each at most once */
} kvsql_batch;

typedef struct kvsql_store_methods {
    /* NONE -> READ: takes a snapshot of the latest committed state and
     * fills t->version, npages, page_size. */
    int (*begin)(kvsql_store *s, kvsql_txn *t);
    /* Copies pages first .. first+count-1 as of t's snapshot into buf
     * (count * t->page_size bytes). Needs READ or WRITE; every index is
     * below t->npages. */
    int (*read)(kvsql_store *s, kvsql_txn *t, uint32_t first, uint32_t count, void *buf);
    /* READ -> WRITE: makes t the only writer, on its snapshot. */
    int (*lock)(kvsql_store *s, kvsql_txn *t);
    /* As the writer, applies b whole or not at all. On SQLITE_OK t's
     * snapshot is the new state (version + 1, b's length) and t stays the
     * writer. */
    int (*commit)(kvsql_store *s, kvsql_txn *t, const kvsql_batch *b);
    /* Down to `level` (READ or NONE): READ gives up the writer's lease and
     * keeps the snapshot; NONE also drops the snapshot. Cannot fail. */
    void (*unlock)(kvsql_store *s, kvsql_txn *t, int level);
    /* The last error in words, or "". */
    const char *(*errmsg)(kvsql_store *s);
    /* Frees the store; every txn on it is at NONE. */
    void (*destroy)(kvsql_store *s);
} kvsql_store_methods;

struct kvsql_store {
    const kvsql_store_methods *m;
    /* Why the VFS itself refused the transaction's commit (src/dbfile.c: a
     * new page size), "" when it did not; cleared by the next begin.
     * kvsql_store_errmsg() says it before errmsg()'s words. */
    char vfs_err[200];
};

#endif
