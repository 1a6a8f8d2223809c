/* vfs.c - the SQLite VFS of kvsql: database files on a page store.
 *
 * Called by SQLite. Each VFS registered with kvsql_vfs_register() (vfs.h)
 * turns a file name into a store: "kvsql" takes the store kvsql_open()
 * handed over, "kvsql-memory" makes a memory store per name, "redis"
 * (src/client/) connects to a Redis server. The main database file reads
 * and writes pages through the store (store.h), in the snapshot of the
 * transaction that SQLite's SHARED lock began. Every other file SQLite
 * asks for (rollback journal, statement journal, temp databases) is a
 * memfile (memfile.c) that never reaches the store; WAL files are refused,
 * so WAL mode cannot be entered.
 *
 * Writes to the database file are kept in `dirty` until SQLite syncs the
 * file (SQLITE_FCNTL_SYNC, sent even with synchronous=OFF, or xSync): then
 * they go to the store as one batch, which also carries the new length
 * from the header of page 1. Pages SQLite wrote early (a cache spill) and a
 * rollback then wrote back are committed as the old bytes they are; a
 * transaction that ends without a sync leaves dirty pages that are dropped
 * at unlock. */
#include "kvsql.h"
#include "sqlite.h"
#include "format.h"
#include "memfile.h"
#include "pagemap.h"
#include "store.h"
#include "vfs.h"

#include <stdio.h>
#include <string.h>

/* SQLite's mxPathname: the longest file name SQLite lets a VFS open is
 * MAX_PATHNAME - 8 bytes (the pager keeps room for "-journal"), so this is
 * what bounds the key of a redis database. SQLite allocates twice this,
 * for a moment, at each open; 64 KiB keeps that small. */
#define MAX_PATHNAME 65536
#define MAX_NAME (MAX_PATHNAME - 8)

/* ---- registry: file name -> shared store -------------------------------- */

typedef struct entry {
    char *name;
    kvsql_store *store;
    int refs;        /* open database files on it */
    int owned;       /* destroy the store with the last close */
    struct entry *next;
} entry;

static entry *registry;
static unsigned registry_seq;

static sqlite3_mutex *registry_mutex(void) {
    return sqlite3_mutex_alloc(SQLITE_MUTEX_STATIC_VFS1);
}

static entry *registry_find(const char *name) {
    for (entry *e = registry; e; e = e->next)
        if (strcmp(e->name, name) == 0) return e;
    return NULL;
}

static entry *registry_add(const char *name, kvsql_store *store, int owned) {
    entry *e = sqlite3_malloc(sizeof(*e));
    char *copy = sqlite3_mprintf("%s", name);
    if (!e || !copy) {
        sqlite3_free(e);
        sqlite3_free(copy);
        return NULL;
    }
    *e = (entry){copy, store, 0, owned, registry};
    registry = e;
    return e;
}

/* Unlinks e (caller holds the mutex) and destroys its store if owned. */
static void registry_remove(entry *e) {
    for (entry **p = &registry; *p; p = &(*p)->next) {
        if (*p != e) continue;
        *p = e->next;
        break;
    }
    if (e->owned) e->store->m->destroy(e->store);
    sqlite3_free(e->name);
    sqlite3_free(e);
}

/* ---- the words of the last failed open ---------------------------------- */

static _Thread_local char last_error[512];

const char *kvsql_vfs_errmsg(void) {
    return last_error;
}

void kvsql_vfs_set_errmsg(const char *msg) {
    snprintf(last_error, sizeof(last_error), "%s", msg ? msg : "");
}

/* ---- files ------------------------------------------------------------- */

typedef struct file {
    sqlite3_file base;
    /* main database file */
    const char *vfs_name;
    entry *entry;        /* registry entry when the store is shared, else NULL */
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
} file;

/* Every file of a kvsql VFS is one of these, or a memfile. */
_Static_assert(sizeof(file) >= sizeof(memfile), "szOsFile must fit a memory file");

static int set_page_size(file *f, uint32_t psz) {
    if (f->page_size == psz) return SQLITE_OK;
    sqlite3_free(f->scratch);
    f->scratch = NULL;
    f->page_size = psz;
    return SQLITE_OK;
}

/* The scratch page, made if needed; NULL when out of memory. */
static unsigned char *scratch(file *f) {
    if (!f->scratch) f->scratch = sqlite3_malloc64(f->page_size);
    return f->scratch;
}

