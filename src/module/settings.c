/* settings.c - the module's configs (settings.h): one table, one row a
 * config. A change through CONFIG SET stores the value, then calls the
 * row's on_change so that what applies it learns of it: connections take
 * their settings at the start of their next call (cache.c), the worker
 * pool grows or shrinks (worker.c), the connection cache evicts down to
 * a new maximum. */
#include "module/settings.h"

#include "module/connections/cache.h"
#include "module/offload/worker.h"

#include <stddef.h>
#include <string.h>

long long budget_timeout_ms;
long long budget_call_memory_kb;
long long cache_page_cache_kb;
long long cache_page_cache_total_mb;
long long cache_max_sql_kb;
long long exec_offload_after_us;
long long leasewait_ms;
long long worker_threads;
long long settings_max_connections;
long long changes_max_rows;

typedef struct setting {
    const char *name; /* after "kvsql." */
    long long *var;
    long long def, min, max;
    void (*on_change)(void); /* told after each change */
} setting;

static const setting table[] = {
    {"max-connections", &settings_max_connections, 10000, 1, 1000000, cache_max_changed},
    {"page-cache-kb", &cache_page_cache_kb, 8192, 16, 16777216, cache_settings_changed},
    {"page-cache-total-mb", &cache_page_cache_total_mb, 256, 0, 16777216, cache_settings_changed},
    {"query-timeout-ms", &budget_timeout_ms, 10000, 0, 86400000, cache_settings_changed},
    {"call-memory-kb", &budget_call_memory_kb, 131072, 0, 1LL << 32, cache_settings_changed},
    {"max-sql-kb", &cache_max_sql_kb, 1024, 1, 1000000, cache_settings_changed},
    {"worker-threads", &worker_threads, 2, 0, 64, workers_config_changed},
    {"offload-after-us", &exec_offload_after_us, 1000, 0, 1000000000, cache_settings_changed},
    {"lease-wait-ms", &leasewait_ms, 5000, 0, 86400000, cache_settings_changed},
    {"capture-max-rows", &changes_max_rows, 15000, 0, 1000000000, cache_settings_changed},
};

static long long get_numeric(const char *name, void *priv) {
    (void)name;
    return *((const setting *)priv)->var;
}

static int set_numeric(const char *name, long long val, void *priv, RedisModuleString **err) {
    (void)name;
    (void)err;
    const setting *s = priv;
    *s->var = val;
    if (s->on_change) s->on_change();
    return REDISMODULE_OK;
}

int settings_register(RedisModuleCtx *ctx) {
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        const setting *s = &table[i];
        *s->var = s->def;
        if (RedisModule_RegisterNumericConfig(ctx, s->name, s->def, REDISMODULE_CONFIG_DEFAULT, s->min, s->max,
                                              get_numeric, set_numeric, NULL, (void *)s) != REDISMODULE_OK)
            return REDISMODULE_ERR;
    }
    return RedisModule_LoadConfigs(ctx);
}
