/* protocol.c - the module's side of the library protocol; see protocol.h
 * and docs/FORMAT.md. Called by store_keyspace.c when a call writes.
 *
 * Coordination writes (readers, undo) go through RedisModule_Call without
 * the "!" flag, so Redis neither replicates them nor appends them to the
 * AOF; the version's INCR and the identity's SET are propagated
 * explicitly, after the pages, so replicas and the AOF get HSET ... INCR
 * T:v, SET T:id in one MULTI/EXEC.
 *
 * Identity (docs/FORMAT.md): every write gives the version it makes a new
 * random id, T:id = "<new version>:<16 hex>", so that a version number
 * reached again by another history (FLUSHALL, a deleted or restored
 * database, a failover) is never taken by a library client for the one it
 * cached. The changelog entry and the undo records of a write name the
 * identity they start from (its base) and, for the log, the one they
 * make, so a client follows them only along one history. */
#include "module/store/protocol.h"

#include "format.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The write under way (one per aux_keys, main thread only): the random
 * part of the identity protocol_save_undo chose for the next version, and
 * the whole identity protocol_bump_version wrote, for propagation. */
struct protocol_write {
    char hex[KVSQL_ID_HEX + 1];
    char ident[48];
};

/* ---- key names --------------------------------------------------------- */

RedisModuleString *aux_key_name(RedisModuleCtx *ctx, RedisModuleString *keyname, const char *suffix) {
    size_t len;
    const char *k = RedisModule_StringPtrLen(keyname, &len);
    char buf[256];
    size_t n = kvsql_aux_key(buf, sizeof(buf), k, len, suffix);
    if (n < sizeof(buf)) return RedisModule_CreateString(ctx, buf, n);
    char *big = RedisModule_Alloc(n + 1); /* a long key name */
    kvsql_aux_key(big, n + 1, k, len, suffix);
    RedisModuleString *s = RedisModule_CreateString(ctx, big, n);
    RedisModule_Free(big);
    return s;
}

void aux_keys_make(RedisModuleString *keyname, aux_keys *a) {
    /* no context: the names outlive the call */
    a->version = aux_key_name(NULL, keyname, KVSQL_AUX_VERSION);
    a->lease = aux_key_name(NULL, keyname, KVSQL_AUX_LEASE);
    a->readers = aux_key_name(NULL, keyname, KVSQL_AUX_READERS);
    a->undo = aux_key_name(NULL, keyname, KVSQL_AUX_UNDO);
    a->undo_idx = aux_key_name(NULL, keyname, KVSQL_AUX_UNDO_IDX);
    a->undo_ver = aux_key_name(NULL, keyname, KVSQL_AUX_UNDO_VER);
    a->log = aux_key_name(NULL, keyname, KVSQL_AUX_LOG);
    a->id = aux_key_name(NULL, keyname, KVSQL_AUX_ID);
    a->write = RedisModule_Alloc(sizeof(*a->write));
    memset(a->write, 0, sizeof(*a->write));
}

void aux_keys_free(aux_keys *a) {
    RedisModuleString **all[] = {&a->version, &a->lease, &a->readers, &a->undo, &a->undo_idx, &a->undo_ver, &a->log,
                                 &a->id};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (*all[i]) RedisModule_FreeString(NULL, *all[i]);
        *all[i] = NULL;
    }
    if (a->write) RedisModule_Free(a->write);
    a->write = NULL;
}

/* ---- small helpers ----------------------------------------------------- */

static int key_exists(RedisModuleCtx *ctx, RedisModuleString *name) {
    return RedisModule_KeyExists(ctx, name); /* as a read of it, leaving its access time */
}

