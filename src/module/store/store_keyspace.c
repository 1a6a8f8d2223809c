/* store_keyspace.c - page store on a Redis hash, inside redis-server.
 *
 * Field "i" (decimal) of the hash holds page i+1 of the SQLite file, whole
 * (format.h has the rules). See store_keyspace.h for the life of a
 * command; the module (src/module/) is the only caller. Redis runs one
 * command at a time, so no locking is needed here: a command is atomic by
 * itself. The end-of-call write follows the library protocol (protocol.h).
 *
 * A hash written by an older module may lack the lock-byte page's field
 * (the page at file offset 1 GiB, which SQLite never writes): such a hash
 * reads as if the field held zeros, one page longer than HLEN, and the
 * next write stores the zero page. */
#include "module/store/store_keyspace.h"

#include "module/store/changes.h"
#include "format.h"
#include "pagemap.h"
#include "module/store/protocol.h"
#include "module/store/replicas.h"
#include "module/store/slot_keys.h"
#include "module/store/snapshot.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct keyspace_store {
    kvsql_store base;
    RedisModuleCtx *ctx;       /* set while attached to a command */
    RedisModuleKey *key;       /* NULL while detached or when the key is empty */
    RedisModuleString *keyname;
    int readonly;
    uint32_t page_size;        /* of the hash: set by keyspace_store_check and flushes */
    uint32_t known_hlen;       /* HLEN of the hash when this store last saw it */
    uint32_t generation;       /* moves when the hash changed behind the store */
    pending_pages pending;     /* what SQLite committed in this command */
    RedisModuleString **values; /* or NULL: per slot of `pending`, its page as a string made
                                 * beforehand (keyspace_store_adopt), so the write does not copy it */
    aux_keys aux;              /* names of the database's auxiliary keys: made at the first write */
    RedisModuleString *page1;  /* or NULL: page 1 as the hash holds it now, read once per command
                                * (keyspace_store_check, then SQLite's read of it, then the flush's
                                * comparison share one copy); dropped at detach and before a write */
    char err[256];
} keyspace_store;

static int flushing;

int keyspace_store_flushing(void) {
    return flushing;
}

static int fail(keyspace_store *k, int rc, const char *msg, long long page) {
    snprintf(k->err, sizeof(k->err), msg, page);
    return rc;
}

static int has_hash(keyspace_store *k) {
    return k->key && RedisModule_KeyType(k->key) == REDISMODULE_KEYTYPE_HASH;
}

/* The value of field `index`, or NULL. Free it with FreeString. */
static RedisModuleString *get_field(keyspace_store *k, uint32_t index) {
    char field[KVSQL_FIELD_MAX];
    RedisModuleString *val = NULL;
    if (!has_hash(k)) return NULL;
    kvsql_field_name(field, index);
    RedisModule_HashGet(k->key, REDISMODULE_HASH_CFIELDS, field, &val, NULL);
    return val;
}

static int field_exists(keyspace_store *k, uint32_t index) {
    char field[KVSQL_FIELD_MAX];
    int exists = 0;
    if (!has_hash(k)) return 0;
    kvsql_field_name(field, index);
    RedisModule_HashGet(k->key, REDISMODULE_HASH_CFIELDS | REDISMODULE_HASH_EXISTS, field, &exists, NULL);
    return exists;
}

/* Page 1's value as the hash holds it now, or NULL; the store keeps it
 * (see page1 above): do not free it. */
static RedisModuleString *page1_value(keyspace_store *k) {
    if (!k->page1) k->page1 = get_field(k, 0);
    return k->page1;
}

static void drop_page1(keyspace_store *k) {
    if (k->page1) RedisModule_FreeString(k->ctx, k->page1);
    k->page1 = NULL;
}

static uint32_t hash_length(keyspace_store *k) {
    return has_hash(k) ? (uint32_t)RedisModule_ValueLength(k->key) : 0;
}

