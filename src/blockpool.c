/* blockpool.c - freed blocks kept for reuse; see blockpool.h. */
#include "blockpool.h"

#include "sqlite.h"

void *blockpool_take(blockpool *p, size_t len) {
    void *b = NULL;
    pthread_mutex_lock(&p->lock);
    if (p->n && p->len == len) b = p->blocks[--p->n];
    pthread_mutex_unlock(&p->lock);
    return b ? b : sqlite3_malloc64(len);
}

void blockpool_give(blockpool *p, void *block, size_t len) {
    pthread_mutex_lock(&p->lock);
    if (p->n == 0) p->len = len;
    if (p->n < p->max && p->len == len) {
        p->blocks[p->n++] = block;
        block = NULL;
    }
    pthread_mutex_unlock(&p->lock);
    sqlite3_free(block);
}
