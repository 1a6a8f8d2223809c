/* config.c - parses where a `redis` VFS database lives (config.h).
 *
 * Called by the VFS opener (client/extension.c) for every database it
 * opens, and at registration for KVSQL_DEFAULT. Every bad value is refused
 * with a message naming the parameter; nothing is guessed. */
#include "client/config.h"
#include "sqlite.h"

#include "format.h"

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
    c->tls_verify = 1;
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
 * kvsql_redis_config_defaults() above; docs/LIBRARY.md lists the same. */
enum param_kind { KIND_ADDRESS, KIND_TEXT, KIND_INT };

typedef struct param {
    const char *name;
    enum param_kind kind;
    long lo, hi;   /* KIND_INT: the bounds */
    size_t offset; /* in kvsql_redis_config (not KIND_ADDRESS) */
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
    {"lease_ms", KIND_INT, 10, KVSQL_LEASE_MAX_MS, FIELD(lease_ms)},
    {"wait", KIND_INT, 0, 1000, FIELD(wait_replicas)},
    {"wait_timeout_ms", KIND_INT, 1, 3600000, FIELD(wait_timeout_ms)},
    {"cache_kb", KIND_INT, 1, KVSQL_CACHE_KB_MAX, FIELD(cache_kb)},
    {"stage_kb", KIND_INT, 0, INT_MAX, FIELD(stage_kb)},
    {"layout", KIND_TEXT, 0, 0, FIELD(layout)},
    {"read_from", KIND_TEXT, 0, 0, FIELD(read_from)},
    /* TLS (docs/LIBRARY.md, "TLS"), checked as a whole by check_tls. */
    {"tls", KIND_INT, 0, 1, FIELD(tls)},
    {"tls_ca", KIND_TEXT, 0, 0, FIELD(tls_ca)},
    {"tls_cert", KIND_TEXT, 0, 0, FIELD(tls_cert)},
    {"tls_key", KIND_TEXT, 0, 0, FIELD(tls_key)},
    {"tls_server_name", KIND_TEXT, 0, 0, FIELD(tls_server_name)},
    {"tls_verify", KIND_INT, 0, 1, FIELD(tls_verify)},
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
    }
    return 0;
}

/* TLS's parameters hold together: no tls_...= without TLS on, no TLS over
 * a unix socket, a client certificate with its key. given: the first
 * tls_...= parameter given, or NULL. */
static int check_tls(const kvsql_redis_config *c, const char *given, char *err, size_t errlen) {
    if (given && !c->tls) {
        snprintf(err, errlen, "%s= is given but TLS is off: add tls=1 (or use rediss://)", given);
        return -1;
    }
    if (c->tls && c->port == 0) {
        snprintf(err, errlen, "tls=1: TLS needs host:port, not a unix socket");
        return -1;
    }
    if (!c->tls_cert[0] != !c->tls_key[0]) {
        snprintf(err, errlen, "tls_cert= and tls_key= go together (the client's certificate and its key)");
        return -1;
    }
    return 0;
}

int kvsql_redis_config_apply(kvsql_redis_config *c, kvsql_param_lookup get, void *ctx, char *err, size_t errlen) {
    const char *tls_given = NULL;
    for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
        const char *v = get(ctx, params[i].name);
        if (!v) continue;
        if (apply_param(c, &params[i], v, err, errlen) != 0) return -1;
        if (!tls_given && strncmp(params[i].name, "tls_", 4) == 0) tls_given = params[i].name;
    }
    if (c->layout[0] && strcmp(c->layout, "hash") != 0 && strcmp(c->layout, "spread") != 0) {
        snprintf(err, errlen, "layout=%s: expected hash or spread", c->layout);
        return -1;
    }
    if (c->read_from[0] && strcmp(c->read_from, "master") != 0 && strcmp(c->read_from, "replicas") != 0) {
        snprintf(err, errlen, "read_from=%s: expected master or replicas", c->read_from);
        return -1;
    }
    return check_tls(c, tls_given, err, errlen);
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

/* The parameters of a URL's query string, decoded; each marked when
 * kvsql_redis_config_apply asks for it. */
#define QUERY_MAX 24
typedef struct url_query {
    int n;
    char name[QUERY_MAX][32];
    char value[QUERY_MAX][512];
    int asked[QUERY_MAX];
} url_query;

