/* pcache.h - a page cache for SQLite (SQLITE_CONFIG_PCACHE2) that costs
 * about its pages.
 *
 * SQLite's own cache (pcache1) gives every cache a 2 KiB hash table from
 * its first page on, kept until the connection closes; this one starts
 * with 8 slots inside the cache (about 110 bytes in all) and frees a
 * larger table with its last page (sqlite3_db_release_memory). Each page
 * is one block, as in pcache1. Caches share nothing but a few spare page
 * blocks (pcache.c, under a lock): the module runs SQLite in
 * SQLITE_CONFIG_MULTITHREAD, where a connection, and so each of its
 * caches, is used by one thread at a time, the main thread or a worker.
 * Memory comes from sqlite3_malloc.
 *
 * Installed by the module (module.c setup_sqlite) before SQLite starts;
 * the library (libkvsql.so) leaves the host program's page cache alone. */
#ifndef KVSQL_PCACHE_H
#define KVSQL_PCACHE_H

/* Makes this page cache SQLite's, for the whole process. Must run before
 * sqlite3_initialize(). Returns an SQLite code. */
int kvsql_pcache_install(void);

/* The next purgeable cache this thread creates (while it opens a
 * connection: its database's) is stored in *slot, and *slot is set to
 * NULL when that cache is destroyed (the connection closes, or SQLite
 * replaces the cache for another page size). NULL stops watching. */
void kvsql_pcache_watch(void **slot);

/* Drops page `key` (SQLite's page number) from cache, which SQLite then
 * reads anew when it needs it. Returns 0 (also when it was not cached),
 * or -1 when SQLite holds the page now. The cache's thread only. */
int kvsql_pcache_forget(void *cache, unsigned key);

/* The bytes the pages of every database's cache take now (the blocks of
 * purgeable caches, pinned or not), all threads together. */
long long kvsql_pcache_bytes(void);

/* Calls hook (on the fetching thread) every PCACHE_CHECK_FETCHES page
 * fetches of a cache: SQLite reads a whole table in one step of its
 * virtual machine (OP_Count), where no progress handler runs. The
 * module's budget (budget.c) checks its time there. NULL: none. */
#define PCACHE_CHECK_FETCHES 256
void kvsql_pcache_on_fetches(void (*hook)(void));

#endif