/* ---- dirty pages ---- */

static size_t dirty_count(const file *f) {
    return f->dirty ? f->dirty->count : 0;
}

static void *dirty_get(const file *f, uint32_t idx) {
    return f->dirty ? pagemap_get(f->dirty, idx) : NULL;
}

/* The map of dirty pages, made if needed; NULL when out of memory. */
static pagemap *dirty_map(file *f) {
    if (!f->dirty && (f->dirty = sqlite3_malloc(sizeof(*f->dirty)))) pagemap_init(f->dirty);
    return f->dirty;
}

static void dirty_drop_from(file *f, uint32_t first) {
    if (f->dirty) pagemap_drop_from(f->dirty, first);
}

static void free_dirty(file *f) {
    if (!f->dirty) return;
    pagemap_clear(f->dirty);
    sqlite3_free(f->dirty);
    f->dirty = NULL;
}

/* Frees what an idle file keeps for speed (KVSQL_FCNTL_TRIM). */
static void trim(file *f) {
    sqlite3_free(f->scratch);
    f->scratch = NULL;
    if (dirty_count(f) == 0) free_dirty(f);
}

/* Brings page_size and npages in line with the transaction's snapshot. */
static int load_snapshot(file *f) {
    f->npages = f->txn.npages;
    f->size_changed = 0;
    return f->txn.page_size ? set_page_size(f, f->txn.page_size) : SQLITE_OK;
}

static void drop_dirty(file *f) {
    if (f->dirty) pagemap_reset(f->dirty);
    f->size_changed = 0;
}

static uint32_t get32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8),
    p[3] = (unsigned char)v;
}

/* Shows SQLite our change counter in a stored page 1; the "version valid
 * for" copy (bytes 92-95) too when it matched, so the header's page count
 * stays trusted exactly when it was. */
static void show_counter(file *f, unsigned char *page1) {
    if (f->page_size < 100) return;
    if (memcmp(page1 + 24, page1 + 92, 4) == 0) put32(page1 + 92, f->counter);
    put32(page1 + 24, f->counter);
}

/* Copies page idx into out (a whole page): dirty first, then the store. */
static int read_page(file *f, uint32_t idx, unsigned char *out) {
    void *d = dirty_get(f, idx);
    if (d) {
        memcpy(out, d, f->page_size);
        return SQLITE_OK;
    }
    if (idx >= f->txn.npages) { /* written, then cut off by a rollback to a savepoint */
        memset(out, 0, f->page_size);
        return SQLITE_OK;
    }
    int rc = f->store->m->read(f->store, &f->txn, idx, 1, out);
    if (rc == SQLITE_OK && idx == 0) show_counter(f, out);
    /* SQLite takes SHORT_READ from xRead as "zeros past the end" and goes
     * on: a store's "snapshot too old" must reach it as an error. */
    return rc == SQLITE_IOERR_SHORT_READ ? SQLITE_IOERR_READ : rc;
}

static int db_read(sqlite3_file *pf, void *dst, int amt, sqlite3_int64 off) {
    file *f = (file *)pf;
    unsigned char *out = dst;
    if (f->page_size == 0 || f->npages == 0) {
        memset(dst, 0, amt);
        return SQLITE_IOERR_SHORT_READ;
    }
    while (amt > 0) {
        uint32_t idx = (uint32_t)(off / f->page_size);
        uint32_t in = (uint32_t)(off % f->page_size);
        int n = (int)(f->page_size - in) < amt ? (int)(f->page_size - in) : amt;
        if (idx >= f->npages) {
            memset(out, 0, amt);
            return SQLITE_IOERR_SHORT_READ;
        }
        int whole = (in == 0 && n == (int)f->page_size);
        if (!whole && !scratch(f)) return SQLITE_NOMEM;
        int rc = read_page(f, idx, whole ? out : f->scratch);
        if (rc != SQLITE_OK) return rc;
        if (!whole) memcpy(out, f->scratch + in, n);
        out += n;
        off += n;
        amt -= n;
    }
    return SQLITE_OK;
}

