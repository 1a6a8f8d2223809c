/* acl.h - the caller's ACL key permissions for the keys kvsql writes on
 * its behalf besides the key it names (docs/SECURITY.md, "ACL").
 *
 * Redis checks a command's declared key (SQL.EXEC's and SQL.QUERY's first
 * argument) against the user's key patterns; the auxiliary keys a write
 * changes (T:v, T:readers, T:undo, T:undo:idx, T:undo:ver, T:log,
 * T:changes, and for a big offloaded write T:wstage and T:stage:old) are
 * derived from it, so Redis cannot see them. exec.c, offload.c,
 * changes.c and drop.c (SQL.DROP: every auxiliary key) check them here, on the main thread, before the call's first
 * write: a write refused for one of the first seven fails with NOPERM and
 * nothing written; a write whose user may not write the two staging keys
 * is not staged (it lands in one step, stage.h). */
#ifndef KVSQL_ACL_H
#define KVSQL_ACL_H

#include "module/redis_api.h"

/* Whether the calling user (ctx's client) may write (update, insert and
 * delete) every one of names[0..n-1]. 0, or -1 with a NOPERM error reply
 * text naming the first key refused in err. A context with no user (AOF
 * loading, the module's own) may write everything. */
int acl_may_write(RedisModuleCtx *ctx, RedisModuleString **names, size_t n, char *err, size_t errlen);

/* The same for every auxiliary key any writing call of keyname may write
 * (all but the staging keys). A check that passed is remembered for the
 * user and keyname until acl_note_command sees a command that may change
 * the rules. */
int acl_may_write_aux(RedisModuleCtx *ctx, RedisModuleString *keyname, char *err, size_t errlen);
/* Every command's name (len bytes), before Redis decides whether it runs
 * (module.c's command filter): ACL, and EXEC (which may run a queued ACL),
 * forget the checks acl_may_write_aux remembers. */
void acl_note_command(const char *name, size_t len);

/* Whether the calling user may write keyname's two staging keys. */
int acl_may_stage(RedisModuleCtx *ctx, RedisModuleString *keyname);

#endif