/* Turns a failed RedisModule_Call into an error reply text; returns -1. */
static int call_failed(RedisModuleCallReply *r, const char *what, RedisModuleString *key, char *err,
                       size_t errlen) {
    size_t klen, mlen = 0;
    const char *k = RedisModule_StringPtrLen(key, &klen);
    const char *msg = r ? RedisModule_CallReplyStringPtr(r, &mlen) : NULL;
    if (!msg && errno == EPERM) /* what RedisModule_Call says to a key of another cluster slot */
        msg = "in another cluster slot than the database (a key without a hash tag must not contain '}', "
              "see docs/FORMAT.md)";
    else if (!msg)
        msg = strerror(errno);
    if (!mlen) mlen = strlen(msg);
    snprintf(err, errlen, "ERR kvsql: cannot %s '%.*s': %.*s", what, (int)(klen > 200 ? 200 : klen), k,
             (int)(mlen > 300 ? 300 : mlen), msg);
    return -1;
}

/* A reply that is neither missing nor an error. */
static int call_ok(RedisModuleCallReply *r) {
    return r && RedisModule_CallReplyType(r) != REDISMODULE_REPLY_ERROR;
}

static void free_reply(RedisModuleCallReply *r) {
    if (r) RedisModule_FreeCallReply(r);
}

static void free_strings(RedisModuleCtx *ctx, RedisModuleString **v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (v[i]) RedisModule_FreeString(ctx, v[i]);
}

/* ---- the lease ---------------------------------------------------------- */

/* The CLIENT ID a lease's token names after its 32 hex digits
 * ("<hex>-<id>", src/client/net/conn.c), or 0 when it names none. */
static uint64_t lease_owner_id(RedisModuleCallReply *r) {
    size_t len;
    const char *p = r ? RedisModule_CallReplyStringPtr(r, &len) : NULL;
    char buf[64];
    if (!p || len >= sizeof(buf)) return 0;
    memcpy(buf, p, len);
    buf[len] = 0;
    const char *dash = strchr(buf, '-');
    char *end = NULL;
    unsigned long long id = dash ? strtoull(dash + 1, &end, 10) : 0;
    return dash && end && !*end ? (uint64_t)id : 0;
}

int protocol_lease_held(RedisModuleCtx *ctx, const aux_keys *a) {
    if (!key_exists(ctx, a->lease)) return 0;
    RedisModuleCallReply *r = RedisModule_Call(ctx, "GET", "s", a->lease);
    uint64_t id = call_ok(r) && RedisModule_CallReplyType(r) == REDISMODULE_REPLY_STRING ? lease_owner_id(r) : 0;
    free_reply(r);
    if (!id || RedisModule_GetClientInfoById(NULL, id) == REDISMODULE_OK) return 1;
    /* its owner's connection is gone: the token can never commit again */
    r = RedisModule_Call(ctx, "DEL", "s", a->lease);
    free_reply(r);
    return 0;
}

/* ---- readers ------------------------------------------------------------ */

/* Drops lapsed readers; sets *oldest to the smallest snapshot of the
 * readers left. Returns 1 when some remain, 0 when none, -1 on error. */
static int live_readers(RedisModuleCtx *ctx, const aux_keys *a, uint64_t *oldest, char *err, size_t errlen) {
    RedisModuleCallReply *r =
        RedisModule_Call(ctx, "ZREMRANGEBYSCORE", "scl", a->readers, "-inf", RedisModule_Milliseconds());
    if (!call_ok(r)) {
        int rc = call_failed(r, "drop lapsed readers of", a->readers, err, errlen);
        free_reply(r);
        return rc;
    }
    free_reply(r);
    /* no client registers further ahead than the longest lease: a member
     * scored so (forged) would keep every undo record forever */
    char beyond[32];
    snprintf(beyond, sizeof(beyond), "(%lld", RedisModule_Milliseconds() + (long long)KVSQL_LEASE_MAX_MS);
    r = RedisModule_Call(ctx, "ZREMRANGEBYSCORE", "scc", a->readers, beyond, "+inf");
    if (!call_ok(r)) {
        int rc = call_failed(r, "drop forged readers of", a->readers, err, errlen);
        free_reply(r);
        return rc;
    }
    free_reply(r);
    r = RedisModule_Call(ctx, "ZRANGE", "scc", a->readers, "0", "-1");
    if (!call_ok(r)) {
        int rc = call_failed(r, "read the readers of", a->readers, err, errlen);
        free_reply(r);
        return rc;
    }
    size_t n = RedisModule_CallReplyLength(r);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *m = RedisModule_CallReplyStringPtr(RedisModule_CallReplyArrayElement(r, i), &len);
        uint64_t snap = m ? strtoull(m, NULL, 10) : 0; /* "<snapshot>:<token>" */
        if (i == 0 || snap < *oldest) *oldest = snap;
    }
    free_reply(r);
    return n > 0;
}