/* Whether the hash lacks its lock-byte page (written by an older module). */
static int has_lock_byte_gap(keyspace_store *k) {
    if (!k->page_size) return 0;
    uint32_t lb = kvsql_lock_byte_index(k->page_size);
    return hash_length(k) > lb && !field_exists(k, lb);
}

/* The database's length in pages: HLEN, plus the lock-byte page's field
 * when an older module left it out. */
static uint32_t stored_npages(keyspace_store *k) {
    return hash_length(k) + (uint32_t)has_lock_byte_gap(k);
}

/* The module runs one command at a time on Redis's main thread, and its
 * connections run in exclusive locking mode: a snapshot is simply the hash
 * as the command finds it, plus what the command committed so far. */
static int ks_begin(kvsql_store *s, kvsql_txn *t) {
    keyspace_store *k = (keyspace_store *)s;
    if (!k->ctx) return fail(k, SQLITE_IOERR_LOCK, "kvsql: store used outside a command", 0);
    if (k->pending.any) {
        t->npages = k->pending.npages;
        t->page_size = k->pending.page_size;
    } else {
        /* A hash with pages was checked (keyspace_store_check) or written
         * by this store, so its page size is known. */
        t->npages = stored_npages(k);
        t->page_size = t->npages ? k->page_size : 0;
    }
    t->generation = k->generation; /* a new one makes the VFS drop SQLite's page cache */
    t->level = KVSQL_LOCK_READ;
    return SQLITE_OK;
}

static int ks_lock(kvsql_store *s, kvsql_txn *t) {
    keyspace_store *k = (keyspace_store *)s;
    if (!k->ctx) return fail(k, SQLITE_IOERR_LOCK, "kvsql: store used outside a command", 0);
    if (k->readonly) return fail(k, SQLITE_READONLY, "kvsql: this command is read-only", 0);
    t->level = KVSQL_LOCK_WRITE;
    return SQLITE_OK;
}

static void ks_unlock(kvsql_store *s, kvsql_txn *t, int level) {
    (void)s;
    t->level = level;
}

static int read_one(keyspace_store *k, uint32_t index, void *buf, uint32_t page_size) {
    void *p = pagemap_get(&k->pending.map, index);
    if (p) {
        memcpy(buf, p, page_size);
        return SQLITE_OK;
    }
    RedisModuleString *v = index == 0 ? page1_value(k) : get_field(k, index);
    if (!v && index == kvsql_lock_byte_index(page_size)) { /* the gap an older module left */
        memset(buf, 0, page_size);
        return SQLITE_OK;
    }
    if (!v) return fail(k, SQLITE_CORRUPT, "kvsql: field %lld of the hash (a page) is missing", index);
    size_t len;
    const char *data = RedisModule_StringPtrLen(v, &len);
    int rc = SQLITE_OK;
    if (len == page_size) memcpy(buf, data, len);
    else rc = fail(k, SQLITE_CORRUPT, "kvsql: field %lld of the hash is not one page long", index);
    if (index != 0) RedisModule_FreeString(k->ctx, v);
    return rc;
}

static int ks_read(kvsql_store *s, kvsql_txn *t, uint32_t first, uint32_t count, void *buf) {
    keyspace_store *k = (keyspace_store *)s;
    if (!k->ctx) return fail(k, SQLITE_IOERR_READ, "kvsql: store used outside a command", 0);
    unsigned char *out = buf;
    for (uint32_t i = 0; i < count; i++, out += t->page_size) {
        int rc = read_one(k, first + i, out, t->page_size);
        if (rc != SQLITE_OK) return rc;
    }
    return SQLITE_OK;
}

static int ks_commit(kvsql_store *s, kvsql_txn *t, const kvsql_batch *b) {
    keyspace_store *k = (keyspace_store *)s;
    if (!k->ctx) return fail(k, SQLITE_IOERR_WRITE, "kvsql: store used outside a command", 0);
    if (k->readonly) return fail(k, SQLITE_READONLY, "kvsql: this command is read-only", 0);
    return pending_add(&k->pending, t, b) == 0 ? SQLITE_OK : SQLITE_NOMEM; /* the call fails and discards it all */
}

