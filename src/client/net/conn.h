/* conn.h - the connection of a `redis` VFS store to the Redis node that
 * serves its key (a single server, or the slot's owner in a Redis
 * Cluster), over a plain or TLS link (client/net/transport.h).
 *
 * Used by the redis store only (client/hash/redis_store.h): each store embeds one kvsql_conn,
 * connects it at a begin (kvsql_conn_connect) and runs its scripts
 * through it. Failures are said in cn->err (and to the VFS); counters go
 * to the store's stats. */
#ifndef KVSQL_CLIENT_CONN_H
#define KVSQL_CLIENT_CONN_H

#include "client/net/cluster.h"
#include "client/config.h"
#include "client/hash/scripts.h"
#include "client/net/resp.h" /* kvsql_put_decimal */
#include "client/net/transport.h"
#include "kvsql.h"

#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdint.h>

typedef struct kvsql_conn {
    const kvsql_redis_config *cfg; /* the store's */
    const char *key;               /* the store's key: routing, messages */
    kvsql_redis_stats *stats;      /* the store's counters */
    void (*on_drop)(void *owner);  /* told each time the connection is dropped */
    void *owner;
    char where[300];            /* host:port, for messages */
    kvsql_cluster cl;           /* Redis Cluster routing (client/net/cluster.c) */
    kvsql_node node;            /* the node connected to, or last tried */
    int rerouted;               /* a MOVED named another node (the caller clears it) */
    kvsql_link *c;              /* NULL: not connected */
    int pending;                /* replies of sent end scripts not read yet */
    uint32_t connections;       /* made so far: kvsql_txn.generation */
    char token[56];             /* this connection's: 32 hex digits, then "-<CLIENT ID>" when known */
    int no_client_list;         /* CLIENT LIST was refused (ACL): dead lease owners lapse after lease_ms */
    char sha[SCRIPT_COUNT][41]; /* "" : unknown, use EVAL */
    int first_id;               /* kvsql_conn_connect_with: the script call sent with the handshake, */
    const char *first_what;     /* what it is, for messages */
    struct kvsql_call *first;   /* NULL when none */
    redisReply *first_reply;    /* its reply */
    char later_id[24];          /* "-<CLIENT ID>" learned then, for kvsql_conn_adopt_id */
    char err[512];              /* why the last call failed */
} kvsql_conn;

/* Sets up cn for key on the server of cfg; connects nothing yet. key,
 * cfg and stats must outlive cn. on_drop(owner) is called each time the
 * connection is dropped (the server may have lost what it said). */
void kvsql_conn_init(kvsql_conn *cn, const char *key, const kvsql_redis_config *cfg, kvsql_redis_stats *stats,
                     void (*on_drop)(void *), void *owner);

/* 1 when the next command needs a new connection (none, or it broke). */
int kvsql_conn_down(const kvsql_conn *cn);

/* Starts a new connection: drops the old one, makes a new token (its
 * CLIENT ID not known yet); kvsql_conn_connect_with then connects. */
void kvsql_conn_renew(kvsql_conn *cn);

/* Connects (after kvsql_conn_renew) with the call k of script id sent
 * last in the handshake's round trip, by EVAL (its SHA is not known yet):
 * its reply in *first, or NULL when it must be sent again (a Redis Cluster
 * redirection: nothing ran). A connection lost while waiting for that
 * reply fails as `what` would alone (SQLITE_IOERR). k named the token without its CLIENT ID, so
 * the ID is kept aside until kvsql_conn_adopt_id. An SQLite result code;
 * *first is NULL unless SQLITE_OK. */
int kvsql_conn_connect_with(kvsql_conn *cn, int id, const char *what, struct kvsql_call *k, redisReply **first);

/* Adds the CLIENT ID that kvsql_conn_connect_with kept aside to the
 * token: called between transactions, when nothing names the old token. */
void kvsql_conn_adopt_id(kvsql_conn *cn);

/* Connects unless connected and sound: a new token, the node that serves
 * the key, the handshake. An SQLite result code; cn->err says why. */
int kvsql_conn_connect(kvsql_conn *cn);

/* Drops the connection (when there is one), then calls on_drop. */
void kvsql_conn_drop(kvsql_conn *cn);

/* Reads the replies still pending when the connection is sound, then
 * drops it. */
void kvsql_conn_close(kvsql_conn *cn);

/* Records why rc happened in cn->err and for the VFS, then returns rc. */
int kvsql_conn_fail(kvsql_conn *cn, int rc, const char *fmt, ...);
int kvsql_conn_vfail(kvsql_conn *cn, int rc, const char *fmt, va_list ap);

/* The connection broke during `what`: drop it, answer rc. */
int kvsql_conn_lost(kvsql_conn *cn, int rc, const char *what);

/* An error reply to `what`: its words, and its code (busy only at begin,
 * where SQLite's busy handler may wait for a loading server). */
int kvsql_conn_reply_error(kvsql_conn *cn, const redisReply *r, const char *what);

/* Sends one command and waits for its reply: one round trip (more when
 * a Redis Cluster redirects it). NULL when the connection broke
 * (kvsql_link_error(cn->c) says why). */
redisReply *kvsql_conn_round_trip(kvsql_conn *cn, int argc, const char **argv, const size_t *lens);

/* Sends n commands of C strings (argcs[i] strings at argvs[i]) and reads
 * their n replies into out: one round trip, no redirection followed.
 * 0, or -1 when the connection broke (out holds nothing then). */
int kvsql_conn_pipeline(kvsql_conn *cn, int n, const int *argcs, const char **const *argvs, redisReply **out);

/* Reads the replies of the end scripts sent without waiting. 0, or -1
 * when the connection broke. */
int kvsql_conn_drain(kvsql_conn *cn);

/* The SQLite result code of an error reply's text (SQLITE_PERM for an
 * ACL refusal, SQLITE_FULL for OOM, ...). */
int kvsql_conn_error_code(const char *msg);

/* Sends a command of C strings without waiting: its reply is read before
 * the next command's. Nothing when not connected; drops the connection
 * when the sending fails. */
void kvsql_conn_send(kvsql_conn *cn, int argc, const char **argv);

/* The argument vector of a script call: EVALSHA sha nkeys keys... args...
 * (or EVAL body ...), lengths from lens or strlen. */
typedef struct kvsql_call {
    int argc;
    const char **argv;
    size_t *lens;
} kvsql_call;

/* Room for cap arguments: 0, or -1 when out of memory (free it anyway). */
int kvsql_call_init(kvsql_call *k, int cap);
void kvsql_call_free(kvsql_call *k);
void kvsql_call_add(kvsql_call *k, const char *p, size_t n);
void kvsql_call_str(kvsql_call *k, const char *p);

/* Starts a call of a script with nkeys keys: slots 0 and 1 are filled at
 * send time; nbuf (8 bytes) holds the count. */
void kvsql_call_script(kvsql_call *k, int nkeys, char *nbuf);

/* Runs a prepared call of script id: EVALSHA, then EVAL when the server
 * does not know the script (NOSCRIPT: a restart, a failover, SCRIPT
 * FLUSH). */
redisReply *kvsql_conn_run_script(kvsql_conn *cn, int id, kvsql_call *k);

/* Writes 2 * nbytes random lower-case hex digits and a NUL to out
 * (nbytes at most 32): a connection's token, a commit's identity. */
void kvsql_random_hex(char *out, size_t nbytes);

#endif