/* ---- undo records ------------------------------------------------------- */

static int delete_undo(RedisModuleCtx *ctx, const aux_keys *a, char *err, size_t errlen) {
    RedisModuleCallReply *r = RedisModule_Call(ctx, "DEL", "sss", a->undo, a->undo_idx, a->undo_ver);
    int rc = call_ok(r) ? 0 : call_failed(r, "delete the undo records", a->undo, err, errlen);
    free_reply(r);
    return rc;
}

/* The version T:v holds now (0 when missing). Returns 0 or -1. */
static int current_version(RedisModuleCtx *ctx, const aux_keys *a, uint64_t *v, char *err, size_t errlen) {
    RedisModuleCallReply *r = RedisModule_Call(ctx, "GET", "s", a->version);
    int rc = 0;
    if (!call_ok(r)) {
        rc = call_failed(r, "read the version", a->version, err, errlen);
    } else if (RedisModule_CallReplyType(r) == REDISMODULE_REPLY_NULL) {
        *v = 0;
    } else {
        size_t len;
        const char *p = RedisModule_CallReplyStringPtr(r, &len);
        char buf[24] = "";
        char *end = NULL;
        if (p && len > 0 && len < sizeof(buf)) memcpy(buf, p, len);
        *v = strtoull(buf, &end, 10);
        if (!p || len == 0 || len >= sizeof(buf) || *end)
            rc = call_failed(NULL, "read the version (not a decimal number)", a->version, err, errlen);
    }
    free_reply(r);
    return rc;
}

/* Removes the records of versions at or below `oldest`: no reader needs them. */
static int trim_undo(RedisModuleCtx *ctx, const aux_keys *a, uint64_t oldest, char *err, size_t errlen) {
    RedisModuleCallReply *r = RedisModule_Call(ctx, "ZRANGEBYSCORE", "scl", a->undo_ver, "-inf", (long long)oldest);
    if (!call_ok(r)) {
        int rc = call_failed(r, "trim the undo records", a->undo_ver, err, errlen);
        free_reply(r);
        return rc;
    }
    size_t n = RedisModule_CallReplyLength(r);
    if (n == 0) {
        free_reply(r);
        return 0;
    }
    RedisModuleString **fields = RedisModule_Alloc(sizeof(*fields) * n);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *f = RedisModule_CallReplyStringPtr(RedisModule_CallReplyArrayElement(r, i), &len);
        fields[i] = RedisModule_CreateString(ctx, f ? f : "", f ? len : 0);
    }
    free_reply(r);
    RedisModuleCallReply *r1 = RedisModule_Call(ctx, "HDEL", "sv", a->undo, fields, n);
    RedisModuleCallReply *r2 = RedisModule_Call(ctx, "ZREM", "sv", a->undo_idx, fields, n);
    RedisModuleCallReply *r3 = RedisModule_Call(ctx, "ZREMRANGEBYSCORE", "scl", a->undo_ver, "-inf", (long long)oldest);
    int rc = 0;
    if (!call_ok(r1)) rc = call_failed(r1, "trim the undo records", a->undo, err, errlen);
    else if (!call_ok(r2)) rc = call_failed(r2, "trim the undo records", a->undo_idx, err, errlen);
    else if (!call_ok(r3)) rc = call_failed(r3, "trim the undo records", a->undo_ver, err, errlen);
    free_reply(r1);
    free_reply(r2);
    free_reply(r3);
    free_strings(ctx, fields, n);
    RedisModule_Free(fields);
    return rc;
}