static const char *ks_errmsg(kvsql_store *s) {
    return ((keyspace_store *)s)->err;
}

static void free_values(keyspace_store *k);

static void ks_destroy(kvsql_store *s) {
    keyspace_store *k = (keyspace_store *)s;
    drop_page1(k);
    free_values(k);
    pagemap_clear(&k->pending.map);
    aux_keys_free(&k->aux);
    sqlite3_free(k);
}

static const kvsql_store_methods keyspace_methods = {
    ks_begin, ks_read, ks_lock, ks_commit, ks_unlock, ks_errmsg, ks_destroy,
};

kvsql_store *keyspace_store_new(void) {
    keyspace_store *k = sqlite3_malloc(sizeof(*k));
    if (!k) return NULL;
    memset(k, 0, sizeof(*k));
    k->base.m = &keyspace_methods;
    pagemap_init(&k->pending.map);
    return &k->base;
}

void keyspace_store_attach(kvsql_store *s, RedisModuleCtx *ctx, RedisModuleKey *key,
                           RedisModuleString *keyname, int readonly) {
    keyspace_store *k = (keyspace_store *)s;
    k->ctx = ctx;
    k->key = key;
    k->keyname = keyname;
    k->readonly = readonly;
    k->err[0] = 0;
}

void keyspace_store_detach(kvsql_store *s) {
    keyspace_store *k = (keyspace_store *)s;
    if (!k->pending.any) pagemap_clear(&k->pending.map); /* an idle connection keeps no page buffers */
    drop_page1(k);
    k->ctx = NULL;
    k->key = NULL;
    k->keyname = NULL;
}

int keyspace_store_check(kvsql_store *s) {
    keyspace_store *k = (keyspace_store *)s;
    if (!has_hash(k)) return 0;
    size_t len = 0;
    char why[128];
    RedisModuleString *v = page1_value(k);
    const unsigned char *h = v ? (const unsigned char *)RedisModule_StringPtrLen(v, &len) : NULL;
    int rc = kvsql_check_page1(h, len, why, sizeof(why));
    if (rc != 0) {
        snprintf(k->err, sizeof(k->err), "the hash is not a kvsql database (%s)", why);
        return -1;
    }
    k->page_size = (uint32_t)len;
    uint32_t n = stored_npages(k), last = n - 1;
    if (last != kvsql_lock_byte_index(k->page_size) && !field_exists(k, last))
        return fail(k, -1, "the hash is not a kvsql database (field %lld is missing)", (long long)last);
    k->known_hlen = hash_length(k);
    return 0;
}

int keyspace_store_matches(kvsql_store *s, RedisModuleKey *key) {
    keyspace_store *k = (keyspace_store *)s;
    int hash = key && RedisModule_KeyType(key) == REDISMODULE_KEYTYPE_HASH;
    return (hash ? (uint32_t)RedisModule_ValueLength(key) : 0) == k->known_hlen;
}

void keyspace_store_changed(kvsql_store *s) {
    ((keyspace_store *)s)->generation++;
}

int keyspace_store_page_size(kvsql_store *s) {
    return (int)((keyspace_store *)s)->page_size;
}

uint32_t keyspace_store_npages(kvsql_store *s) {
    return stored_npages((keyspace_store *)s);
}

static void free_values(keyspace_store *k) {
    if (!k->values) return;
    for (size_t i = 0; i < k->pending.map.cap; i++)
        if (k->values[i]) RedisModule_FreeString(NULL, k->values[i]);
    RedisModule_Free(k->values);
    k->values = NULL;
}

void keyspace_store_adopt(kvsql_store *s, pending_pages *pages, RedisModuleString **values) {
    keyspace_store *k = (keyspace_store *)s;
    free_values(k);
    pagemap_clear(&k->pending.map);
    pending_move(pages, &k->pending);
    k->values = values;
}

