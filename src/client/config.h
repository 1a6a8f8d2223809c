/* config.h - where a `redis` VFS database lives: server, credentials,
 * timeouts, lease.
 *
 * Filled from a database URI's parameters (file:KEY?vfs=redis&redis=...),
 * from the KVSQL_DEFAULT environment variable (redis://...) and from
 * KVSQL_PASSWORD. Used by the VFS opener (client/extension.c) and by the
 * store (client/hash/store_redis.c); docs/LIBRARY.md lists every parameter. */
#ifndef KVSQL_CLIENT_CONFIG_H
#define KVSQL_CLIENT_CONFIG_H

#include <stddef.h>

/* cache_kb=: 4 MiB, about 1000 pages of 4 KiB; at most 1 TiB. */
#define KVSQL_CACHE_KB_DEFAULT 4096
#define KVSQL_CACHE_KB_MAX 1073741824
/* stage_kb=: commits of more pages than 4 MiB are staged; 0: never. */
#define KVSQL_STAGE_KB_DEFAULT 4096

typedef struct kvsql_redis_config {
    char host[256];     /* host name or address; a unix socket path when port is 0 */
    int port;           /* 0: host is a unix socket path */
    char user[128];     /* "" : the default user */
    char password[256]; /* "" : no AUTH */
    int db;             /* SELECT db when not 0 */
    int connect_timeout_ms;
    int timeout_ms;     /* per command; 0: wait forever */
    int lease_ms;       /* writer lease and reader registration */
    int wait_replicas;  /* wait=: after each commit, WAIT for this many replicas (0: no WAIT) */
    int wait_timeout_ms; /* wait_timeout_ms=: WAIT's timeout */
    int cache_kb;       /* cache_kb=: the page cache's bound, KiB (client/cache/pagecache.h) */
    int stage_kb;       /* stage_kb=: a commit of more KiB of pages is staged (store_stage.c); 0: never */
    char layout[16];    /* layout=: "" or "hash" (one hash, the default) or "spread" (docs/FORMAT.md) */
    char read_from[16]; /* read_from=: "" or "master" (the default) or "replicas": a spread store's page reads */
    /* TLS (client/net/tls.c): tls=1 or rediss:// */
    int tls;
    char tls_ca[512];          /* tls_ca=: PEM file (or directory) of CAs; "" : the system's store */
    char tls_cert[512];        /* tls_cert=, tls_key=: the client's, for mutual TLS */
    char tls_key[512];
    char tls_server_name[256]; /* tls_server_name=: SNI and the name checked; "" : the host */
    int tls_verify;            /* tls_verify=0: no verification (never the default) */
} kvsql_redis_config;

/* Built-in defaults: 127.0.0.1:6379, db 0, no password, no TLS
 * (verification on once TLS is asked for). */
void kvsql_redis_config_defaults(kvsql_redis_config *c);

/* Reads a parameter by name: its value, or NULL when absent. */
typedef const char *(*kvsql_param_lookup)(void *ctx, const char *name);

/* Overlays the parameters that lookup finds (the table in config.c:
 * redis, user, password, db, connect_timeout_ms, timeout_ms, lease_ms,
 * wait, wait_timeout_ms, cache_kb, stage_kb, layout, read_from, tls, tls_ca, tls_cert,
 * tls_key, tls_server_name, tls_verify) on c. Returns 0, or -1 with why
 * in err. */
int kvsql_redis_config_apply(kvsql_redis_config *c, kvsql_param_lookup lookup, void *ctx, char *err,
                             size_t errlen);

/* Whether name is a URI parameter that kvsql (the table in config.c) or
 * SQLite knows: a database URI with any other is refused, naming it. */
int kvsql_redis_config_known_param(const char *name);

/* Decodes the %XX escapes of len bytes at src into dst (n bytes, with its
 * NUL). Strict: -1 on a bad escape (%4z, %-1, a % too near the end), on
 * %00 or any NUL, and when the result does not fit. The one URL decoder
 * of the library and the kvsql tool. */
int kvsql_url_decode(char *dst, size_t n, const char *src, size_t len);

/* Overlays a redis://[user[:password]@]host[:port][/db][?name=value&...]
 * URL on c (a unix socket as redis:///path/to.sock; rediss:// for TLS;
 * the query's parameters as kvsql_redis_config_apply takes them).
 * Returns 0, or -1 with why in err. */
int kvsql_redis_config_from_url(kvsql_redis_config *c, const char *url, char *err, size_t errlen);

/* Sets host and port from "host:port", "host", "[v6addr]:port" or a
 * unix socket path (starting with '/'). Returns 0, or -1 with why. */
int kvsql_redis_config_address(kvsql_redis_config *c, const char *addr, char *err, size_t errlen);

#endif
