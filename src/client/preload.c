/* preload.c - libkvsql.so without a host's routines table (the extension
 * build only; src/sqlite.h).
 *
 * Two ways reach the library with no table in hand: a C program linked
 * with -lkvsql that calls kvsql_register_redis(), and a program started
 * with LD_PRELOAD=libkvsql.so and KVSQL_DEFAULT=redis://... For both,
 * kvsql_api_capture takes the table of the SQLite the program calls: it
 * registers an auto-extension with that SQLite and opens a ":memory:"
 * database, whose open hands the table to the auto-extension.
 *
 * For LD_PRELOAD this file defines sqlite3_open, sqlite3_open16 and
 * sqlite3_open_v2, which come before the program's libsqlite3 in symbol
 * lookup: with KVSQL_DEFAULT set, the first open takes the table and
 * registers the redis VFS as the default (client/extension.c), then every
 * open goes on to the program's SQLite. Without KVSQL_DEFAULT they only
 * pass the call on. Nothing runs when the program never opens a database,
 * and nothing runs before main: SQLite is first initialized by the
 * program's own open, after any sqlite3_config() of its own. If the
 * registration fails (a bad KVSQL_DEFAULT), opens that name no VFS fail
 * with the reason as "no such vfs: ...", rather than open local files. */
#include "kvsql.h"
#include "sqlite.h"

/* This file defines the open routines under their own names. */
#undef sqlite3_open
#undef sqlite3_open16
#undef sqlite3_open_v2

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Whether f is in libkvsql itself (its own sqlite3_open*). Not a compare
 * with &sqlite3_open_v2: that address, taken here, is whichever definition
 * the dynamic linker finds first, maybe libsqlite3's. */
static int ours(void *f) {
    Dl_info a, b;
    return dladdr(f, &a) && dladdr((void *)ours, &b) && a.dli_fbase == b.dli_fbase;
}

/* The routine `name` of the SQLite that the object holding `caller` calls,
 * or NULL: the next definition after libkvsql (a program linked with
 * libsqlite3), else the one the caller's own object resolves to (a module
 * that loaded libsqlite3 privately, as Python's _sqlite3 does), else the
 * first one (a program linked with libsqlite3 before libkvsql). Never
 * libkvsql's own. */
static void *real_routine(const char *name, void *caller) {
    void *f = dlsym(RTLD_NEXT, name);
    if (f && !ours(f)) return f;
    Dl_info at;
    void *h = caller && dladdr(caller, &at) && at.dli_fname ? dlopen(at.dli_fname, RTLD_LAZY | RTLD_NOLOAD) : NULL;
    f = h ? dlsym(h, name) : NULL;
    if (h) dlclose(h);
    if (f && !ours(f)) return f;
    f = dlsym(RTLD_DEFAULT, name);
    return f && !ours(f) ? f : NULL;
}

