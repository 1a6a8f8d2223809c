/* scripts.h - the Lua scripts of the `redis` VFS protocol.
 *
 * Each is run atomically by Redis (EVALSHA, EVAL when the server does not
 * know it); docs/FORMAT.md "The protocol of the redis VFS" says what each
 * does. Used by client/hash/store_*.c and client/net/conn.c. Owns which
 * keys each script takes (its *_KEYS list below), in which order, and by
 * which name its Lua knows each. */
#ifndef KVSQL_CLIENT_SCRIPTS_H
#define KVSQL_CLIENT_SCRIPTS_H

#include "format.h"

/* Begin's changelog answer: at most CHANGED_PAGES_MAX pages named (more:
 * the client drops its cache), the first INLINE_PAGES of them with their
 * value. */
#define CHANGED_PAGES_MAX 1000
#define INLINE_PAGES 8

/* ---- the keys of the scripts --------------------------------------------
 * Every key a script may be given: K (the pages) and its auxiliary keys
 * T:..., each with its format.h suffix (NULL: K itself). X(NAME, suffix):
 * NAME is the key's name both in C (SKEY_NAME, an index into the store's
 * key names) and in the Lua of every script that takes it (a local set
 * from KEYS), so no script body says KEYS[n]. */
#define SCRIPT_KEYS_ALL(X)                                                     \
    X(K, NULL)                                                                 \
    X(T_V, KVSQL_AUX_VERSION)                                                  \
    X(T_LEASE, KVSQL_AUX_LEASE)                                                \
    X(T_READERS, KVSQL_AUX_READERS)                                            \
    X(T_UNDO, KVSQL_AUX_UNDO)                                                  \
    X(T_UNDO_IDX, KVSQL_AUX_UNDO_IDX)                                          \
    X(T_UNDO_VER, KVSQL_AUX_UNDO_VER)                                          \
    X(T_LOG, KVSQL_AUX_LOG)                                                    \
    X(T_CHANGES, KVSQL_AUX_CHANGES)                                            \
    X(T_CHANGES_CFG, KVSQL_AUX_CHANGES_CONFIG)                                 \
    X(T_ID, KVSQL_AUX_ID)                                                      \
    X(T_STAGE, KVSQL_AUX_STAGE)                                                \
    X(T_STAGE_OLD, KVSQL_AUX_STAGE_OLD)                                        \
    X(T_QUEUE, KVSQL_AUX_QUEUE)

#define SKEY_ENUM_(name, suffix) SKEY_##name,
enum { SCRIPT_KEYS_ALL(SKEY_ENUM_) SKEY_COUNT };

/* The keys each script takes, in the order of its KEYS: the one list that
 * both fills KEYS (client/hash/store_*.c, through kvsql_script_keys) and
 * names them in the script's Lua (scripts.c). X(NAME) per key. A script
 * is given only the keys it touches, all in the database's cluster slot. */
#define BEGIN_KEYS(X) X(K) X(T_V) X(T_LEASE) X(T_READERS) X(T_LOG) X(T_CHANGES_CFG) X(T_ID) X(T_QUEUE)
/* The spread layout runs the read and lock scripts too, filling KEYS by
 * hand in these two orders (client/spread/store_spread.c): keep them. */
#define READ_KEYS(X) X(K) X(T_V) X(T_READERS) X(T_UNDO) X(T_UNDO_IDX) X(T_LEASE) X(T_ID) X(T_UNDO_VER)
#define LOCK_KEYS(X) X(T_V) X(T_LEASE) X(T_QUEUE) X(T_ID)
#define COMMIT_KEYS(X)                                                                                \
    X(K) X(T_V) X(T_LEASE) X(T_READERS) X(T_UNDO) X(T_UNDO_IDX) X(T_UNDO_VER) X(T_LOG) X(T_CHANGES) \
        X(T_CHANGES_CFG) X(T_ID)
#define END_KEYS(X) X(T_LEASE) X(T_READERS) X(T_UNDO) X(T_UNDO_IDX) X(T_UNDO_VER)
#define STAGE_PUT_KEYS(X) X(K) X(T_V) X(T_LEASE) X(T_UNDO) X(T_UNDO_IDX) X(T_UNDO_VER) X(T_ID) X(T_STAGE)
#define STAGE_COPY_KEYS(X) X(K) X(T_LEASE) X(T_STAGE)
#define STAGE_PUBLISH_KEYS(X)                                                                          \
    X(K) X(T_V) X(T_LEASE) X(T_READERS) X(T_UNDO) X(T_UNDO_IDX) X(T_UNDO_VER) X(T_LOG) X(T_CHANGES_CFG) \
        X(T_ID) X(T_STAGE) X(T_STAGE_OLD)
#define BEGIN_WARM_KEYS BEGIN_KEYS /* begin's (T:queue unused: no write intent) */

/* The most keys a script takes (COMMIT_KEYS, STAGE_PUBLISH_KEYS). */
#define SCRIPT_KEYS_MAX 12

enum {
    SCRIPT_BEGIN,  /* ARGV: token lease_ms previous-member cached-"id/HLEN"-or-""
                            log_ttl_ms write-intent-"1"-or-"" */
    SCRIPT_READ,   /* ARGV: token snapshot lease_ms page-index... */
    SCRIPT_LOCK,   /* ARGV: token snapshot lease_ms dead-token-or-"" retrying-"1"-or-"" */
    SCRIPT_COMMIT, /* ARGV: token snapshot lease_ms npages
                      lock-byte-gap-field-or-"" new-id E-or-"" [E strings of row changes]
                      [index page]... */
    SCRIPT_END,    /* ARGV: token member-or-"" */
    /* Every script's reply may also be {'aux', key, type, wanted type},
     * {'version', T:v} (not a version number) or, with capture on,
     * {'cfg', field, value} / {'changes', type-or-"exhausted"}: refused
     * before anything was written; the staged steps {'gone'}. */
    /* A big commit, staged (client/hash/store_stage.c): */
    SCRIPT_STAGE_PUT,     /* ARGV: token snapshot lease_ms first-"1"-or-"0" old-npages stage_ttl_ms
                             have [index page]... */
    SCRIPT_STAGE_COPY,    /* ARGV: token lease_ms from to stage_ttl_ms have */
    SCRIPT_STAGE_PUBLISH, /* ARGV: token snapshot lease_ms npages new-id have */
    SCRIPT_BEGIN_WARM,    /* ARGV: token lease_ms cached-"id/HLEN" (store_redis.c, "warm begins") */
    SCRIPT_COUNT
};

/* Script id's keys: n of them, KEYS[i + 1] being the key SKEY_x = which[i]. */
typedef struct {
    const unsigned char *which;
    int n;
} kvsql_script_keys_t;
extern const kvsql_script_keys_t kvsql_script_keys[SCRIPT_COUNT];

extern const char *const kvsql_scripts[SCRIPT_COUNT];

#endif