static int db_write(sqlite3_file *pf, const void *src, int amt, sqlite3_int64 off) {
    file *f = (file *)pf;
    if (f->refused) return SQLITE_OK; /* the rollback of a refused commit (refuse_page_size) */
    if (f->page_size == 0 || (f->npages == 0 && dirty_count(f) == 0)) {
        /* The first write of an empty database fixes the page size. */
        if (!kvsql_page_size_valid((uint64_t)amt) || off % amt) return SQLITE_IOERR_WRITE;
        if (set_page_size(f, (uint32_t)amt) != SQLITE_OK) return SQLITE_NOMEM;
    }
    const unsigned char *in = src;
    if (!dirty_map(f)) return SQLITE_NOMEM;
    while (amt > 0) {
        uint32_t idx = (uint32_t)(off / f->page_size);
        uint32_t at = (uint32_t)(off % f->page_size);
        int n = (int)(f->page_size - at) < amt ? (int)(f->page_size - at) : amt;
        if (n != (int)f->page_size) {
            /* Part of a page: read, modify, write. */
            if (!scratch(f)) return SQLITE_NOMEM;
            if (idx < f->npages) {
                int rc = read_page(f, idx, f->scratch);
                if (rc != SQLITE_OK) return rc;
            } else {
                memset(f->scratch, 0, f->page_size);
            }
            memcpy(f->scratch + at, in, n);
        }
        const void *page = n == (int)f->page_size ? (const void *)in : f->scratch;
        if (pagemap_put(f->dirty, idx, page, f->page_size) != 0) return SQLITE_NOMEM;
        if (idx >= f->npages) {
            f->npages = idx + 1;
            f->size_changed = 1;
        }
        in += n;
        off += n;
        amt -= n;
    }
    return SQLITE_OK;
}

static int db_truncate(sqlite3_file *pf, sqlite3_int64 size) {
    file *f = (file *)pf;
    if (f->page_size == 0) return SQLITE_OK;
    uint32_t n = (uint32_t)((size + f->page_size - 1) / f->page_size);
    if (n < f->npages) {
        f->npages = n;
        f->size_changed = 1;
        dirty_drop_from(f, n);
    }
    return SQLITE_OK;
}

/* A commit that would change the page size (VACUUM after PRAGMA
 * page_size, a backup of a database of other pages) is refused: the page
 * size of a stored database never changes (docs/FORMAT.md). Nothing was
 * written, and nothing else of the transaction may be: SQLite's rollback
 * writes the journal's pages back and syncs, which would commit page 1
 * with a new change counter. So until the lock drops below RESERVED the
 * file takes no write and commits nothing (the store still holds the
 * snapshot SQLite rolls back to). */
static int refuse_page_size(file *f, uint32_t psz) {
    snprintf(f->store->vfs_err, sizeof(f->store->vfs_err),
             "the page size of a stored database cannot change (from %u to %u bytes: PRAGMA page_size then VACUUM, "
             "or a backup of a database of other pages); nothing was written",
             f->page_size, psz);
    kvsql_vfs_set_errmsg(f->store->vfs_err);
    f->refused = 1;
    drop_dirty(f);
    return SQLITE_IOERR_WRITE;
}

/* SQLite shrinks the file only after the commit's sync; the header of page
 * 1 already says the new length, so the batch can carry it. A header with
 * another page size is refused (refuse_page_size). */
static int apply_header_length(file *f) {
    const unsigned char *h = dirty_get(f, 0);
    if (!h) return SQLITE_OK; /* header unchanged: so is the length it records */
    if (kvsql_header_page_size(h) != f->page_size) return refuse_page_size(f, kvsql_header_page_size(h));
    uint32_t n = get32(h + 28);
    int valid = memcmp(h + 24, h + 92, 4) == 0; /* change counter == valid-for */
    if (valid && n > 0 && n < f->npages) {
        f->npages = n;
        f->size_changed = 1;
        dirty_drop_from(f, n);
    }
    return SQLITE_OK;
}

/* After our own commit SQLite's cache is current: remember the counter it
 * wrote and the version the commit made. */
static void note_own_commit(file *f) {
    const unsigned char *h = dirty_get(f, 0);
    if (h) f->counter = get32(h + 24);
    f->seen_version = f->txn.version;
}

/* The lock-byte page, when this commit must store it: SQLite never writes
 * it, yet the format keeps every field from 0 to the length (a zero page,
 * docs/FORMAT.md). Needed when the new length covers it for the first time
 * and SQLite did not write it. Returns 1 when needed. */
