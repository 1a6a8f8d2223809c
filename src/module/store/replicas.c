/* replicas.c - what the replicas' output buffers allow (replicas.h), read
 * through RedisModule_Call: INFO replication, CONFIG GET
 * client-output-buffer-limit, CLIENT LIST TYPE replica. */
#include "module/store/replicas.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The number after the next `name` in text[*from..len), or -1; *from
 * moves past it. `name` carries its own delimiter ("\nconnected_slaves:",
 * " omem="), so that it matches a whole field. */
static long long number_after(const char *text, size_t len, const char *name, size_t *from) {
    size_t n = strlen(name);
    for (size_t i = *from; i + n < len; i++) {
        if (strncmp(text + i, name, n) != 0) continue;
        *from = i + n;
        return strtoll(text + i + n, NULL, 10);
    }
    *from = len;
    return -1;
}

static const char *reply_text(RedisModuleCallReply *r, size_t *len) {
    *len = 0;
    return r ? RedisModule_CallReplyStringPtr(r, len) : NULL;
}

long long replicas_count(RedisModuleCtx *ctx) {
    RedisModuleCallReply *r = RedisModule_Call(ctx, "INFO", "c", "replication");
    size_t len, from = 0;
    const char *text = reply_text(r, &len);
    long long n = text ? number_after(text, len, "\nconnected_slaves:", &from) : -1;
    if (r) RedisModule_FreeCallReply(r);
    return n > 0 ? n : 0;
}

/* The value reads "normal 0 0 0 slave 268435456 67108864 60 pubsub ...". */
void replicas_buffer_limits(RedisModuleCtx *ctx, long long *hard, long long *soft) {
    *hard = *soft = 0;
    RedisModuleCallReply *r = RedisModule_Call(ctx, "CONFIG", "cc", "GET", "client-output-buffer-limit");
    if (r && RedisModule_CallReplyType(r) == REDISMODULE_REPLY_ARRAY && RedisModule_CallReplyLength(r) >= 2) {
        size_t len;
        const char *v = RedisModule_CallReplyStringPtr(RedisModule_CallReplyArrayElement(r, 1), &len);
        char buf[512];
        snprintf(buf, sizeof(buf), "%.*s", v ? (int)(len < sizeof(buf) ? len : sizeof(buf) - 1) : 0, v ? v : "");
        const char *p = strstr(buf, "slave ");
        if (!p) p = strstr(buf, "replica ");
        if (p) {
            char *end;
            *hard = strtoll(strchr(p, ' ') + 1, &end, 10);
            *soft = strtoll(end, NULL, 10);
        }
    }
    if (r) RedisModule_FreeCallReply(r);
}

long long replicas_fullest_buffer(RedisModuleCtx *ctx) {
    RedisModuleCallReply *r = RedisModule_Call(ctx, "CLIENT", "ccc", "LIST", "TYPE", "replica");
    size_t len, from = 0;
    const char *text = reply_text(r, &len);
    long long fullest = -1, omem;
    while (text && (omem = number_after(text, len, " omem=", &from)) >= 0)
        if (omem > fullest) fullest = omem;
    if (r) RedisModule_FreeCallReply(r);
    return fullest;
}
