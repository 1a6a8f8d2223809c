/* redis_api.c - resolves the Redis Modules API entries of redis_api.h.
 * Called once, from RedisModule_OnLoad in module.c. */
#include "module/redis_api.h"

#define REDIS_API_DEFINE(ret, name, params) ret(*RedisModule_##name) params;
REDIS_API_ENTRIES(REDIS_API_DEFINE)
REDIS_API_PROTOCOL_ENTRIES(REDIS_API_DEFINE)
REDIS_API_OPTIONAL_ENTRIES(REDIS_API_DEFINE)
REDIS_API_REPLY_ENTRIES(REDIS_API_DEFINE)
REDIS_API_CHANGES_ENTRIES(REDIS_API_DEFINE)
REDIS_API_WORKER_ENTRIES(REDIS_API_DEFINE)
REDIS_API_PAUSE_ENTRIES(REDIS_API_DEFINE)
#undef REDIS_API_DEFINE

int redis_api_init(RedisModuleCtx *ctx, const char *name, int ver, const char **missing) {
    /* The first word of the context is the GetApi function: this is the
     * documented contract between redis-server and its modules. */
    int (*get_api)(const char *, void *) = (int (*)(const char *, void *))((void **)ctx)[0];
#define REDIS_API_RESOLVE(ret, fn, params)                                   \
    if (get_api("RedisModule_" #fn, (void *)&RedisModule_##fn) != REDISMODULE_OK) { \
        *missing = "RedisModule_" #fn;                                       \
        return REDISMODULE_ERR;                                              \
    }
    REDIS_API_ENTRIES(REDIS_API_RESOLVE)
    REDIS_API_PROTOCOL_ENTRIES(REDIS_API_RESOLVE)
    REDIS_API_REPLY_ENTRIES(REDIS_API_RESOLVE)
    REDIS_API_CHANGES_ENTRIES(REDIS_API_RESOLVE)
    REDIS_API_WORKER_ENTRIES(REDIS_API_RESOLVE)
    REDIS_API_PAUSE_ENTRIES(REDIS_API_RESOLVE)
#undef REDIS_API_RESOLVE
#define REDIS_API_TRY(ret, fn, params)                                            \
    if (get_api("RedisModule_" #fn, (void *)&RedisModule_##fn) != REDISMODULE_OK) \
        RedisModule_##fn = NULL;
    REDIS_API_OPTIONAL_ENTRIES(REDIS_API_TRY)
#undef REDIS_API_TRY
    if (RedisModule_IsModuleNameBusy(name)) {
        *missing = "a free module name (kvsql is loaded already)";
        return REDISMODULE_ERR;
    }
    RedisModule_SetModuleAttribs(ctx, name, ver, REDISMODULE_APIVER_1);
    return REDISMODULE_OK;
}