static int needs_lock_byte_page(const file *f) {
    uint32_t lb = kvsql_lock_byte_index(f->page_size);
    return lb < f->npages && lb >= f->txn.npages && !dirty_get(f, lb);
}

/* Hands the dirty pages to the store as one batch. */
static int commit_dirty(file *f) {
    if (f->refused) { /* the rollback of a refused commit: the store holds its snapshot */
        drop_dirty(f);
        return SQLITE_OK;
    }
    int rc = apply_header_length(f);
    if (rc != SQLITE_OK) return rc;
    if (dirty_count(f) == 0 && !f->size_changed) return SQLITE_OK;
    int add_lock_byte = needs_lock_byte_page(f);
    kvsql_page_ref *refs = sqlite3_malloc64(sizeof(*refs) * (dirty_count(f) + 2));
    void *zeros = add_lock_byte ? sqlite3_malloc64(f->page_size) : NULL;
    if (!refs || (add_lock_byte && !zeros)) {
        sqlite3_free(refs);
        sqlite3_free(zeros);
        return SQLITE_NOMEM;
    }
    uint32_t n = 0;
    for (size_t i = 0; f->dirty && i < f->dirty->cap; i++) {
        pagemap_slot *s = &f->dirty->slots[i];
        if (s->page && s->index < f->npages) refs[n++] = (kvsql_page_ref){s->index, s->page};
    }
    if (add_lock_byte) {
        memset(zeros, 0, f->page_size);
        refs[n++] = (kvsql_page_ref){kvsql_lock_byte_index(f->page_size), zeros};
    }
    kvsql_batch b = {f->page_size, f->npages, n, refs};
    rc = f->store->m->commit(f->store, &f->txn, &b);
    sqlite3_free(refs);
    sqlite3_free(zeros);
    if (rc != SQLITE_OK) return rc;
    note_own_commit(f);
    drop_dirty(f);
    return SQLITE_OK;
}

static int db_sync(sqlite3_file *pf, int flags) {
    (void)flags;
    return commit_dirty((file *)pf);
}

static int db_file_size(sqlite3_file *pf, sqlite3_int64 *size) {
    file *f = (file *)pf;
    *size = (sqlite3_int64)f->npages * f->page_size;
    return SQLITE_OK;
}

/* A new snapshot: SQLite's cache stays good only if it is the version this
 * file saw last, through the same connection to the store. */
static int begin_snapshot(file *f) {
    f->store->vfs_err[0] = 0;
    int rc = f->store->m->begin(f->store, &f->txn);
    if (rc != SQLITE_OK) return rc;
    if (!f->seen_any || f->txn.version != f->seen_version || f->txn.generation != f->seen_generation) {
        f->counter++;
        f->seen_version = f->txn.version;
        f->seen_generation = f->txn.generation;
        f->seen_any = 1;
    }
    rc = load_snapshot(f);
    if (rc != SQLITE_OK) f->store->m->unlock(f->store, &f->txn, KVSQL_LOCK_NONE);
    else kvsql_vfs_set_errmsg(""); /* a transaction began: an older failure is not the last error */
    return rc;
}

static int db_lock(sqlite3_file *pf, int level) {
    file *f = (file *)pf;
    if (level <= f->lock) return SQLITE_OK;
    int rc;
    if (f->lock == SQLITE_LOCK_NONE && (rc = begin_snapshot(f)) != SQLITE_OK) return rc;
    f->lock = SQLITE_LOCK_SHARED;
    if (level >= SQLITE_LOCK_RESERVED && f->txn.level < KVSQL_LOCK_WRITE &&
        (rc = f->store->m->lock(f->store, &f->txn)) != SQLITE_OK)
        return rc;
    f->lock = level;
    return SQLITE_OK;
}

static int db_unlock(sqlite3_file *pf, int level) {
    file *f = (file *)pf;
    if (level >= f->lock) return SQLITE_OK;
    if (f->lock >= SQLITE_LOCK_RESERVED && level < SQLITE_LOCK_RESERVED) {
        /* Dirty pages left: the transaction ended without a sync, it was
         * rolled back. */
        if (dirty_count(f) + f->size_changed > 0) drop_dirty(f);
        f->refused = 0;
        f->store->m->unlock(f->store, &f->txn, KVSQL_LOCK_READ);
        load_snapshot(f);
    }
    if (level == SQLITE_LOCK_NONE) f->store->m->unlock(f->store, &f->txn, KVSQL_LOCK_NONE);
    f->lock = level;
    return SQLITE_OK;
}

