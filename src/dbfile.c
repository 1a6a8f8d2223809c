/* dbfile.c - the main database file of a kvsql VFS (dbfile.h), and the
 * words of the last failed open (vfs.h), which a store's opener and a
 * file's begin leave for the user. */
#include "dbfile.h"

#include "format.h"
#include "kvsql.h"
#include "vfs.h"

#include <stdio.h>
#include <string.h>

/* ---- the words of the last failed open ----------------------------------- */

static _Thread_local char last_error[512];

const char *kvsql_vfs_errmsg(void) {
    return last_error;
}

void kvsql_vfs_set_errmsg(const char *msg) {
    snprintf(last_error, sizeof(last_error), "%s", msg ? msg : "");
}

/* ---- the file ------------------------------------------------------------- */

static int set_page_size(dbfile *f, uint32_t psz) {
    if (f->page_size == psz) return SQLITE_OK;
    sqlite3_free(f->scratch);
    f->scratch = NULL;
    f->page_size = psz;
    return SQLITE_OK;
}

/* The scratch page, made if needed; NULL when out of memory. */
static unsigned char *scratch(dbfile *f) {
    if (!f->scratch) f->scratch = sqlite3_malloc64(f->page_size);
    return f->scratch;
}

/* ---- dirty pages ---- */

static size_t dirty_count(const dbfile *f) {
    return f->dirty ? f->dirty->count : 0;
}

static void *dirty_get(const dbfile *f, uint32_t idx) {
    return f->dirty ? pagemap_get(f->dirty, idx) : NULL;
}

/* The map of dirty pages, made if needed; NULL when out of memory. */
static pagemap *dirty_map(dbfile *f) {
    if (!f->dirty && (f->dirty = sqlite3_malloc(sizeof(*f->dirty)))) pagemap_init(f->dirty);
    return f->dirty;
}

static void dirty_drop_from(dbfile *f, uint32_t first) {
    if (f->dirty) pagemap_drop_from(f->dirty, first);
}

static void free_dirty(dbfile *f) {
    if (!f->dirty) return;
    pagemap_clear(f->dirty);
    sqlite3_free(f->dirty);
    f->dirty = NULL;
}

/* Frees what an idle file keeps for speed (KVSQL_FCNTL_TRIM). */
static void trim(dbfile *f) {
    sqlite3_free(f->scratch);
    f->scratch = NULL;
    if (dirty_count(f) == 0) free_dirty(f);
}

/* Brings page_size and npages in line with the transaction's snapshot. */
static int load_snapshot(dbfile *f) {
    f->npages = f->txn.npages;
    f->size_changed = 0;
    return f->txn.page_size ? set_page_size(f, f->txn.page_size) : SQLITE_OK;
}

static void drop_dirty(dbfile *f) {
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
static void show_counter(dbfile *f, unsigned char *page1) {
    if (f->page_size < 100) return;
    if (memcmp(page1 + 24, page1 + 92, 4) == 0) put32(page1 + 92, f->counter);
    put32(page1 + 24, f->counter);
}

/* Copies page idx into out (a whole page): dirty first, then the store. */
static int read_page(dbfile *f, uint32_t idx, unsigned char *out) {
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
    dbfile *f = (dbfile *)pf;
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
    dbfile *f = (dbfile *)pf;
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
    dbfile *f = (dbfile *)pf;
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
static int refuse_page_size(dbfile *f, uint32_t psz) {
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
static int apply_header_length(dbfile *f) {
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
static void note_own_commit(dbfile *f) {
    const unsigned char *h = dirty_get(f, 0);
    if (h) f->counter = get32(h + 24);
    f->seen_version = f->txn.version;
}

/* The lock-byte page, when this commit must store it: SQLite never writes
 * it, yet the format keeps every field from 0 to the length (a zero page,
 * docs/FORMAT.md). Needed when the new length covers it for the first time
 * and SQLite did not write it. Returns 1 when needed. */
static int needs_lock_byte_page(const dbfile *f) {
    uint32_t lb = kvsql_lock_byte_index(f->page_size);
    return lb < f->npages && lb >= f->txn.npages && !dirty_get(f, lb);
}

/* Hands the dirty pages to the store as one batch. */
static int commit_dirty(dbfile *f) {
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
    return commit_dirty((dbfile *)pf);
}

static int db_file_size(sqlite3_file *pf, sqlite3_int64 *size) {
    dbfile *f = (dbfile *)pf;
    *size = (sqlite3_int64)f->npages * f->page_size;
    return SQLITE_OK;
}

/* A new snapshot: SQLite's cache stays good only if it is the version this
 * file saw last, through the same connection to the store. */
static int begin_snapshot(dbfile *f) {
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
    dbfile *f = (dbfile *)pf;
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
    dbfile *f = (dbfile *)pf;
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
    dbfile *f = (dbfile *)pf;
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

static int db_close(sqlite3_file *pf) {
    dbfile *f = (dbfile *)pf;
    free_dirty(f);
    sqlite3_free(f->scratch);
    if (f->txn.level != KVSQL_LOCK_NONE) f->store->m->unlock(f->store, &f->txn, KVSQL_LOCK_NONE);
    f->release(f);
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


void dbfile_init(dbfile *f, const char *vfs_name, kvsql_store *store, void *owner, void (*release)(dbfile *f)) {
    memset(f, 0, sizeof(*f));
    f->vfs_name = vfs_name;
    f->store = store;
    f->owner = owner;
    f->release = release;
    f->base.pMethods = &db_methods;
}
