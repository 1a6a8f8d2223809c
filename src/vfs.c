/* vfs.c - the SQLite VFS of kvsql: database files on a page store.
 *
 * Called by SQLite. Each VFS registered with kvsql_vfs_register() (vfs.h)
 * turns a file name into a store: "kvsql" takes the store kvsql_open()
 * handed over, "kvsql-memory" makes a memory store per name, "redis"
 * (src/client/) connects to a Redis server. Files of the same name share
 * one store when the VFS says so (the registry below). The main database
 * file reads and writes pages through the store (dbfile.c). Every other
 * file SQLite asks for (rollback journal, statement journal, temp
 * databases) is a memfile (memfile.c) that never reaches the store; WAL
 * files are refused, so WAL mode cannot be entered. */
#include "kvsql.h"
#include "sqlite.h"
#include "dbfile.h"
#include "memfile.h"
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

/* Every file of a kvsql VFS is a dbfile or a memfile. */
_Static_assert(sizeof(dbfile) >= sizeof(memfile), "szOsFile must fit a memory file");

/* Lets go of f's store: destroyed, or one reference fewer when shared. */
static void release_store(dbfile *f) {
    entry *e = f->owner;
    if (!e) {
        f->store->m->destroy(f->store);
        return;
    }
    sqlite3_mutex *mx = registry_mutex();
    sqlite3_mutex_enter(mx);
    if (--e->refs == 0) registry_remove(e);
    sqlite3_mutex_leave(mx);
}

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
static int require_database(dbfile *f, const char *name) {
    int rc = f->store->m->begin(f->store, &f->txn);
    uint32_t npages = f->txn.npages;
    if (rc == SQLITE_OK) f->store->m->unlock(f->store, &f->txn, KVSQL_LOCK_NONE);
    if (rc != SQLITE_OK || npages > 0) return rc;
    char msg[300];
    snprintf(msg, sizeof(msg), "%.200s holds no database (a read-only open needs one)", name);
    kvsql_vfs_set_errmsg(msg);
    return SQLITE_CANTOPEN;
}

static int open_db(sqlite3_vfs *vfs, const char *name, dbfile *f, int flags) {
    const vfs_info *vi = vfs->pAppData;
    memset(f, 0, sizeof(*f));
    if (!name) return SQLITE_CANTOPEN;
    int rc = SQLITE_OK;
    entry *e = NULL;
    kvsql_store *st = NULL;
    if (vi->share_by_name || !vi->open) {
        e = acquire_shared(vi, name, &rc);
        if (e) st = e->store;
    } else {
        rc = vi->open(name, &st);
    }
    if (rc != SQLITE_OK) return rc;
    dbfile_init(f, vfs->zName, st, e, release_store);
    if (vi->open && (flags & SQLITE_OPEN_READONLY) && (rc = require_database(f, name)) != SQLITE_OK) {
        release_store(f);
        f->base.pMethods = NULL; /* as before dbfile_init: SQLite does not close a file whose open failed */
        return rc;
    }
    return SQLITE_OK;
}

static int vfs_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *pf, int flags, int *out_flags) {
    if (flags & SQLITE_OPEN_WAL) return SQLITE_CANTOPEN; /* no WAL: no shared memory here */
    if (out_flags) *out_flags = flags;
    if (flags & SQLITE_OPEN_MAIN_DB) return open_db(vfs, name, (dbfile *)pf, flags);
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
            .szOsFile = sizeof(dbfile),
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
