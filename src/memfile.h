/* memfile.h - files that live in process memory: the rollback journal, the
 * statement journals and the temp databases of every kvsql VFS. They never
 * reach a store, so a transaction's journal stays with the connection that
 * wrote it. vfs.c's xOpen hands every file that is not a main database here. */
#ifndef KVSQL_MEMFILE_H
#define KVSQL_MEMFILE_H

#include "sqlite.h"

typedef struct memfile {
    sqlite3_file base;
    unsigned char *buf;
    sqlite3_int64 len, cap;
} memfile;

/* Makes f (at least sizeof(memfile) bytes) an empty memory file. */
void memfile_open(sqlite3_file *f);

#endif