int keyspace_store_has_pending(kvsql_store *s) {
    return ((keyspace_store *)s)->pending.any;
}

void keyspace_store_discard(kvsql_store *s) {
    keyspace_store *k = (keyspace_store *)s;
    free_values(k);
    pagemap_reset(&k->pending.map);
    k->pending.any = 0;
}

/* Whether page 1 in the hash equals `page` but for the file change counter
 * (bytes 24-27) and its "valid for" copy (92-95): SQLite moves them at the
 * first commit after it takes its lock, and the VFS shows each connection
 * its own counter anyway (src/vfs.c), so such a page 1 is left out. */
static int page1_unchanged(keyspace_store *k, const unsigned char *page, uint32_t len) {
    RedisModuleString *v = page1_value(k);
    if (!v) return 0;
    size_t vlen;
    const unsigned char *old = (const unsigned char *)RedisModule_StringPtrLen(v, &vlen);
    int same = vlen == len && len >= 100 && memcmp(old, page, 24) == 0 && memcmp(old + 28, page + 28, 64) == 0 &&
               memcmp(old + 96, page + 96, len - 96) == 0;
    return same;
}

/* A page the end-of-call write sets. */
typedef struct change {
    uint32_t index;
    const void *page;
    RedisModuleString **value; /* the page as a string made beforehand, or NULL */
} change;

/* The pending pages to write, into out. SQLite hands the VFS only pages it
 * changed (a B-tree leaves a page clean when a cell is rewritten with the
 * same bytes), so only page 1 is compared with the hash: its counter
 * moves alone at the first commit of a lock. Comparing every page cost an
 * HGET copy of each, a third of an insert (bench/PROFILE.md). */
static size_t changed_pages(keyspace_store *k, change *out) {
    size_t n = 0;
    for (size_t i = 0; i < k->pending.map.cap; i++) {
        pagemap_slot *sl = &k->pending.map.slots[i];
        if (!sl->page) continue;
        if (sl->index == 0 && page1_unchanged(k, sl->page, k->pending.page_size)) continue;
        out[n++] = (change){sl->index, sl->page, k->values && k->values[i] ? &k->values[i] : NULL};
    }
    return n;
}

/* The indexes whose current pages the write overwrites or deletes: what
 * undo records save. */
static size_t overwritten_pages(keyspace_store *k, const change *c, size_t nc, uint32_t old_npages,
                                uint32_t *out) {
    size_t n = 0;
    for (size_t i = 0; i < nc; i++)
        if (c[i].index < old_npages) out[n++] = c[i].index;
    for (uint32_t i = k->pending.npages; i < old_npages; i++) out[n++] = i;
    return n;
}

/* Sets the changed pages; fills argv with field/value pairs for HSET. */
static size_t write_pages(keyspace_store *k, const change *c, size_t nc, RedisModuleString **argv) {
    size_t n = 0;
    for (size_t i = 0; i < nc; i++) {
        char field[KVSQL_FIELD_MAX];
        RedisModuleString *f = RedisModule_CreateString(k->ctx, field, kvsql_field_name(field, c[i].index));
        RedisModuleString *v = c[i].value ? *c[i].value : RedisModule_CreateString(k->ctx, c[i].page, k->pending.page_size);
        if (c[i].value) *c[i].value = NULL; /* now argv's, freed with it */
        RedisModule_HashSet(k->key, REDISMODULE_HASH_NONE, f, v, NULL);
        argv[n++] = f;
        argv[n++] = v;
    }
    return n;
}

/* Deletes fields from npages to old_npages-1; fills argv for HDEL. */
static size_t delete_pages(keyspace_store *k, uint32_t old_npages, RedisModuleString **argv) {
    size_t n = 0;
    for (uint32_t i = k->pending.npages; i < old_npages; i++) {
        char field[KVSQL_FIELD_MAX];
        RedisModuleString *f = RedisModule_CreateString(k->ctx, field, kvsql_field_name(field, i));
        RedisModule_HashSet(k->key, REDISMODULE_HASH_NONE, f, REDISMODULE_HASH_DELETE, NULL);
        argv[n++] = f;
    }
    return n;
}

