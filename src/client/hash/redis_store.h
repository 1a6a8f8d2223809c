/* redis_store.h - the inside of a `redis` VFS store (store_redis.h), shared
 * by the files that implement it: store_redis.c (begin, lock, commit,
 * unlock, making a store), store_read.c (reads, the page cache, read-ahead),
 * store_stage.c (big commits, staged), store_plain.c (begins without
 * scripts) and store_replies.c (errors and replies, which the others
 * share). Each calls only the files listed after it, and store_redis.c
 * the others. Nothing else includes it. */
#ifndef KVSQL_CLIENT_REDIS_STORE_H
#define KVSQL_CLIENT_REDIS_STORE_H

#include "client/net/conn.h"
#include "client/capture.h"
#include "client/cache/pagecache.h"
#include "client/cache/readahead.h"
#include "client/hash/scripts.h"
#include "client/hash/store_redis.h"

#include <hiredis/hiredis.h>

/* Pages one read brings at most (1 MiB of 4 KiB pages): store_read.c's
 * "read-ahead". */
#define AHEAD_MAX 256

typedef struct redis_store {
    kvsql_store base;
    kvsql_redis_config cfg;
    char lease[16];            /* cfg.lease_ms in decimal, for the scripts */
    char *key;
    char *keys[SKEY_COUNT];    /* every key a script takes: K (a copy of key),
                                * T:v, T:lease, ... (client/hash/scripts.h) */
    kvsql_conn conn;           /* to the node that serves key (client/net/conn.c) */
    kvsql_txn *active;         /* the transaction at READ or WRITE */
    char snapshot[48];         /* the snapshot's identity: T:id "<v>:<hex>", or
                                * the decimal version alone when T:id did not
                                * name it (docs/FORMAT.md, "Identity") */
    char member[96];           /* our reader registration, "" when none; kept
                                * after a read-only transaction, for the next
                                * begin to replace (or redis_destroy to end) */
    int holds_lease;
    kvsql_capture *capture;    /* the connection's row change capture
                                * (client/hooks.c), NULL when none; ours */
    int capture_on;            /* begin found T:changes:cfg */
    int committed;             /* a commit landed since the lock */
    int intent;                /* write-intent hint (client/hooks.c): the next
                                * begin also tries to take the lease */
    /* Pages as of version cache_version, read ahead or kept from begin
     * and from our own commits. A begin that finds another version keeps
     * them but for the pages T:log says changed since (all of them when
     * the log does not reach back), and at every reconnection. */
    pagecache cache;           /* bounded by cfg.cache_kb (client/cache/pagecache.h) */
    uint64_t cache_version;
    char cache_ident[48];      /* the identity at cache_version: the cache is
                                * trusted across begins only when it has an id */
    uint32_t cache_hlen;       /* HLEN of the hash at cache_version */
    uint32_t restarts;         /* begins that trusted nothing cached: with
                                * conn.connections, kvsql_txn.generation, so
                                * SQLite's own cache is dropped too when the
                                * identity, not only the version, changed */
    int gap;                   /* the hash at cache_version lacks its lock-byte
                                * field (an older module's; format.h) */
    uint32_t log_connection;   /* the connection that last renewed T:log */
    double log_renewed_ms;     /* when (monotonic clock) */
    readahead ra;              /* what a miss reads ahead (client/cache/readahead.c) */
    uint32_t pre[AHEAD_MAX];   /* a scan's next read, sent before SQLite asked */
    uint32_t npre;             /* its pages; 0 when none is on the way */
    sqlite3_int64 pre_mark;    /* stats.round_trips after it was sent: another exchange since
                                * read its reply with the pending ones (client/net/conn.c) */
    uint32_t pre_conn;         /* conn.connections then */
    int pre_fast;              /* it was sent as HMGET + GET (read_fast) */
    double renewed_ms;         /* when a read script last renewed the registration and lease */
    double begun_ms;           /* when a begin script last registered the reader (sent) */
    double owner_checked_ms;   /* when a busy lock last asked whether the lease's owner lives */
    double busy_ms;            /* when the lock was last refused (busy), 0 after it succeeded */
    int next_turn;             /* the begin found the lease held and no writer waiting longer */
    int plain;                 /* the transaction began without scripts (store_plain.c): its
                                * snapshot is not registered, each read checks T:v */
    uint32_t plain_connection; /* the connection whose ACL refused the scripts (conn.connections) */
    kvsql_redis_stats stats;
} redis_store;

/* store_replies.c: why a call failed, and what a reply says. */

/* Records why rc happened for errmsg() and the VFS, then returns rc. */
int rs_fail(redis_store *s, int rc, const char *fmt, ...);
/* A call within a transaction whose connection was dropped. */
int rs_connection_gone(redis_store *s);
/* Whether element i of r is the status or string `word`. */
int rs_reply_is(const redisReply *r, size_t i, const char *word);
long long rs_reply_int(const redisReply *r);
/* An answer of the wrong shape from the script `what`. */
int rs_bad_reply(redis_store *s, const char *what);
/* The refusals every script may answer before it writes anything
 * (scripts.h): an SQLite code with the reason recorded, or -1 when r is
 * none of them. */
int rs_refusal(redis_store *s, const redisReply *r);
/* Whether the identity names a commit ("<v>:<hex>"), not a bare version. */
int rs_ident_named(const char *ident);
double rs_monotonic_ms(void);

#define NARGS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Starts a call of script id (kvsql_call_script, nbuf 8 bytes) with its
 * keys, in the order of its list in scripts.h: room for
 * 3 + SCRIPT_KEYS_MAX arguments before the script's own. */
static inline void rs_call_keys(const redis_store *s, kvsql_call *k, int id, char *nbuf) {
    const kvsql_script_keys_t *sk = &kvsql_script_keys[id];
    kvsql_call_script(k, sk->n, nbuf);
    for (int i = 0; i < sk->n; i++) kvsql_call_str(k, s->keys[sk->which[i]]);
}

/* store_plain.c: whether the begin script's reply r is a refusal that a
 * begin without scripts can get round (ACL, OOM), and that begin: its
 * answer, shaped like the begin script's, or an error reply, in *out
 * (SQLITE_OK); else an error code, recorded. */
int rs_plain_wanted(const redisReply *r);
int rs_begin_plain(redis_store *s, const char *cached, redisReply **out);

/* store_read.c: the store's read method. */
int rs_read(kvsql_store *st, kvsql_txn *t, uint32_t first, uint32_t count, void *buf);

/* store_stage.c: whether batch b is committed in steps, and the commit
 * in steps (the reply for the commit's outcome; NULL when the connection
 * broke). */
int rs_stage_wanted(const redis_store *s, const kvsql_txn *t, const kvsql_batch *b, const void *log);
redisReply *rs_commit_staged(redis_store *s, const kvsql_txn *t, const kvsql_batch *b);

#endif
