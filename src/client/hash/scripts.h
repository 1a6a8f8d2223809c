/* scripts.h - the Lua scripts of the `redis` VFS protocol.
 *
 * Each is run atomically by Redis (EVALSHA, EVAL when the server does not
 * know it); docs/FORMAT.md "The protocol of the redis VFS" says what each
 * does. Used by client/hash/store_redis.c and client/net/conn.c. Every script
 * declares all the keys it touches in KEYS, all in the database's cluster
 * slot. */
#ifndef KVSQL_CLIENT_SCRIPTS_H
#define KVSQL_CLIENT_SCRIPTS_H

/* Begin's changelog answer: at most CHANGED_PAGES_MAX pages named (more:
 * the client drops its cache), the first INLINE_PAGES of them with their
 * value. */
#define CHANGED_PAGES_MAX 1000
#define INLINE_PAGES 8

enum {
    SCRIPT_BEGIN,  /* KEYS: K T:v T:readers T:log T:changes:cfg T:lease T:queue T:id
                      ARGV: token lease_ms previous-member cached-"id/HLEN"-or-""
                            log_ttl_ms write-intent-"1"-or-"" */
    SCRIPT_READ,   /* KEYS: K T:v T:readers T:undo T:undo:idx T:lease T:id T:undo:ver
                      ARGV: token snapshot lease_ms page-index... */
    SCRIPT_LOCK,   /* KEYS: T:v T:lease T:queue T:id
                      ARGV: token snapshot lease_ms dead-token-or-"" retrying-"1"-or-"" */
    SCRIPT_COMMIT, /* KEYS: K T:v T:lease T:readers T:undo T:undo:idx T:undo:ver T:log
                            T:changes T:changes:cfg T:id
                      ARGV: token snapshot lease_ms npages
                      lock-byte-gap-field-or-"" new-id E-or-"" [E strings of row changes]
                      [index page]... */
    SCRIPT_END,    /* KEYS: T:lease T:readers T:undo T:undo:idx T:undo:ver
                      ARGV: token member-or-"" */
    /* Every script's reply may also be {'aux', key, type, wanted type},
     * {'version', T:v} (not a version number) or, with capture on,
     * {'cfg', field, value} / {'changes', type-or-"exhausted"}: refused
     * before anything was written; the staged steps {'gone'}. */
    /* A big commit, staged (client/hash/store_stage.c): */
    SCRIPT_STAGE_PUT,     /* KEYS: T:stage T:lease T:v K T:undo T:undo:idx T:undo:ver T:id
                             ARGV: token snapshot lease_ms first-"1"-or-"0" old-npages stage_ttl_ms
                             have [index page]... */
    SCRIPT_STAGE_COPY,    /* KEYS: T:stage K T:lease    ARGV: token lease_ms from to stage_ttl_ms have */
    SCRIPT_STAGE_PUBLISH, /* KEYS: K T:stage T:stage:old T:v T:lease T:readers T:undo T:undo:idx
                                   T:undo:ver T:log T:changes:cfg T:id
                             ARGV: token snapshot lease_ms npages new-id have */
    SCRIPT_BEGIN_WARM, /* KEYS: as SCRIPT_BEGIN's (T:lease unused)
                          ARGV: token lease_ms cached-"id/HLEN" (store_redis.c, "warm begins") */
    SCRIPT_COUNT
};

extern const char *const kvsql_scripts[SCRIPT_COUNT];

#endif
