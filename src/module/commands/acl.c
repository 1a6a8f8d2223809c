/* acl.c - ACL key checks of the auxiliary keys a call writes; see acl.h.
 * Uses RedisModule_ACLCheckKeyPermissions (Redis 7.0) with the calling
 * client's user, looked up by name. The check of a writing call's seven
 * auxiliary keys that passed is remembered by user name and key until an
 * ACL command may have changed any user's rules. */
#include "module/commands/acl.h"

#include "format.h"
#include "module/store/protocol.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

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

/* ---- checks that passed, remembered ----
 * What a user may write changes only through the ACL command (SETUSER,
 * DELUSER, LOAD, ...), which module.c's command filter reports to
 * acl_note_command before it runs, and at EXEC when it was queued in MULTI.
 * Each report moves the generation, which forgets every check remembered.
 * A check is remembered under the user's name and the key's, never under
 * a client (scripts and RedisModule_Call share clients between users). */
#define PASSED_SLOTS 64
#define PASSED_NAME_MAX 96

typedef struct passed_check {
    unsigned long long generation; /* 0: empty */
    size_t user_len, key_len;
    char user[PASSED_NAME_MAX], key[PASSED_NAME_MAX];
} passed_check;

static passed_check passed[PASSED_SLOTS];
static unsigned long long generation = 1;

void acl_note_command(const char *name, size_t len) {
    if ((len == 3 && strncasecmp(name, "acl", 3) == 0) || (len == 4 && strncasecmp(name, "exec", 4) == 0)) generation++;
}

static unsigned slot_of(const char *user, size_t ulen, const char *key, size_t klen) {
    unsigned h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < ulen; i++) h = (h ^ (unsigned char)user[i]) * 16777619u;
    for (size_t i = 0; i < klen; i++) h = (h ^ (unsigned char)key[i]) * 16777619u;
    return h % PASSED_SLOTS;
}

static int same_check(const passed_check *p, const char *user, size_t ulen, const char *key, size_t klen) {
    return p->generation == generation && p->user_len == ulen && p->key_len == klen &&
           memcmp(p->user, user, ulen) == 0 && memcmp(p->key, key, klen) == 0;
}

int acl_may_write_aux(RedisModuleCtx *ctx, RedisModuleString *keyname, char *err, size_t errlen) {
    RedisModuleString *uname = RedisModule_GetCurrentUserName(ctx);
    if (!uname) return 0; /* no client or no user: Redis itself */
    size_t ulen, klen;
    const char *user = RedisModule_StringPtrLen(uname, &ulen), *key = RedisModule_StringPtrLen(keyname, &klen);
    int fits = ulen <= PASSED_NAME_MAX && klen <= PASSED_NAME_MAX;
    passed_check *p = fits ? &passed[slot_of(user, ulen, key, klen)] : NULL;
    int rc = 0;
    if (!p || !same_check(p, user, ulen, key, klen)) {
        rc = may_write_named(ctx, keyname, written_aux, sizeof(written_aux) / sizeof(written_aux[0]), err, errlen);
        if (rc == 0 && p) {
            p->generation = generation;
            p->user_len = ulen;
            p->key_len = klen;
            memcpy(p->user, user, ulen);
            memcpy(p->key, key, klen);
        }
    }
    RedisModule_FreeString(ctx, uname);
    return rc;
}

int acl_may_stage(RedisModuleCtx *ctx, RedisModuleString *keyname) {
    char err[512];
    return may_write_named(ctx, keyname, stage_aux, sizeof(stage_aux) / sizeof(stage_aux[0]), err, sizeof(err)) == 0;
}