void *kvsql_symbol_beside(const void *in, const char *name) {
    Dl_info here, there;
    if (!dladdr(in, &here) || !here.dli_fname) return NULL;
    void *h = dlopen(here.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    void *sym = h ? dlsym(h, name) : NULL;
    if (h) dlclose(h);
    if (!sym) sym = dlsym(RTLD_DEFAULT, name);
    if (!sym || !dladdr(sym, &there) || there.dli_fbase != here.dli_fbase) return NULL;
    return sym;
}

typedef int open_v2_fn(const char *, sqlite3 **, int, const char *);
typedef int open16_fn(const void *, sqlite3 **);
typedef int close_fn(sqlite3 *);
typedef int auto_extension_fn(void (*)(void));

/* ---- taking the table ------------------------------------------------------------- */

static const sqlite3_api_routines *captured;

static int capture_table(sqlite3 *db, char **err, const sqlite3_api_routines *api) {
    (void)db, (void)err;
    if (!captured) captured = api;
    return SQLITE_OK;
}

static void *capture_caller;
static int capture_rc;
static char capture_err[400];

static void capture_once(void) {
    void *caller = capture_caller;
    open_v2_fn *open_v2 = (open_v2_fn *)real_routine("sqlite3_open_v2", caller);
    void *at = (void *)open_v2;
    close_fn *close = (close_fn *)(at ? kvsql_symbol_beside(at, "sqlite3_close") : NULL);
    auto_extension_fn *add = (auto_extension_fn *)(at ? kvsql_symbol_beside(at, "sqlite3_auto_extension") : NULL);
    auto_extension_fn *cancel =
        (auto_extension_fn *)(at ? kvsql_symbol_beside(at, "sqlite3_cancel_auto_extension") : NULL);
    capture_rc = SQLITE_ERROR;
    if (!open_v2 || !close || !add || !cancel) {
        snprintf(capture_err, sizeof(capture_err),
                 "libkvsql found no SQLite to serve: load it as an extension, or link the program with -lsqlite3");
        return;
    }
    sqlite3 *db = NULL;
    int rc = add((void (*)(void))capture_table);
    if (rc == SQLITE_OK) rc = open_v2(":memory:", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    close(db);
    cancel((void (*)(void))capture_table);
    if (rc != SQLITE_OK || !captured) {
        snprintf(capture_err, sizeof(capture_err), "libkvsql could not reach the program's SQLite (error %d)", rc);
        return;
    }
    capture_rc = kvsql_api_bind(captured, capture_err, sizeof(capture_err));
}

int kvsql_api_capture(void *caller, char *err, size_t errlen) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    static pthread_mutex_t mx = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&mx); /* the first caller's address is the one used */
    if (!capture_caller) capture_caller = caller;
    pthread_mutex_unlock(&mx);
    pthread_once(&once, capture_once);
    if (capture_rc != SQLITE_OK) snprintf(err, errlen, "%s", capture_err);
    return capture_rc;
}

/* ---- LD_PRELOAD ------------------------------------------------------------------- */

static void *preload_caller;
/* Empty, or why KVSQL_DEFAULT could not be served, as a VFS name no VFS has. */
static char preload_failed[600];

static void preload_once(void) {
    const char *url = getenv("KVSQL_DEFAULT");
    if (!url || !*url) return;
    char err[400];
    int rc = kvsql_api_capture(preload_caller, err, sizeof(err));
    if (rc == SQLITE_OK && kvsql_register_redis(0) != SQLITE_OK) snprintf(err, sizeof(err), "%s", kvsql_errmsg(NULL));
    else if (rc == SQLITE_OK) return;
    snprintf(preload_failed, sizeof(preload_failed), "kvsql (KVSQL_DEFAULT): %s", err);
    fprintf(stderr, "%s\n", preload_failed);
}

/* Registers the redis VFS as the default once, when KVSQL_DEFAULT asks;
 * NULL, or the name of no VFS that makes an open fail with the reason. */
static const char *preload(void *caller) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    __atomic_store_n(&preload_caller, caller, __ATOMIC_RELAXED);
    pthread_once(&once, preload_once);
    return preload_failed[0] ? preload_failed : NULL;
}

KVSQL_EXPORT int sqlite3_open_v2(const char *name, sqlite3 **db, int flags, const char *vfs) {
    void *caller = __builtin_return_address(0);
    open_v2_fn *real = (open_v2_fn *)real_routine("sqlite3_open_v2", caller);
    if (!real) {
        *db = NULL;
        return SQLITE_ERROR;
    }
    const char *failed = preload(caller);
    return real(name, db, flags, vfs ? vfs : failed);
}

KVSQL_EXPORT int sqlite3_open(const char *name, sqlite3 **db) {
    void *caller = __builtin_return_address(0);
    open_v2_fn *real = (open_v2_fn *)real_routine("sqlite3_open_v2", caller);
    if (!real) {
        *db = NULL;
        return SQLITE_ERROR;
    }
    return real(name, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, preload(caller));
}

KVSQL_EXPORT int sqlite3_open16(const void *name, sqlite3 **db) {
    void *caller = __builtin_return_address(0);
    open16_fn *real = (open16_fn *)real_routine("sqlite3_open16", caller);
    if (!real || preload(caller)) { /* open16 names no VFS: refuse rather than open a local file */
        *db = NULL;
        return real ? SQLITE_CANTOPEN : SQLITE_ERROR;
    }
    return real(name, db);
}