/* The value of field `index` of the hash in key, or NULL (free it). */
static RedisModuleString *page_value(RedisModuleKey *key, uint32_t index) {
    char field[KVSQL_FIELD_MAX];
    RedisModuleString *val = NULL;
    kvsql_field_name(field, index);
    RedisModule_HashGet(key, REDISMODULE_HASH_CFIELDS, field, &val, NULL);
    return val;
}

/* Writes the before-images of `indexes` as records of `version`:
 * HSET T:undo, ZADD T:undo:idx 0 ..., ZADD T:undo:ver version ...; and
 * the record "base:<version, 16 hex>" naming the identity they were taken
 * from (a reader follows records only from its own snapshot's identity). */
static int write_undo(RedisModuleCtx *ctx, const aux_keys *a, RedisModuleKey *key, const uint32_t *indexes,
                      size_t n, uint64_t version, const char *base, char *err, size_t errlen) {
    RedisModuleString **pairs = RedisModule_Alloc(sizeof(*pairs) * (2 * n + 3));
    RedisModuleString **idx = RedisModule_Alloc(sizeof(*idx) * (2 * n + 3));
    RedisModuleString **ver = RedisModule_Alloc(sizeof(*ver) * (2 * n + 3));
    RedisModuleString *zero = RedisModule_CreateString(ctx, "0", 1);
    char vbuf[24], bfield[32];
    int vlen = snprintf(vbuf, sizeof(vbuf), "%llu", (unsigned long long)version);
    RedisModuleString *vstr = RedisModule_CreateString(ctx, vbuf, (size_t)vlen);
    int blen = snprintf(bfield, sizeof(bfield), KVSQL_UNDO_BASE "%0*llx", KVSQL_UNDO_VERSION_HEX,
                        (unsigned long long)version);
    RedisModuleString *bf = RedisModule_CreateString(ctx, bfield, (size_t)blen);
    pairs[0] = bf, pairs[1] = RedisModule_CreateString(ctx, base, strlen(base));
    idx[0] = zero, idx[1] = bf;
    ver[0] = vstr, ver[1] = bf;
    size_t m = 1;
    for (size_t i = 0; i < n; i++) {
        RedisModuleString *old = page_value(key, indexes[i]);
        if (!old) continue; /* a page never stored (the lock-byte gap) */
        char field[KVSQL_UNDO_FIELD_LEN + 1];
        kvsql_undo_field(field, indexes[i], version);
        RedisModuleString *f = RedisModule_CreateString(ctx, field, KVSQL_UNDO_FIELD_LEN);
        pairs[2 * m] = f, pairs[2 * m + 1] = old;
        idx[2 * m] = zero, idx[2 * m + 1] = f;
        ver[2 * m] = vstr, ver[2 * m + 1] = f;
        m++;
    }
    int rc = 0;
    {
        RedisModuleCallReply *r1 = RedisModule_Call(ctx, "HSET", "sv", a->undo, pairs, 2 * m);
        RedisModuleCallReply *r2 = RedisModule_Call(ctx, "ZADD", "sv", a->undo_idx, idx, 2 * m);
        RedisModuleCallReply *r3 = RedisModule_Call(ctx, "ZADD", "sv", a->undo_ver, ver, 2 * m);
        if (!call_ok(r1)) rc = call_failed(r1, "save undo records in", a->undo, err, errlen);
        else if (!call_ok(r2)) rc = call_failed(r2, "save undo records in", a->undo_idx, err, errlen);
        else if (!call_ok(r3)) rc = call_failed(r3, "save undo records in", a->undo_ver, err, errlen);
        free_reply(r1);
        free_reply(r2);
        free_reply(r3);
    }
    free_strings(ctx, pairs, 2 * m); /* the fields and the old pages */
    RedisModule_FreeString(ctx, zero);
    RedisModule_FreeString(ctx, vstr);
    RedisModule_Free(pairs);
    RedisModule_Free(idx);
    RedisModule_Free(ver);
    return rc;
}