static int db_check_reserved(sqlite3_file *pf, int *out) {
    (void)pf;
    *out = 0; /* other writers are the store's to refuse at lock time */
    return SQLITE_OK;
}

static int db_file_control(sqlite3_file *pf, int op, void *arg) {
    file *f = (file *)pf;
    /* The commit point. Phase two follows it: anything still dirty then
     * (SQLite may truncate after the sync) is part of the same commit. */
    if (op == SQLITE_FCNTL_SYNC || op == SQLITE_FCNTL_COMMIT_PHASETWO) return commit_dirty(f);
    if (op == SQLITE_FCNTL_VFSNAME) {
        *(char **)arg = sqlite3_mprintf("%s", f->vfs_name);
        return SQLITE_OK;
    }
    if (op == KVSQL_FCNTL_TRIM) {
        trim(f);
        return SQLITE_OK;
    }
    if (op == KVSQL_FCNTL_STORE) {
        *(kvsql_fcntl_store *)arg = (kvsql_fcntl_store){f->store, &f->txn};
        return SQLITE_OK;
    }
    return SQLITE_NOTFOUND;
}

static int sector_size(sqlite3_file *pf) {
    (void)pf;
    return 512;
}

static int device_characteristics(sqlite3_file *pf) {
    (void)pf;
    return SQLITE_IOCAP_POWERSAFE_OVERWRITE;
}

/* Lets go of f's store: destroyed, or one reference fewer when shared. */
static void release_store(file *f) {
    if (!f->entry) {
        f->store->m->destroy(f->store);
        return;
    }
    sqlite3_mutex *mx = registry_mutex();
    sqlite3_mutex_enter(mx);
    if (--f->entry->refs == 0) registry_remove(f->entry);
    sqlite3_mutex_leave(mx);
}

static int db_close(sqlite3_file *pf) {
    file *f = (file *)pf;
    free_dirty(f);
    sqlite3_free(f->scratch);
    if (f->txn.level != KVSQL_LOCK_NONE) f->store->m->unlock(f->store, &f->txn, KVSQL_LOCK_NONE);
    release_store(f);
    return SQLITE_OK;
}

static const sqlite3_io_methods db_methods = {
    .iVersion = 1,
    .xClose = db_close,
    .xRead = db_read,
    .xWrite = db_write,
    .xTruncate = db_truncate,
    .xSync = db_sync,
    .xFileSize = db_file_size,
    .xLock = db_lock,
    .xUnlock = db_unlock,
    .xCheckReservedLock = db_check_reserved,
    .xFileControl = db_file_control,
    .xSectorSize = sector_size,
    .xDeviceCharacteristics = device_characteristics,
    /* version 2 and 3 methods (shared memory, mmap): none, no WAL here */
};

/* ---- the VFS ----------------------------------------------------------- */

/* pAppData of each VFS: how a file name becomes a store. */
typedef struct vfs_info {
    kvsql_store_opener open; /* NULL: only names that kvsql_open registered */
    int share_by_name;
} vfs_info;

/* The registry entry for name, made with the opener if new; NULL with *rc
 * set when there is none. Takes a reference. */
static entry *acquire_shared(const vfs_info *vi, const char *name, int *rc) {
    sqlite3_mutex *mx = registry_mutex();
    sqlite3_mutex_enter(mx);
    entry *e = registry_find(name);
    if (!e && vi->open) {
        kvsql_store *st = NULL;
        *rc = vi->open(name, &st);
        if (*rc == SQLITE_OK && !(e = registry_add(name, st, 1))) {
            st->m->destroy(st);
            *rc = SQLITE_NOMEM;
        }
    } else if (!e) {
        *rc = SQLITE_CANTOPEN;
    }
    if (e) e->refs++;
    sqlite3_mutex_leave(mx);
    return e;
}

/* A read-only open needs a database, as SQLite's own VFS needs the file:
 * SQLITE_CANTOPEN when the store holds none. */