static void free_strings(keyspace_store *k, RedisModuleString **argv, size_t n) {
    for (size_t i = 0; i < n; i++) RedisModule_FreeString(k->ctx, argv[i]);
}

/* Worker threads reading this hash on a snapshot (snapshot.h) keep the
 * pages this write overwrites or deletes (out of memory, they start
 * again on a new snapshot; the write goes on). */
static void preserve_for_snapshots(keyspace_store *k, const change *c, size_t nc, uint32_t old_npages) {
    if (!snapshots_live()) return;
    size_t ndel = old_npages > k->pending.npages ? old_npages - k->pending.npages : 0;
    uint32_t *old = RedisModule_Alloc(sizeof(*old) * (nc + ndel + 1));
    size_t nold = overwritten_pages(k, c, nc, old_npages, old);
    snapshots_preserve(RedisModule_GetSelectedDb(k->ctx), k->keyname, k->key, old, nold);
    RedisModule_Free(old);
}

/* Writes the changes to the hash and propagates them with the version's
 * INCR: HSET, HDEL, INCR T:v, wrapped by Redis in MULTI/EXEC. */
static void write_changes(keyspace_store *k, const change *c, size_t nc, uint32_t old_npages, const aux_keys *a) {
    size_t ndel = old_npages > k->pending.npages ? old_npages - k->pending.npages : 0;
    drop_page1(k); /* the hash's page 1 is about to change */
    RedisModuleString **set = RedisModule_Alloc(sizeof(*set) * (2 * nc + 1));
    RedisModuleString **del = RedisModule_Alloc(sizeof(*del) * (ndel + 1));
    size_t nset = write_pages(k, c, nc, set);
    ndel = delete_pages(k, old_npages, del);
    if (nset) RedisModule_Replicate(k->ctx, "HSET", "sv", k->keyname, set, nset);
    if (ndel) RedisModule_Replicate(k->ctx, "HDEL", "sv", k->keyname, del, ndel);
    protocol_propagate_version(k->ctx, a);
    if (nset) RedisModule_NotifyKeyspaceEvent(k->ctx, REDISMODULE_NOTIFY_HASH, "hset", k->keyname);
    if (ndel) RedisModule_NotifyKeyspaceEvent(k->ctx, REDISMODULE_NOTIFY_HASH, "hdel", k->keyname);
    RedisModule_SignalModifiedKey(k->ctx, k->keyname);
    free_strings(k, set, nset);
    free_strings(k, del, ndel);
    RedisModule_Free(set);
    RedisModule_Free(del);
}

/* The library protocol's checks and records before a write (protocol.h).
 * Returns 0, or -1 with an error reply text in err: nothing written. */
static int prepare_write(keyspace_store *k, const change *c, size_t nc, uint32_t old_npages, const aux_keys *a,
                         char *err, size_t errlen) {
    if (protocol_lease_held(k->ctx, a)) {
        snprintf(err, errlen, "%s", PROTOCOL_LEASE_BUSY);
        return -1;
    }
    size_t ndel = old_npages > k->pending.npages ? old_npages - k->pending.npages : 0;
    uint32_t *old = RedisModule_Alloc(sizeof(*old) * (nc + ndel + 1));
    size_t nold = overwritten_pages(k, c, nc, old_npages, old);
    int rc = protocol_save_undo(k->ctx, a, k->key, old, nold, err, errlen);
    RedisModule_Free(old);
    if (rc == 0) rc = protocol_bump_version(k->ctx, a, err, errlen);
    return rc;
}

/* ---- commits too big for the replication link ---------------------------- */

/* Below this many bytes a commit is not checked against the replicas'
 * output buffer limit (the check costs two calls into Redis). */
#define REPL_CHECK_MIN_BYTES (64 * 1024)