/* ---- the changelog ------------------------------------------------------ */

/* The entry "<version>:<page>,<page>,...;<base>;<version>:<hex>"
 * ("<version>:*;..." past KVSQL_LOG_ENTRY_PAGES pages), as format.h writes
 * it: the pages, the identity the commit starts from and the one it
 * makes. Free it. */
static char *log_entry(uint64_t version, const uint32_t *indexes, size_t n, const char *base, const char *hex,
                       size_t *len) {
    int all = n > KVSQL_LOG_ENTRY_PAGES;
    size_t cap = 96 + strlen(base) + (all ? 1 : n * 11), at = 0;
    char *e = RedisModule_Alloc(cap);
    if (!e) return NULL;
    at += (size_t)snprintf(e, cap, all ? "%llu:*" : "%llu:", (unsigned long long)version);
    for (size_t i = 0; !all && i < n; i++) at += (size_t)snprintf(e + at, cap - at, i ? ",%u" : "%u", indexes[i]);
    at += (size_t)snprintf(e + at, cap - at, ";%s;%llu:%s", base, (unsigned long long)version, hex);
    *len = at;
    return e;
}

/* LPUSH the entry of the next version (version + 1) to T:log and LTRIM it. */
static int log_changes(RedisModuleCtx *ctx, const aux_keys *a, uint64_t version, const uint32_t *indexes, size_t n,
                       const char *base, char *err, size_t errlen) {
    size_t len;
    char *e = log_entry(version + 1, indexes, n, base, a->write->hex, &len);
    if (!e) return call_failed(NULL, "log the changed pages (out of memory) in", a->log, err, errlen);
    RedisModuleCallReply *r = RedisModule_Call(ctx, "LPUSH", "sb", a->log, e, len);
    RedisModule_Free(e);
    int rc = call_ok(r) ? 0 : call_failed(r, "log the changed pages in", a->log, err, errlen);
    free_reply(r);
    if (rc == 0) {
        r = RedisModule_Call(ctx, "LTRIM", "scl", a->log, "0", (long long)KVSQL_LOG_ENTRIES - 1);
        rc = call_ok(r) ? 0 : call_failed(r, "trim", a->log, err, errlen);
        free_reply(r);
    }
    return rc;
}

/* The identity of `version`, the version T:v holds (docs/FORMAT.md,
 * "Identity"): T:id when it names that version, else the version alone. */
static int current_ident(RedisModuleCtx *ctx, const aux_keys *a, uint64_t version, char *out, size_t cap, char *err,
                         size_t errlen) {
    int vl = snprintf(out, cap, "%llu", (unsigned long long)version);
    RedisModuleCallReply *r = RedisModule_Call(ctx, "GET", "s", a->id);
    if (!call_ok(r)) {
        int rc = call_failed(r, "read the identity", a->id, err, errlen);
        free_reply(r);
        return rc;
    }
    size_t len = 0;
    const char *p = RedisModule_CallReplyType(r) == REDISMODULE_REPLY_NULL ? NULL : RedisModule_CallReplyStringPtr(r, &len);
    if (p && len < cap && len > (size_t)vl && memcmp(p, out, (size_t)vl) == 0 && p[vl] == ':') {
        memcpy(out, p, len);
        out[len] = 0;
    }
    free_reply(r);
    return 0;
}

/* Whether key holds `type` or nothing; else the error for a key of
 * another type: checked before anything of a write is written. */
