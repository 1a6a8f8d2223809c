/* config.c - parses where a `redis` VFS database lives (config.h).
 *
 * Called by the VFS opener (client/extension.c) for every database it
 * opens, and at registration for KVSQL_DEFAULT. Every bad value is refused
 * with a message naming the parameter; nothing is guessed. */
#include "client/config.h"

#include <errno.h>
#include <stddef.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kvsql_redis_config_defaults(kvsql_redis_config *c) {
    memset(c, 0, sizeof(*c));
    snprintf(c->host, sizeof(c->host), "127.0.0.1");
    c->port = 6379;
    c->connect_timeout_ms = 2000;
    c->timeout_ms = 30000;
    c->lease_ms = 10000;
    c->wait_timeout_ms = 1000;
    c->cache_kb = KVSQL_CACHE_KB_DEFAULT;
    c->stage_kb = KVSQL_STAGE_KB_DEFAULT;
}

/* A decimal integer in [lo, hi], the whole string. */
static int parse_int(const char *s, long lo, long hi, int *out) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static int copy_field(char *dst, size_t n, const char *src, size_t len) {
    if (len >= n) return -1;
    memcpy(dst, src, len);
    dst[len] = 0;
    return 0;
}

int kvsql_redis_config_address(kvsql_redis_config *c, const char *addr, char *err, size_t errlen) {
    if (!addr || !*addr) {
        snprintf(err, errlen, "redis= is empty: give host:port or a unix socket path");
        return -1;
    }
    if (addr[0] == '/') {
        if (copy_field(c->host, sizeof(c->host), addr, strlen(addr)) != 0) {
            snprintf(err, errlen, "redis=: the socket path is longer than %zu bytes", sizeof(c->host) - 1);
            return -1;
        }
        c->port = 0;
        return 0;
    }
    const char *host = addr, *colon;
    size_t hostlen;
    if (addr[0] == '[') { /* [v6]:port */
        const char *close = strchr(addr, ']');
        if (!close || (close[1] && close[1] != ':')) goto bad;
        host = addr + 1;
        hostlen = (size_t)(close - host);
        colon = close[1] ? close + 1 : NULL;
    } else {
        colon = strrchr(addr, ':');
        if (colon && strchr(addr, ':') != colon) goto bad; /* a bare v6 address: needs [] */
        hostlen = colon ? (size_t)(colon - addr) : strlen(addr);
    }
    int port = 6379;
    if (hostlen == 0 || (colon && parse_int(colon + 1, 1, 65535, &port) != 0)) goto bad;
    if (copy_field(c->host, sizeof(c->host), host, hostlen) != 0) goto bad;
    c->port = port;
    return 0;
bad:
    snprintf(err, errlen, "redis=%s: expected host:port (port 1-65535), [ipv6]:port or /path/to/socket", addr);
    return -1;
}

/* ---- the URI parameters: one table, their single owner ---------------------
 *
 * Every parameter kvsql reads from a database URI: its name, its kind, its
 * bounds, where it goes in the config. The built-in defaults are
 * kvsql_redis_config_defaults() above; docs/LIBRARY.md lists the same.
 * A parameter another part of the library applies (TLS: client/conn.c)
 * is KIND_OTHER here: known, so not refused, and applied there. */
enum param_kind { KIND_ADDRESS, KIND_TEXT, KIND_INT, KIND_OTHER };

typedef struct param {
    const char *name;
    enum param_kind kind;
    long lo, hi;   /* KIND_INT: the bounds */
    size_t offset; /* in kvsql_redis_config (not KIND_OTHER) */
    size_t size;   /* KIND_TEXT: the field's size */
} param;

#define FIELD(f) offsetof(kvsql_redis_config, f), sizeof(((kvsql_redis_config *)0)->f)
static const param params[] = {
    {"redis", KIND_ADDRESS, 0, 0, 0, 0},
    {"user", KIND_TEXT, 0, 0, FIELD(user)},
    {"password", KIND_TEXT, 0, 0, FIELD(password)},
    {"db", KIND_INT, 0, INT_MAX, FIELD(db)},
    {"connect_timeout_ms", KIND_INT, 1, 3600000, FIELD(connect_timeout_ms)},
    {"timeout_ms", KIND_INT, 0, 3600000, FIELD(timeout_ms)},
    {"lease_ms", KIND_INT, 10, 3600000, FIELD(lease_ms)},
    {"wait", KIND_INT, 0, 1000, FIELD(wait_replicas)},
    {"wait_timeout_ms", KIND_INT, 1, 3600000, FIELD(wait_timeout_ms)},
    {"cache_kb", KIND_INT, 1, KVSQL_CACHE_KB_MAX, FIELD(cache_kb)},
    {"stage_kb", KIND_INT, 0, INT_MAX, FIELD(stage_kb)},
    /* TLS (docs/LIBRARY.md, "TLS"): applied by the connection code. */
    {"tls", KIND_OTHER, 0, 0, 0, 0},
    {"tls_ca", KIND_OTHER, 0, 0, 0, 0},
    {"tls_cert", KIND_OTHER, 0, 0, 0, 0},
    {"tls_key", KIND_OTHER, 0, 0, 0, 0},
    {"tls_server_name", KIND_OTHER, 0, 0, 0, 0},
    {"tls_verify", KIND_OTHER, 0, 0, 0, 0},
};
#undef FIELD