static int require_database(file *f, const char *name) {
    int rc = f->store->m->begin(f->store, &f->txn);
    uint32_t npages = f->txn.npages;
    if (rc == SQLITE_OK) f->store->m->unlock(f->store, &f->txn, KVSQL_LOCK_NONE);
    if (rc != SQLITE_OK || npages > 0) return rc;
    char msg[300];
    snprintf(msg, sizeof(msg), "%.200s holds no database (a read-only open needs one)", name);
    kvsql_vfs_set_errmsg(msg);
    return SQLITE_CANTOPEN;
}

static int open_db(sqlite3_vfs *vfs, const char *name, file *f, int flags) {
    const vfs_info *vi = vfs->pAppData;
    memset(f, 0, sizeof(*f));
    if (!name) return SQLITE_CANTOPEN;
    int rc = SQLITE_OK;
    if (vi->share_by_name || !vi->open) {
        f->entry = acquire_shared(vi, name, &rc);
        if (f->entry) f->store = f->entry->store;
    } else {
        rc = vi->open(name, &f->store);
    }
    if (rc != SQLITE_OK) return rc;
    if (vi->open && (flags & SQLITE_OPEN_READONLY) && (rc = require_database(f, name)) != SQLITE_OK) {
        release_store(f);
        return rc;
    }
    f->vfs_name = vfs->zName;
    f->base.pMethods = &db_methods;
    return SQLITE_OK;
}

static int vfs_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *pf, int flags, int *out_flags) {
    file *f = (file *)pf;
    if (flags & SQLITE_OPEN_WAL) return SQLITE_CANTOPEN; /* no WAL: no shared memory here */
    if (out_flags) *out_flags = flags;
    if (flags & SQLITE_OPEN_MAIN_DB) return open_db(vfs, name, f, flags);
    memfile_open(pf); /* journals and temp files: process memory */
    return SQLITE_OK;
}

static int vfs_delete(sqlite3_vfs *vfs, const char *name, int sync) {
    (void)vfs;
    (void)name;
    (void)sync;
    return SQLITE_OK; /* memory files vanish on close */
}

static int vfs_access(sqlite3_vfs *vfs, const char *name, int flags, int *out) {
    (void)vfs;
    (void)name;
    (void)flags;
    *out = 0; /* no journal ever outlives its connection */
    return SQLITE_OK;
}

static int vfs_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out) {
    (void)vfs;
    size_t len = strlen(name);
    if (len > MAX_NAME || (int)len >= n) {
        char msg[200];
        snprintf(msg, sizeof(msg), "the name is %zu bytes: a %s database's name (its key) may have at most %d",
                 len, vfs->zName, MAX_NAME);
        kvsql_vfs_set_errmsg(msg);
        return SQLITE_CANTOPEN;
    }
    memcpy(out, name, strlen(name) + 1);
    return SQLITE_OK;
}

static void *vfs_dlopen(sqlite3_vfs *vfs, const char *path) {
    (void)vfs;
    (void)path;
    return NULL; /* no extension loading */
}

static void vfs_dlerror(sqlite3_vfs *vfs, int n, char *msg) {
    (void)vfs;
    snprintf(msg, n, "loading extensions is not supported by kvsql");
}

static void (*vfs_dlsym(sqlite3_vfs *vfs, void *h, const char *sym))(void) {
    (void)vfs;
    (void)h;
    (void)sym;
    return NULL;
}

static void vfs_dlclose(sqlite3_vfs *vfs, void *h) {
    (void)vfs;
    (void)h;
}

/* Randomness, sleep and time come from the operating system's VFS: the
 * default one, unless a kvsql VFS is the default (KVSQL_DEFAULT), which
 * would call itself for ever. */
static sqlite3_vfs *os_vfs(void) {
    sqlite3_vfs *d = sqlite3_vfs_find(NULL);
    if (d && d->xOpen == vfs_open) d = sqlite3_vfs_find("unix");
    return d;
}

static int vfs_randomness(sqlite3_vfs *vfs, int n, char *out) {
    (void)vfs;
    sqlite3_vfs *d = os_vfs();
    return d->xRandomness(d, n, out);
}

static int vfs_sleep(sqlite3_vfs *vfs, int us) {
    (void)vfs;
    sqlite3_vfs *d = os_vfs();
    return d->xSleep(d, us);
}

static int vfs_current_time(sqlite3_vfs *vfs, double *t) {
    (void)vfs;
    sqlite3_vfs *d = os_vfs();
    return d->xCurrentTime(d, t);
}