static int type_fits(RedisModuleCtx *ctx, RedisModuleString *name, int type, const char *what, char *err,
                     size_t errlen) {
    RedisModuleKey *k = RedisModule_OpenKey(ctx, name, REDISMODULE_READ | REDISMODULE_OPEN_KEY_NOTOUCH);
    int t = k ? RedisModule_KeyType(k) : REDISMODULE_KEYTYPE_EMPTY;
    if (k) RedisModule_CloseKey(k);
    if (t == REDISMODULE_KEYTYPE_EMPTY || t == type) return 0;
    size_t len;
    const char *n = RedisModule_StringPtrLen(name, &len);
    snprintf(err, errlen, "ERR kvsql: the auxiliary key '%.*s' holds another type than a %s (damaged or written by "
                          "hand, docs/FORMAT.md): nothing was written",
             (int)(len > 200 ? 200 : len), n, what);
    return -1;
}

/* Every auxiliary key a write may touch holds its own type: checked before
 * the first write (the version's own value is checked by current_version
 * and, in place, by protocol_bump_version before the pages). */
static int aux_types_fit(RedisModuleCtx *ctx, const aux_keys *a, char *err, size_t errlen) {
    return type_fits(ctx, a->version, REDISMODULE_KEYTYPE_STRING, "string", err, errlen) ||
           type_fits(ctx, a->id, REDISMODULE_KEYTYPE_STRING, "string", err, errlen) ||
           type_fits(ctx, a->log, REDISMODULE_KEYTYPE_LIST, "list", err, errlen) ||
           type_fits(ctx, a->readers, REDISMODULE_KEYTYPE_ZSET, "sorted set", err, errlen) ||
           type_fits(ctx, a->undo, REDISMODULE_KEYTYPE_HASH, "hash", err, errlen) ||
           type_fits(ctx, a->undo_idx, REDISMODULE_KEYTYPE_ZSET, "sorted set", err, errlen) ||
           type_fits(ctx, a->undo_ver, REDISMODULE_KEYTYPE_ZSET, "sorted set", err, errlen)
               ? -1
               : 0;
}

/* A commit's identity: KVSQL_ID_HEX hex digits no other commit has. Redis's
 * own generator (RedisModule_GetRandomHexChars) hashes with SHA-256 at
 * every call, 19,000 instructions, a third of an insert; here it seeds
 * splitmix64 once per process, whose outputs for distinct counters are
 * distinct (a bijection of 64 bits), and a new process (a restart, another
 * master) draws a new seed. Writes run one at a time under Redis's lock,
 * the counter is atomic all the same. */
static void new_commit_id(char out[KVSQL_ID_HEX + 1]) {
    static uint64_t seed, counter;
    static const char digits[] = "0123456789abcdef";
    if (!__atomic_load_n(&seed, __ATOMIC_ACQUIRE)) {
        uint64_t s = 0;
        RedisModule_GetRandomBytes((unsigned char *)&s, sizeof(s));
        __atomic_store_n(&seed, s | 1, __ATOMIC_RELEASE);
    }
    uint64_t z = __atomic_load_n(&seed, __ATOMIC_ACQUIRE) + __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED) *
                                                                0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    for (int i = KVSQL_ID_HEX - 1; i >= 0; i--, z >>= 4) out[i] = digits[z & 15];
    out[KVSQL_ID_HEX] = 0;
}

int protocol_save_undo(RedisModuleCtx *ctx, const aux_keys *a, RedisModuleKey *key, const uint32_t *indexes,
                       size_t n, char *err, size_t errlen) {
    new_commit_id(a->write->hex);
    a->write->ident[0] = 0;
    int logged = key_exists(ctx, a->log); /* a library client keeps the changelog */
    int readers = key_exists(ctx, a->readers);
    if (!logged && !readers) /* no library client around: the common case */
        return key_exists(ctx, a->undo) ? delete_undo(ctx, a, err, errlen) : 0;
    uint64_t oldest = 0, version = 0;
    char base[48];
    if (aux_types_fit(ctx, a, err, errlen) != 0 || current_version(ctx, a, &version, err, errlen) != 0 ||
        current_ident(ctx, a, version, base, sizeof(base), err, errlen) != 0)
        return -1;
    if (logged && log_changes(ctx, a, version, indexes, n, base, err, errlen) != 0) return -1;
    if (!readers) return key_exists(ctx, a->undo) ? delete_undo(ctx, a, err, errlen) : 0;
    int live = live_readers(ctx, a, &oldest, err, errlen);
    if (live < 0) return -1;
    if (live == 0) return delete_undo(ctx, a, err, errlen);
    if (write_undo(ctx, a, key, indexes, n, version + 1, base, err, errlen) != 0) return -1;
    return trim_undo(ctx, a, oldest, err, errlen);
}

