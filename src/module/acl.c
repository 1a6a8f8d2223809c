/* acl.c - ACL key checks of the auxiliary keys a call writes; see acl.h.
 * Uses RedisModule_ACLCheckKeyPermissions (Redis 7.0) with the calling
 * client's user, looked up by name for each call. */
#include "acl.h"

#include "format.h"
#include "protocol.h"

#include <stdio.h>

/* Every auxiliary key a writing call may write (docs/FORMAT.md)... */
static const char *const written_aux[] = {
    KVSQL_AUX_VERSION, KVSQL_AUX_READERS, KVSQL_AUX_UNDO, KVSQL_AUX_UNDO_IDX, KVSQL_AUX_UNDO_VER,
    KVSQL_AUX_LOG,     KVSQL_AUX_CHANGES,
};
/* ...and those a staged write adds (stage.h). */
static const char *const stage_aux[] = {KVSQL_AUX_WSTAGE, KVSQL_AUX_STAGE_OLD};

static void refused(RedisModuleString *name, char *err, size_t errlen) {
    size_t len;
    const char *k = RedisModule_StringPtrLen(name, &len);
    snprintf(err, errlen,
             "NOPERM this user has no permissions to write the key '%.*s', which kvsql writes with this database "
             "(docs/SECURITY.md, ACL): nothing was written",
             (int)(len > 200 ? 200 : len), k);
}

int acl_may_write(RedisModuleCtx *ctx, RedisModuleString **names, size_t n, char *err, size_t errlen) {
    RedisModuleString *uname = RedisModule_GetCurrentUserName(ctx);
    if (!uname) return 0; /* no client or no user: Redis itself */
    RedisModuleUser *user = RedisModule_GetModuleUserFromUserName(uname);
    RedisModule_FreeString(ctx, uname);
    if (!user) {
        snprintf(err, errlen, "NOPERM kvsql: the user of this connection no longer exists: nothing was written");
        return -1;
    }
    const int flags = (int)(REDISMODULE_CMD_KEY_UPDATE | REDISMODULE_CMD_KEY_INSERT | REDISMODULE_CMD_KEY_DELETE);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        if (RedisModule_ACLCheckKeyPermissions(user, names[i], flags) != REDISMODULE_OK) {
            refused(names[i], err, errlen);
            rc = -1;
        }
    RedisModule_FreeModuleUser(user);
    return rc;
}

/* acl_may_write for the n auxiliary keys of keyname named by suffixes. */
static int may_write_named(RedisModuleCtx *ctx, RedisModuleString *keyname, const char *const *suffixes, size_t n,
                           char *err, size_t errlen) {
    RedisModuleString *names[8];
    for (size_t i = 0; i < n; i++) names[i] = aux_key_name(ctx, keyname, suffixes[i]);
    int rc = acl_may_write(ctx, names, n, err, errlen);
    for (size_t i = 0; i < n; i++) RedisModule_FreeString(ctx, names[i]);
    return rc;
}

int acl_may_write_aux(RedisModuleCtx *ctx, RedisModuleString *keyname, char *err, size_t errlen) {
    return may_write_named(ctx, keyname, written_aux, sizeof(written_aux) / sizeof(written_aux[0]), err, errlen);
}

int acl_may_stage(RedisModuleCtx *ctx, RedisModuleString *keyname) {
    char err[512];
    return may_write_named(ctx, keyname, stage_aux, sizeof(stage_aux) / sizeof(stage_aux[0]), err, sizeof(err)) == 0;
}
