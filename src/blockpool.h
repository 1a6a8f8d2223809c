/* blockpool.h - a few freed memory blocks of one size, kept for the next
 * allocation of that size: a malloc and a free fewer each time. Used by
 * pagemap.c (page buffers and first tables of maps emptied after each
 * call) and pcache.c (page blocks of connections that cool down). Pools
 * are shared by threads (a worker's connection allocates too), so each
 * has a lock. Memory comes from sqlite3_malloc, as everything it replaces. */
#ifndef KVSQL_BLOCKPOOL_H
#define KVSQL_BLOCKPOOL_H

#include <pthread.h>
#include <stddef.h>

#define BLOCKPOOL_MAX 16

typedef struct blockpool {
    pthread_mutex_t lock;
    int max;                     /* blocks kept at most, up to BLOCKPOOL_MAX */
    int n;
    size_t len;                  /* of every block kept */
    void *blocks[BLOCKPOOL_MAX];
} blockpool;

/* A pool that keeps at most max blocks. */
#define BLOCKPOOL(max) {PTHREAD_MUTEX_INITIALIZER, (max), 0, 0, {0}}

/* A block of len bytes: a kept one, else a new one (NULL: no memory). */
void *blockpool_take(blockpool *p, size_t len);
/* Keeps the block of len bytes for a later take, or frees it (the pool is
 * full, or keeps blocks of another size). */
void blockpool_give(blockpool *p, void *block, size_t len);

#endif