/* ---- the version -------------------------------------------------------- */

/* Whether Redis runs as a cluster node (it cannot change while it runs). */
static int in_cluster(RedisModuleCtx *ctx) {
    static int cluster = -1;
    if (cluster < 0) cluster = (RedisModule_GetContextFlags(ctx) & REDISMODULE_CTX_FLAGS_CLUSTER) != 0;
    return cluster;
}

/* Adds 1 in place to the decimal digits of the string at key, as INCR
 * would; the key holds no string yet: "1". Returns 0, or -1 when the value
 * is not a plain positive decimal (a sign, a leading zero, 19 digits or
 * more, another type): the caller leaves such rare cases to INCR itself. */
static int increment_in_place(RedisModuleKey *key) {
    int type = RedisModule_KeyType(key);
    if (type != REDISMODULE_KEYTYPE_EMPTY && type != REDISMODULE_KEYTYPE_STRING) return -1;
    size_t len;
    char *p = RedisModule_StringDMA(key, &len, REDISMODULE_READ | REDISMODULE_WRITE);
    if (!p || (len && (len >= 19 || p[0] < '1' || p[0] > '9'))) return -1;
    for (size_t i = 0; i < len; i++)
        if (p[i] < '0' || p[i] > '9') return -1;
    size_t i = len;
    while (i > 0 && p[i - 1] == '9') p[--i] = '0'; /* the carry */
    if (i > 0) {
        p[i - 1]++;
        return 0;
    }
    /* "", "9", "99"...: one digit more, "1" then the zeros */
    if (RedisModule_StringTruncate(key, len + 1) != REDISMODULE_OK) return -1;
    p = RedisModule_StringDMA(key, &len, REDISMODULE_READ | REDISMODULE_WRITE);
    if (!p) return -1;
    p[0] = '1';
    memset(p + 1, '0', len - 1);
    return 0;
}

/* INCR T:v. In place, without RedisModule_Call, which cost an insert
 * 3,800 instructions of its 46,000 (bench/PROFILE.md); the call stays for
 * what a plain counter never holds (see increment_in_place) and in a
 * cluster, where it refuses a version key in another slot than the
 * database (docs/FORMAT.md) that a direct write would create there. */
/* "<made>:<hex>" into out (room for 20 digits, ':' and the hex); its
 * length. By hand: snprintf cost each insert 1,000 instructions. */
static size_t format_ident(char *out, long long made, const char *hex) {
    char digits[24];
    size_t n = 0, len = 0;
    unsigned long long v = made < 0 ? 0 : (unsigned long long)made; /* a version is never negative */
    do digits[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n) out[len++] = digits[--n];
    out[len++] = ':';
    size_t h = strlen(hex);
    memcpy(out + len, hex, h + 1);
    return len + h;
}

/* Writes value over the string at key when it has the same length (the
 * identity's length changes only with the version's digits) and no time
 * to live (SET, which replicas run, would remove it): no new object, as
 * for the INCR in place. 0, or -1 when the key must be set. */
static int overwrite_in_place(RedisModuleKey *key, const char *value, size_t len) {
    if (RedisModule_KeyType(key) != REDISMODULE_KEYTYPE_STRING || RedisModule_ValueLength(key) != len ||
        RedisModule_GetExpire(key) != REDISMODULE_NO_EXPIRE)
        return -1;
    size_t have;
    char *p = RedisModule_StringDMA(key, &have, REDISMODULE_READ | REDISMODULE_WRITE);
    if (!p || have != len) return -1;
    memcpy(p, value, len);
    return 0;
}