/* SQLite's own URI parameters (sqlite.org/uri.html), which a kvsql
 * database may carry too. */
static const char *const sqlite_params[] = {"vfs", "mode", "cache", "psow", "nolock", "immutable", "modeof"};

int kvsql_redis_config_known_param(const char *name) {
    for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++)
        if (strcmp(params[i].name, name) == 0) return 1;
    for (size_t i = 0; i < sizeof(sqlite_params) / sizeof(sqlite_params[0]); i++)
        if (strcmp(sqlite_params[i], name) == 0) return 1;
    return 0;
}

static int apply_param(kvsql_redis_config *c, const param *p, const char *v, char *err, size_t errlen) {
    char *field = (char *)c + p->offset;
    switch (p->kind) {
    case KIND_ADDRESS:
        return kvsql_redis_config_address(c, v, err, errlen);
    case KIND_TEXT:
        if (copy_field(field, p->size, v, strlen(v)) == 0) return 0;
        snprintf(err, errlen, "%s= is longer than %zu bytes", p->name, p->size - 1);
        return -1;
    case KIND_INT:
        if (parse_int(v, p->lo, p->hi, (int *)(void *)field) == 0) return 0;
        snprintf(err, errlen, "%s=%s: expected an integer from %ld to %ld", p->name, v, p->lo, p->hi);
        return -1;
    case KIND_OTHER:
        return 0;
    }
    return 0;
}

int kvsql_redis_config_apply(kvsql_redis_config *c, kvsql_param_lookup get, void *ctx, char *err, size_t errlen) {
    for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
        const char *v = get(ctx, params[i].name);
        if (v && apply_param(c, &params[i], v, err, errlen) != 0) return -1;
    }
    return 0;
}

/* ---- URLs ------------------------------------------------------------------ */

static int hex_digit(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

int kvsql_url_decode(char *dst, size_t n, const char *src, size_t len) {
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int ch = (unsigned char)src[i];
        if (ch == '%') {
            int hi = i + 2 < len ? hex_digit(src[i + 1]) : -1, lo = hi < 0 ? -1 : hex_digit(src[i + 2]);
            if (lo < 0) return -1;
            ch = hi * 16 + lo;
            i += 2;
        }
        if (ch == 0 || o + 1 >= n) return -1;
        dst[o++] = (char)ch;
    }
    if (n == 0) return -1;
    dst[o] = 0;
    return 0;
}

/* The user[:password]@ part of a URL, len bytes at s. */
static int apply_userinfo(kvsql_redis_config *c, const char *s, size_t len) {
    const char *colon = memchr(s, ':', len);
    size_t ulen = colon ? (size_t)(colon - s) : len;
    if (kvsql_url_decode(c->user, sizeof(c->user), s, ulen) != 0) return -1;
    if (colon && kvsql_url_decode(c->password, sizeof(c->password), colon + 1, len - ulen - 1) != 0) return -1;
    return 0;
}

int kvsql_redis_config_from_url(kvsql_redis_config *c, const char *url, char *err, size_t errlen) {
    static const char scheme[] = "redis://";
    if (strncmp(url, scheme, sizeof(scheme) - 1) != 0) {
        snprintf(err, errlen, "KVSQL_DEFAULT=%s: expected redis://[user[:password]@]host:port[/db]", url);
        return -1;
    }
    const char *p = url + sizeof(scheme) - 1;
    if (p[0] == '/') return kvsql_redis_config_address(c, p, err, errlen); /* redis:///socket */
    const char *at = strrchr(p, '@');
    if (at && apply_userinfo(c, p, (size_t)(at - p)) != 0) {
        snprintf(err, errlen, "KVSQL_DEFAULT: bad user or password (too long, or a bad %%XX escape)");
        return -1;
    }
    if (at) p = at + 1;
    const char *slash = strchr(p, '/');
    char addr[300];
    size_t alen = slash ? (size_t)(slash - p) : strlen(p);
    if (alen >= sizeof(addr)) {
        snprintf(err, errlen, "KVSQL_DEFAULT: the host part is too long");
        return -1;
    }
    memcpy(addr, p, alen);
    addr[alen] = 0;
    if (kvsql_redis_config_address(c, addr, err, errlen) != 0) return -1;
    if (slash && slash[1] && parse_int(slash + 1, 0, INT_MAX, &c->db) != 0) {
        snprintf(err, errlen, "KVSQL_DEFAULT=...%s: the database number after / must be an integer", slash);
        return -1;
    }
    return 0;
}
