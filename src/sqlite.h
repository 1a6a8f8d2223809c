/* sqlite.h - how kvsql's sources reach SQLite: every .c includes this
 * instead of <sqlite3.h>.
 *
 * Compiled plainly, the calls bind to the libsqlite3 the program links
 * (the module, the kvsql tool, the tests). Compiled with -DKVSQL_EXTENSION
 * (the objects of libkvsql.so, build/ext/), every sqlite3_* call goes
 * through the routines table of the SQLite that loaded the extension
 * (sqlite3ext.h; sqlite3_api, set by client/extension.c), so the library
 * works in a host with its own SQLite copy and binds to no SQLite symbol.
 *
 * The extension table lacks three things kvsql uses, supplied here:
 * sqlite3_initialize (a host that hands the table is initialized), and the
 * preupdate routines, which client/extension.c looks up in the host
 * SQLite's own object and which are absent when that SQLite does not
 * export them (then kvsql_preupdate_available() is 0, the hook is never
 * installed and change capture refuses to commit, saying why). */
#ifndef KVSQL_SQLITE_H
#define KVSQL_SQLITE_H

/* Debian's libsqlite3 is built with it; the declarations need the macro. */
#ifndef SQLITE_ENABLE_PREUPDATE_HOOK
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#endif

#ifdef KVSQL_EXTENSION

#include <sqlite3ext.h>
#include <stddef.h>
SQLITE_EXTENSION_INIT3

#define sqlite3_initialize() SQLITE_OK

/* The preupdate routines of the host SQLite, or stubs (client/extension.c). */
typedef struct kvsql_preupdate_routines {
    void *(*hook)(sqlite3 *, void (*)(void *, sqlite3 *, int, const char *, const char *, sqlite3_int64,
                                      sqlite3_int64),
                  void *);
    int (*old)(sqlite3 *, int, sqlite3_value **);
    int (*new_)(sqlite3 *, int, sqlite3_value **);
    int (*count)(sqlite3 *);
    int (*depth)(sqlite3 *);
    int available;
} kvsql_preupdate_routines;
extern kvsql_preupdate_routines kvsql_preupdate;
#define sqlite3_preupdate_hook kvsql_preupdate.hook
#define sqlite3_preupdate_old kvsql_preupdate.old
#define sqlite3_preupdate_new kvsql_preupdate.new_
#define sqlite3_preupdate_count kvsql_preupdate.count
#define sqlite3_preupdate_depth kvsql_preupdate.depth
#define kvsql_preupdate_available() (kvsql_preupdate.available)

/* Binds the library to a host SQLite's routines table (client/extension.c):
 * SQLITE_OK, or an error with the reason in err. */
int kvsql_api_bind(const sqlite3_api_routines *api, char *err, size_t errlen);
/* Without a host table (a C program, LD_PRELOAD): finds the SQLite the
 * object at address `caller` calls and takes its table (client/preload.c). */
int kvsql_api_capture(void *caller, char *err, size_t errlen);
/* The exported symbol `name` of the object that holds the code at `in`,
 * or NULL (client/preload.c). */
void *kvsql_symbol_beside(const void *in, const char *name);

#else

#include <sqlite3.h>
#define kvsql_preupdate_available() 1

#endif
#endif