/* SET T:id to the identity of the version just made, `made` (the new
 * value of T:v): in place outside a cluster, as for the INCR. */
static int set_ident(RedisModuleCtx *ctx, const aux_keys *a, long long made, char *err, size_t errlen) {
    size_t len = format_ident(a->write->ident, made, a->write->hex);
    RedisModuleKey *key = in_cluster(ctx) ? NULL : RedisModule_OpenKey(ctx, a->id, REDISMODULE_READ | REDISMODULE_WRITE);
    int rc = 0;
    if (key && overwrite_in_place(key, a->write->ident, len) == 0) {
        RedisModule_NotifyKeyspaceEvent(ctx, REDISMODULE_NOTIFY_STRING, "set", a->id);
        RedisModule_CloseKey(key);
        return 0;
    }
    RedisModuleString *val = RedisModule_CreateString(ctx, a->write->ident, len);
    if (key && RedisModule_StringSet(key, val) == REDISMODULE_OK) {
        RedisModule_NotifyKeyspaceEvent(ctx, REDISMODULE_NOTIFY_STRING, "set", a->id);
    } else {
        RedisModuleCallReply *r = RedisModule_Call(ctx, "SET", "ss", a->id, val);
        rc = call_ok(r) ? 0 : call_failed(r, "set the identity", a->id, err, errlen);
        free_reply(r);
    }
    if (key) RedisModule_CloseKey(key);
    RedisModule_FreeString(ctx, val);
    return rc;
}

/* The value of a decimal string key just incremented in place. */
static long long value_in_place(RedisModuleKey *key) {
    size_t len;
    char *p = RedisModule_StringDMA(key, &len, REDISMODULE_READ);
    char buf[24] = "";
    if (p && len < sizeof(buf)) memcpy(buf, p, len);
    return strtoll(buf, NULL, 10);
}

/* INCR T:v. In place, without RedisModule_Call, which cost an insert
 * 3,800 instructions of its 46,000 (bench/PROFILE.md); the call stays for
 * what a plain counter never holds (see increment_in_place) and in a
 * cluster, where it refuses a version key in another slot than the
 * database (docs/FORMAT.md) that a direct write would create there. Then
 * T:id names the new version (set_ident). */
int protocol_bump_version(RedisModuleCtx *ctx, const aux_keys *a, char *err, size_t errlen) {
    if (type_fits(ctx, a->id, REDISMODULE_KEYTYPE_STRING, "string", err, errlen) != 0) return -1;
    RedisModuleKey *key = in_cluster(ctx) ? NULL : RedisModule_OpenKey(ctx, a->version, REDISMODULE_READ | REDISMODULE_WRITE);
    int done = key && increment_in_place(key) == 0;
    long long made = done ? value_in_place(key) : 0;
    if (key) RedisModule_CloseKey(key);
    if (done) {
        RedisModule_NotifyKeyspaceEvent(ctx, REDISMODULE_NOTIFY_STRING, "incrby", a->version);
        return set_ident(ctx, a, made, err, errlen);
    }
    RedisModuleCallReply *r = RedisModule_Call(ctx, "INCR", "s", a->version);
    int rc = call_ok(r) ? 0 : call_failed(r, "increment the version", a->version, err, errlen);
    if (rc == 0) made = RedisModule_CallReplyInteger(r);
    free_reply(r);
    return rc == 0 ? set_ident(ctx, a, made, err, errlen) : rc;
}

void protocol_propagate_version(RedisModuleCtx *ctx, const aux_keys *a) {
    RedisModule_Replicate(ctx, "INCR", "s", a->version);
    if (a->write->ident[0]) RedisModule_Replicate(ctx, "SET", "sc", a->id, a->write->ident);
}