static const char *query_param(void *ctx, const char *name) {
    url_query *q = ctx;
    for (int i = 0; i < q->n; i++)
        if (strcmp(q->name[i], name) == 0) {
            q->asked[i] = 1;
            return q->value[i];
        }
    return NULL;
}

/* The query's parameters over c; a name that kvsql_redis_config_apply
 * never asked for is refused. */
static int apply_query(kvsql_redis_config *c, url_query *q, char *err, size_t errlen) {
    if (kvsql_redis_config_apply(c, query_param, q, err, errlen) != 0) return -1;
    for (int i = 0; i < q->n; i++)
        if (!q->asked[i]) {
            snprintf(err, errlen, "unknown parameter %s= in the query", q->name[i]);
            return -1;
        }
    return 0;
}

/* Splits "a=1&b=2" into q; -1 with why in err. */
static int parse_query(url_query *q, const char *s, char *err, size_t errlen) {
    q->n = 0;
    while (*s) {
        const char *amp = strchr(s, '&'), *end = amp ? amp : s + strlen(s), *eq = memchr(s, '=', (size_t)(end - s));
        if (end == s) {
            s++;
            continue;
        }
        if (q->n == QUERY_MAX || !eq ||
            kvsql_url_decode(q->name[q->n], sizeof(q->name[0]), s, (size_t)(eq - s)) != 0 ||
            kvsql_url_decode(q->value[q->n], sizeof(q->value[0]), eq + 1, (size_t)(end - eq - 1)) != 0) {
            snprintf(err, errlen, "the query \"%.*s\": expected name=value (%%XX-escaped) pairs", (int)(end - s), s);
            return -1;
        }
        q->asked[q->n++] = 0;
        s = amp ? amp + 1 : end;
    }
    return 0;
}

/* redis:// or rediss:// (TLS): the length of the scheme, 0 for neither. */
static size_t url_scheme(const char *url, int *tls) {
    *tls = strncmp(url, "rediss://", 9) == 0;
    return *tls ? 9 : strncmp(url, "redis://", 8) == 0 ? 8 : 0;
}

/* host[:port][/db], or /path/to.sock: len bytes at p. */
static int apply_server(kvsql_redis_config *c, const char *p, size_t len, char *err, size_t errlen) {
    char part[600];
    if (len >= sizeof(part)) {
        snprintf(err, errlen, "KVSQL_DEFAULT: the host part is too long");
        return -1;
    }
    memcpy(part, p, len);
    part[len] = 0;
    if (part[0] == '/') return kvsql_redis_config_address(c, part, err, errlen); /* redis:///socket */
    char *slash = strchr(part, '/');
    if (slash) *slash = 0;
    if (kvsql_redis_config_address(c, part, err, errlen) != 0) return -1;
    if (slash && slash[1] && parse_int(slash + 1, 0, INT_MAX, &c->db) != 0) {
        snprintf(err, errlen, "KVSQL_DEFAULT=.../%s: the database number after / must be an integer", slash + 1);
        return -1;
    }
    return 0;
}

int kvsql_redis_config_from_url(kvsql_redis_config *c, const char *url, char *err, size_t errlen) {
    int tls;
    size_t skip = url_scheme(url, &tls);
    if (!skip) {
        snprintf(err, errlen,
                 "KVSQL_DEFAULT=%s: expected redis://[user[:password]@]host:port[/db][?name=value&...] (rediss:// for "
                 "TLS)",
                 url);
        return -1;
    }
    const char *p = url + skip, *q = strchr(p, '?');
    size_t len = q ? (size_t)(q - p) : strlen(p);
    const char *at = p[0] == '/' ? NULL : memchr(p, '@', len);
    for (const char *a = at; a && (a = memchr(a + 1, '@', (size_t)(p + len - a - 1))) != NULL;) at = a;
    if (at && apply_userinfo(c, p, (size_t)(at - p)) != 0) {
        snprintf(err, errlen, "KVSQL_DEFAULT: bad user or password (too long, or a bad %%XX escape)");
        return -1;
    }
    if (at) {
        len -= (size_t)(at + 1 - p);
        p = at + 1;
    }
    if (apply_server(c, p, len, err, errlen) != 0) return -1;
    if (tls) c->tls = 1;
    url_query query;
    if (q && parse_query(&query, q + 1, err, errlen) != 0) return -1;
    if (q) return apply_query(c, &query, err, errlen);
    return check_tls(c, NULL, err, errlen);
}