static int vfs_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *t) {
    (void)vfs;
    sqlite3_vfs *d = os_vfs();
    if (d->iVersion >= 2 && d->xCurrentTimeInt64) return d->xCurrentTimeInt64(d, t);
    double r;
    int rc = d->xCurrentTime(d, &r);
    *t = (sqlite3_int64)(r * 86400000.0);
    return rc;
}

static int vfs_last_error(sqlite3_vfs *vfs, int n, char *out) {
    (void)vfs;
    (void)n;
    (void)out;
    return 0;
}

/* Registers a VFS named vfs_name; see vfs.h. The VFS object and its name
 * live until the process ends, as SQLite requires. */
int kvsql_vfs_register(const char *vfs_name, kvsql_store_opener open, int share_by_name, int make_default) {
    int rc = sqlite3_initialize();
    if (rc != SQLITE_OK) return rc;
    sqlite3_mutex *mx = registry_mutex();
    sqlite3_mutex_enter(mx);
    sqlite3_vfs *vfs = sqlite3_vfs_find(vfs_name);
    if (!vfs) {
        size_t n = strlen(vfs_name) + 1;
        vfs = sqlite3_malloc64(sizeof(*vfs) + sizeof(vfs_info) + n);
        if (!vfs) {
            sqlite3_mutex_leave(mx);
            return SQLITE_NOMEM;
        }
        vfs_info *vi = (vfs_info *)(vfs + 1);
        char *name = (char *)(vi + 1);
        memcpy(name, vfs_name, n);
        *vi = (vfs_info){open, share_by_name};
        *vfs = (sqlite3_vfs){
            .iVersion = 2,
            .szOsFile = sizeof(file),
            .mxPathname = MAX_PATHNAME,
            .zName = name,
            .pAppData = vi,
            .xOpen = vfs_open,
            .xDelete = vfs_delete,
            .xAccess = vfs_access,
            .xFullPathname = vfs_full_pathname,
            .xDlOpen = vfs_dlopen,
            .xDlError = vfs_dlerror,
            .xDlSym = vfs_dlsym,
            .xDlClose = vfs_dlclose,
            .xRandomness = vfs_randomness,
            .xSleep = vfs_sleep,
            .xCurrentTime = vfs_current_time,
            .xGetLastError = vfs_last_error,
            .xCurrentTimeInt64 = vfs_current_time64,
        };
        rc = sqlite3_vfs_register(vfs, make_default);
    } else if (make_default) {
        rc = sqlite3_vfs_register(vfs, 1); /* registered already: now the default too */
    }
    sqlite3_mutex_leave(mx);
    return rc;
}

static int open_memory_store(const char *name, kvsql_store **out) {
    (void)name;
    return kvsql_memory_store_new(out);
}

int kvsql_register(void) {
    int rc = kvsql_vfs_register("kvsql", NULL, 1, 0);
    if (rc == SQLITE_OK) rc = kvsql_vfs_register("kvsql-memory", open_memory_store, 1, 0);
    return rc;
}

int kvsql_open(kvsql_store *store, sqlite3 **db) {
    *db = NULL;
    int rc = kvsql_register();
    if (rc != SQLITE_OK) return rc;
    sqlite3_mutex *mx = registry_mutex();
    sqlite3_mutex_enter(mx);
    char *name = sqlite3_mprintf("kvsql-%u", ++registry_seq);
    entry *e = name ? registry_add(name, store, 0) : NULL;
    if (e) e->refs++; /* held until the open has finished */
    sqlite3_mutex_leave(mx);
    if (!e) {
        sqlite3_free(name);
        return SQLITE_NOMEM;
    }
    rc = sqlite3_open_v2(name, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_EXRESCODE, "kvsql");
    sqlite3_free(name);
    if (rc == SQLITE_OK) rc = sqlite3_exec(*db, "PRAGMA journal_mode=MEMORY", 0, 0, 0);
    if (rc != SQLITE_OK) {
        sqlite3_close(*db);
        *db = NULL;
    }
    sqlite3_mutex_enter(mx);
    if (--e->refs == 0) registry_remove(e);
    sqlite3_mutex_leave(mx);
    return rc;
}

void kvsql_store_free(kvsql_store *store) {
    if (store) store->m->destroy(store);
}

const char *kvsql_store_errmsg(kvsql_store *store) {
    return store->vfs_err[0] ? store->vfs_err : store->m->errmsg(store);
}
