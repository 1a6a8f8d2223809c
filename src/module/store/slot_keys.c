/* slot_keys.c - a write's keys on a cluster node; see slot_keys.h.
 *
 * The module API of Redis 7.0 does not say whether a slot is migrating or
 * importing, but RedisModule_Call applies the cluster's rule for
 * multi-key commands (cluster.c, getNodeByQuery): while the slot is open
 * (MIGRATING here, or IMPORTING with the caller's ASKING) and some of the
 * named keys are missing, the call is refused (ASK or TRYAGAIN, both
 * errno EPERM). One EXISTS naming the database and all its auxiliary keys
 * asks exactly that. Keys of two slots are refused the same way, so the
 * slot of the auxiliary keys is checked first, from their names. */
#include "module/store/slot_keys.h"

#include "format.h"
#include "module/store/protocol.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *const suffixes[] = {KVSQL_AUX_ALL};
#define NKEYS (1 + sizeof(suffixes) / sizeof(suffixes[0]))

static int in_cluster(RedisModuleCtx *ctx) {
    return (RedisModule_GetContextFlags(ctx) & REDISMODULE_CTX_FLAGS_CLUSTER) != 0;
}

/* Whether the auxiliary keys hash like the database key: the same hashed
 * part (format.h), so the same slot. Not so for a key without a hash tag
 * that contains '}': "a}b" hashes whole, "{a}b}:v" hashes "a". */
static int aux_in_same_slot(RedisModuleString *keyname, RedisModuleString *aux) {
    size_t klen, alen, kp, ap;
    const char *k = RedisModule_StringPtrLen(keyname, &klen);
    const char *a = RedisModule_StringPtrLen(aux, &alen);
    const char *kh = kvsql_hashed_part(k, klen, &kp);
    const char *ah = kvsql_hashed_part(a, alen, &ap);
    return kp == ap && memcmp(kh, ah, kp) == 0;
}

int slot_keys_writable(RedisModuleCtx *ctx, RedisModuleString *keyname, char *err, size_t errlen) {
    if (!in_cluster(ctx)) return 0;
    RedisModuleString *keys[NKEYS];
    keys[0] = keyname;
    for (size_t i = 1; i < NKEYS; i++) keys[i] = aux_key_name(ctx, keyname, suffixes[i - 1]);
    size_t len;
    const char *k = RedisModule_StringPtrLen(keyname, &len);
    int rc = 0;
    if (!aux_in_same_slot(keyname, keys[1])) {
        snprintf(err, errlen,
                 "ERR kvsql: the auxiliary keys of '%.*s' are in another cluster slot than the database: a key "
                 "without a hash tag must not contain '}' (docs/FORMAT.md). Nothing was written",
                 (int)(len > 200 ? 200 : len), k);
        rc = -1;
    } else {
        errno = 0;
        RedisModuleCallReply *r = RedisModule_Call(ctx, "EXISTS", "v", keys, NKEYS);
        if (!r && errno == EPERM) {
            snprintf(err, errlen,
                     "TRYAGAIN kvsql: the cluster slot of '%.*s' is being migrated and not every key of the "
                     "database is on this node: a write now could split it. Nothing was written; retry when the "
                     "migration ends",
                     (int)(len > 200 ? 200 : len), k);
            rc = -1;
        } else if (!r || RedisModule_CallReplyType(r) == REDISMODULE_REPLY_ERROR) {
            snprintf(err, errlen, "ERR kvsql: cannot check the keys of '%.*s' on this cluster node: %s",
                     (int)(len > 200 ? 200 : len), k, errno ? strerror(errno) : "an error");
            rc = -1;
        }
        if (r) RedisModule_FreeCallReply(r);
    }
    for (size_t i = 1; i < NKEYS; i++) RedisModule_FreeString(ctx, keys[i]);
    return rc;
}