/* About how many bytes the write of nc pages and ndel deletions adds to
 * the replication stream: each field and page with RESP framing. */
static size_t propagated_bytes(keyspace_store *k, size_t nc, size_t ndel) {
    return nc * ((size_t)k->pending.page_size + 40) + ndel * 24 + 256 + changes_bytes(); /* the row changes too */
}

/* Refuses, before anything is written, a commit that would overflow the
 * output buffer Redis keeps for each replica: Redis would drop the replica
 * and force a full resync (docs/COMMANDS.md, "Big writes and replicas").
 * Returns 0, or -1 with an error reply text in err. */
static int check_replication_room(keyspace_store *k, size_t nc, size_t ndel, char *err, size_t errlen) {
    size_t bytes = propagated_bytes(k, nc, ndel);
    if (bytes < REPL_CHECK_MIN_BYTES) return 0;
    long long hard, soft;
    replicas_buffer_limits(k->ctx, &hard, &soft);
    if (hard <= 0 || (long long)bytes <= hard || replicas_count(k->ctx) == 0) return 0;
    snprintf(err, errlen,
             "SQLITE_TOOBIG kvsql: this write would send about %zu bytes to the replicas at once, more than "
             "client-output-buffer-limit allows a replica (hard limit %lld bytes): Redis would drop the "
             "replica and resync it in full. Nothing was written. Raise the limit (CONFIG SET "
             "client-output-buffer-limit \"replica <hard> <soft> <seconds>\") or write in smaller calls",
             bytes, hard);
    return -1;
}

/* Forgets the pending pages after they were written (or found unchanged). */
static void finish_flush(keyspace_store *k) {
    k->page_size = k->pending.page_size;
    k->known_hlen = k->pending.npages;
    keyspace_store_discard(&k->base);
}

int keyspace_store_flush(kvsql_store *s, char *err, size_t errlen) {
    keyspace_store *k = (keyspace_store *)s;
    if (!k->pending.any) return 0;
    uint32_t old_npages = stored_npages(k);
    uint32_t lb = k->pending.page_size ? kvsql_lock_byte_index(k->pending.page_size) : UINT32_MAX;
    int fill_gap = k->pending.npages > lb && has_lock_byte_gap(k) && !pagemap_get(&k->pending.map, lb);
    change *c = RedisModule_Alloc(sizeof(*c) * (k->pending.map.count + 2));
    void *zeros = fill_gap ? RedisModule_Alloc(k->pending.page_size) : NULL;
    size_t nc = changed_pages(k, c);
    if (fill_gap) {
        memset(zeros, 0, k->pending.page_size);
        c[nc++] = (change){lb, zeros, NULL};
    }
    int rc = 0;
    if (nc || old_npages > k->pending.npages) {
        if (!k->aux.version) aux_keys_make(k->keyname, &k->aux); /* the store's key never changes */
        const aux_keys *a = &k->aux;
        size_t ndel = old_npages > k->pending.npages ? old_npages - k->pending.npages : 0;
        flushing = 1; /* keyspace events of our own writes */
        rc = slot_keys_writable(k->ctx, k->keyname, err, errlen); /* in a cluster: all its keys here */
        if (rc == 0) rc = check_replication_room(k, nc, ndel, err, errlen);
        if (rc == 0) rc = changes_check_write(k->ctx, err, errlen); /* capture's stream can take the entries */
        if (rc == 0) rc = prepare_write(k, c, nc, old_npages, a, err, errlen);
        if (rc == 0) preserve_for_snapshots(k, c, nc, old_npages);
        if (rc == 0) write_changes(k, c, nc, old_npages, a);
        if (rc == 0) changes_write(k->ctx, a->version); /* the row changes, in the same MULTI/EXEC */
        flushing = 0;
    }
    RedisModule_Free(c);
    if (zeros) RedisModule_Free(zeros);
    if (rc != 0) return -1; /* the pending pages stay for keyspace_store_discard */
    finish_flush(k);
    return 0;
}
