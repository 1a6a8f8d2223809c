/* drop.c - SQL.DROP key [FORCE]: removes the database at key and every
 * auxiliary key of src/format.h's list, in one atomic step (drop.h).
 *
 * Everything is checked before the first deletion: the caller's ACL key
 * patterns cover every auxiliary key (acl.h); the key holds a hash
 * or nothing, and not a spread database's page map (its run keys are in
 * other slots: `kvsql rm` removes those); no library writer holds the lease (T:lease) and no big
 * write of the module is being staged (T:wstage), unless FORCE; in a
 * cluster, every key is in the database's slot. Then each key is deleted
 * with DEL through RedisModule_Call, whose keyspace events drop the
 * module's cached connection and worker snapshots of the key (module.c),
 * and one DEL naming exactly the keys that existed is propagated to the
 * replicas and the AOF. The reply is how many keys were removed (0: there
 * was no database). */
#include "module/commands/drop.h"

#include "format.h"
#include "module/commands/acl.h"
#include "module/store/protocol.h"

#include <string.h>
#include <strings.h>

/* The first check that fails, as an error reply text; NULL when all pass.
 * names[0] is the database's key, names[1 + i] that of kvsql_aux_all[i]. */
static const char *refusal(RedisModuleCtx *ctx, RedisModuleString **names, int force) {
    size_t len;
    const char *k = RedisModule_StringPtrLen(names[0], &len);
    if ((RedisModule_GetContextFlags(ctx) & REDISMODULE_CTX_FLAGS_CLUSTER) && !kvsql_has_hash_tag(k, len) &&
        memchr(k, '}', len))
        return "ERR kvsql: in a cluster the auxiliary keys of a key without a hash tag that contains '}' are in "
               "another slot (docs/FORMAT.md): SQL.DROP cannot remove them in one step";
    RedisModuleKey *key = RedisModule_OpenKey(ctx, names[0], REDISMODULE_READ | REDISMODULE_OPEN_KEY_NOTOUCH);
    int type = key ? RedisModule_KeyType(key) : REDISMODULE_KEYTYPE_EMPTY, spread = 0;
    if (type == REDISMODULE_KEYTYPE_HASH) {
        RedisModuleString *layout = NULL;
        RedisModule_HashGet(key, REDISMODULE_HASH_CFIELDS, KVSQL_SPREAD_LAYOUT_FIELD, &layout, NULL);
        size_t n = 0;
        const char *v = layout ? RedisModule_StringPtrLen(layout, &n) : "";
        spread = n == strlen(KVSQL_SPREAD_LAYOUT) && memcmp(v, KVSQL_SPREAD_LAYOUT, n) == 0;
        if (layout) RedisModule_FreeString(ctx, layout);
    }
    if (key) RedisModule_CloseKey(key);
    if (type != REDISMODULE_KEYTYPE_EMPTY && type != REDISMODULE_KEYTYPE_HASH)
        return "WRONGTYPE kvsql: the key holds another type than a hash, not a database";
    if (spread)
        return "ERR kvsql: the key holds a database of layout spread, whose pages are in keys of other slots: "
               "remove it with kvsql rm (docs/FORMAT.md, \"The spread layout\")";
    if (force) return NULL;
    for (int i = 0; i < KVSQL_AUX_COUNT; i++) {
        if (strcmp(kvsql_aux_all[i], KVSQL_AUX_LEASE) == 0 && RedisModule_KeyExists(ctx, names[1 + i]))
            return "ERR kvsql: a library writer holds the database's lease (is writing it): SQL.DROP key FORCE "
                   "removes it anyway";
        if (strcmp(kvsql_aux_all[i], KVSQL_AUX_WSTAGE) == 0 && RedisModule_KeyExists(ctx, names[1 + i]))
            return "ERR kvsql: a big write of the module is being staged: SQL.DROP key FORCE removes it anyway";
    }
    return NULL;
}

/* Deletes each of the n keys; gone[] gets those that existed. */
static int delete_keys(RedisModuleCtx *ctx, RedisModuleString **names, int n, RedisModuleString **gone) {
    int ngone = 0;
    for (int i = 0; i < n; i++) {
        RedisModuleCallReply *r = RedisModule_Call(ctx, "DEL", "s", names[i]);
        if (r && RedisModule_CallReplyType(r) == REDISMODULE_REPLY_INTEGER && RedisModule_CallReplyInteger(r) > 0)
            gone[ngone++] = names[i];
        if (r) RedisModule_FreeCallReply(r);
    }
    return ngone;
}

int cmd_sql_drop(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (argc < 2 || argc > 3) return RedisModule_WrongArity(ctx);
    size_t alen = 0;
    const char *opt = argc == 3 ? RedisModule_StringPtrLen(argv[2], &alen) : NULL;
    int force = opt && alen == 5 && strncasecmp(opt, "FORCE", 5) == 0;
    if (opt && !force) return RedisModule_ReplyWithError(ctx, "ERR syntax: SQL.DROP key [FORCE]");
    RedisModuleString *names[1 + KVSQL_AUX_COUNT], *gone[1 + KVSQL_AUX_COUNT];
    names[0] = argv[1];
    for (int i = 0; i < KVSQL_AUX_COUNT; i++) names[1 + i] = aux_key_name(ctx, argv[1], kvsql_aux_all[i]);
    char acl_err[512]; /* the user's key patterns must cover every key it deletes (acl.h) */
    const char *why = acl_may_write(ctx, names + 1, KVSQL_AUX_COUNT, acl_err, sizeof(acl_err)) != 0
                          ? acl_err
                          : refusal(ctx, names, force);
    int ngone = 0;
    if (!why) ngone = delete_keys(ctx, names, 1 + KVSQL_AUX_COUNT, gone);
    if (ngone > 0) RedisModule_Replicate(ctx, "DEL", "v", gone, (size_t)ngone);
    for (int i = 0; i < KVSQL_AUX_COUNT; i++) RedisModule_FreeString(ctx, names[1 + i]);
    return why ? RedisModule_ReplyWithError(ctx, why) : RedisModule_ReplyWithLongLong(ctx, ngone);
}
