/* snapshot.c - consistent views of a database's hash for worker threads;
 * see snapshot.h. Live snapshots are few (at most a few per worker
 * thread), so they sit in one list that events walk. */
#include "module/store/snapshot.h"

#include "format.h"
#include "pagemap.h"

#include <sqlite3.h>
#include <string.h>

struct snapshot {
    int dbid;
    char *key;
    size_t keylen;
    uint32_t npages, page_size;
    pagemap preserved; /* pages as they were, saved before kvsql's writes changed them */
    int state;         /* SNAPSHOT_* */
    int writer;        /* a writing call's */
    int overwritten;   /* kvsql wrote the hash since */
    struct snapshot *next;
};

static snapshot *live;
static int nlive;

snapshot *snapshot_take(int dbid, RedisModuleString *keyname, uint32_t npages, uint32_t page_size, int writer) {
    size_t len;
    const char *k = RedisModule_StringPtrLen(keyname, &len);
    snapshot *s = sqlite3_malloc(sizeof(*s));
    char *key = sqlite3_malloc64(len + 1);
    if (!s || !key) {
        sqlite3_free(s);
        sqlite3_free(key);
        return NULL;
    }
    memcpy(key, k, len);
    key[len] = 0;
    *s = (snapshot){dbid, key, len, npages, page_size, {0}, SNAPSHOT_OK, writer, 0, live};
    pagemap_init(&s->preserved);
    live = s;
    nlive++;
    return s;
}

void snapshot_drop(snapshot *s) {
    if (!s) return;
    for (snapshot **p = &live; *p; p = &(*p)->next) {
        if (*p != s) continue;
        *p = s->next;
        nlive--;
        break;
    }
    pagemap_clear(&s->preserved);
    sqlite3_free(s->key);
    sqlite3_free(s);
}

uint32_t snapshot_npages(const snapshot *s) {
    return s->npages;
}

uint32_t snapshot_page_size(const snapshot *s) {
    return s->page_size;
}

int snapshot_state(const snapshot *s) {
    return s->state;
}

int snapshot_overwritten(const snapshot *s) {
    return s->overwritten;
}

int snapshots_live(void) {
    return nlive;
}

static int same_key(const snapshot *s, int dbid, const char *key, size_t len) {
    return s->dbid == dbid && s->keylen == len && memcmp(s->key, key, len) == 0;
}

int snapshots_writing(int dbid, const char *key, size_t len) {
    for (snapshot *s = live; s; s = s->next)
        if (s->writer && same_key(s, dbid, key, len)) return 1;
    return 0;
}

/* One page from the open hash into out: the value of its field, or zeros
 * for the lock-byte page an older module left out. */
static int read_field(RedisModuleCtx *ctx, RedisModuleKey *key, uint32_t index, uint32_t page_size, void *out) {
    char field[KVSQL_FIELD_MAX];
    RedisModuleString *v = NULL;
    if (key && RedisModule_KeyType(key) == REDISMODULE_KEYTYPE_HASH) {
        kvsql_field_name(field, index);
        RedisModule_HashGet(key, REDISMODULE_HASH_CFIELDS, field, &v, NULL);
    }
    if (!v) {
        if (index != kvsql_lock_byte_index(page_size)) return SQLITE_CORRUPT;
        memset(out, 0, page_size);
        return SQLITE_OK;
    }
    size_t len;
    const char *data = RedisModule_StringPtrLen(v, &len);
    int rc = len == page_size ? SQLITE_OK : SQLITE_CORRUPT;
    if (rc == SQLITE_OK) memcpy(out, data, len);
    RedisModule_FreeString(ctx, v);
    return rc;
}

int snapshot_read(snapshot *s, RedisModuleCtx *tsctx, uint32_t first, uint32_t count, void *buf) {
    if (s->state != SNAPSHOT_OK) return SQLITE_ABORT;
    RedisModule_SelectDb(tsctx, s->dbid);
    RedisModuleString *name = RedisModule_CreateString(tsctx, s->key, s->keylen);
    /* Opening may expire the key (its event marks s) or find it expired
     * with no event yet (a replica waits for its master's DEL). */
    RedisModuleKey *key = RedisModule_OpenKey(tsctx, name, REDISMODULE_READ | REDISMODULE_OPEN_KEY_NOTOUCH);
    int hash = key && RedisModule_KeyType(key) == REDISMODULE_KEYTYPE_HASH;
    unsigned char *out = buf;
    int rc = SQLITE_OK;
    for (uint32_t i = 0; i < count && rc == SQLITE_OK && s->state == SNAPSHOT_OK; i++, out += s->page_size) {
        const void *kept = pagemap_get(&s->preserved, first + i);
        if (kept) memcpy(out, kept, s->page_size);
        else rc = read_field(tsctx, key, first + i, s->page_size, out);
    }
    /* A page missing because the key vanished or was replaced is a change,
     * never corruption: the call starts again or fails with SQLITE_ABORT. */
    if (rc != SQLITE_OK && s->state == SNAPSHOT_OK && !hash) s->state = SNAPSHOT_CHANGED;
    if (s->state != SNAPSHOT_OK) rc = SQLITE_ABORT;
    if (key) RedisModule_CloseKey(key);
    RedisModule_FreeString(tsctx, name);
    return rc;
}

/* Keeps, in s, the pages at idx that it has not kept yet and that exist in
 * its view. */
static int preserve_in(snapshot *s, RedisModuleCtx *ctx, RedisModuleKey *key, const uint32_t *idx, size_t n) {
    void *page = NULL;
    for (size_t i = 0; i < n; i++) {
        if (idx[i] >= s->npages || pagemap_get(&s->preserved, idx[i])) continue;
        if (!page && !(page = sqlite3_malloc64(s->page_size))) return -1;
        if (read_field(ctx, key, idx[i], s->page_size, page) != SQLITE_OK ||
            pagemap_put(&s->preserved, idx[i], page, s->page_size) != 0) {
            sqlite3_free(page);
            return -1;
        }
    }
    sqlite3_free(page);
    return 0;
}

int snapshots_preserve(int dbid, RedisModuleString *keyname, RedisModuleKey *key, const uint32_t *idx, size_t n) {
    if (!live) return 0;
    size_t len;
    const char *k = RedisModule_StringPtrLen(keyname, &len);
    int rc = 0;
    for (snapshot *s = live; s; s = s->next) {
        if (s->state != SNAPSHOT_OK || !same_key(s, dbid, k, len)) continue;
        s->overwritten = 1;
        if (preserve_in(s, NULL, key, idx, n) != 0) {
            s->state = SNAPSHOT_CHANGED; /* could not keep the old pages: start again */
            rc = -1;
        }
    }
    return rc;
}

void snapshots_key_changed(int dbid, const char *key, size_t len, int state) {
    for (snapshot *s = live; s; s = s->next)
        if (same_key(s, dbid, key, len) && s->state < state) s->state = state;
}

void snapshots_db_gone(int dbid) {
    for (snapshot *s = live; s; s = s->next)
        if (dbid < 0 || s->dbid == dbid) s->state = SNAPSHOT_GONE;
}
