/* config.c - parses where a `redis` VFS database lives (config.h).
 *
 * Called by the VFS opener (client/extension.c) for every database it
 * opens, and at registration for KVSQL_DEFAULT. Every bad value is refused
 * with a message naming the parameter; nothing is guessed. */
#include "client/config.h"

#include <errno.h>
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

static int apply_int(const char *name, const char *v, long lo, long hi, int *out, char *err, size_t errlen) {
    if (!v) return 0;
    if (parse_int(v, lo, hi, out) == 0) return 0;
    snprintf(err, errlen, "%s=%s: expected an integer from %ld to %ld", name, v, lo, hi);
    return -1;
}

static int apply_text(const char *name, const char *v, char *dst, size_t n, char *err, size_t errlen) {
    if (!v) return 0;
    if (copy_field(dst, n, v, strlen(v)) == 0) return 0;
    snprintf(err, errlen, "%s= is longer than %zu bytes", name, n - 1);
    return -1;
}

/* TLS: what to trust and show, checked as a whole (client/tls.c). */
static const char *const tls_texts[] = {"tls_ca", "tls_cert", "tls_key", "tls_server_name"};

static char *tls_text_field(kvsql_redis_config *c, int i, size_t *n) {
    char *f[] = {c->tls_ca, c->tls_cert, c->tls_key, c->tls_server_name};
    size_t sizes[] = {sizeof(c->tls_ca), sizeof(c->tls_cert), sizeof(c->tls_key), sizeof(c->tls_server_name)};
    *n = sizes[i];
    return f[i];
}

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

static int apply_tls(kvsql_redis_config *c, kvsql_param_lookup get, void *ctx, char *err, size_t errlen) {
    const char *given = NULL;
    if (apply_int("tls", get(ctx, "tls"), 0, 1, &c->tls, err, errlen) != 0) return -1;
    for (int i = 0; i < (int)(sizeof(tls_texts) / sizeof(*tls_texts)); i++) {
        size_t n;
        char *f = tls_text_field(c, i, &n);
        const char *v = get(ctx, tls_texts[i]);
        if (v && !given) given = tls_texts[i];
        if (apply_text(tls_texts[i], v, f, n, err, errlen) != 0) return -1;
    }
    const char *verify = get(ctx, "tls_verify");
    if (verify && !given) given = "tls_verify";
    if (apply_int("tls_verify", verify, 0, 1, &c->tls_verify, err, errlen) != 0) return -1;
    return check_tls(c, given, err, errlen);
}

int kvsql_redis_config_apply(kvsql_redis_config *c, kvsql_param_lookup get, void *ctx, char *err, size_t errlen) {
    const char *addr = get(ctx, "redis");
    if (addr && kvsql_redis_config_address(c, addr, err, errlen) != 0) return -1;
    if (apply_text("user", get(ctx, "user"), c->user, sizeof(c->user), err, errlen) != 0) return -1;
    if (apply_text("password", get(ctx, "password"), c->password, sizeof(c->password), err, errlen) != 0)
        return -1;
    if (apply_int("db", get(ctx, "db"), 0, INT_MAX, &c->db, err, errlen) != 0) return -1;
    if (apply_int("connect_timeout_ms", get(ctx, "connect_timeout_ms"), 1, 3600000, &c->connect_timeout_ms, err,
                  errlen) != 0)
        return -1;
    if (apply_int("timeout_ms", get(ctx, "timeout_ms"), 0, 3600000, &c->timeout_ms, err, errlen) != 0) return -1;
    if (apply_int("lease_ms", get(ctx, "lease_ms"), 10, 3600000, &c->lease_ms, err, errlen) != 0) return -1;
    if (apply_int("wait", get(ctx, "wait"), 0, 1000, &c->wait_replicas, err, errlen) != 0) return -1;
    if (apply_int("wait_timeout_ms", get(ctx, "wait_timeout_ms"), 1, 3600000, &c->wait_timeout_ms, err, errlen) !=
        0)
        return -1;
    if (apply_int("cache_kb", get(ctx, "cache_kb"), 1, KVSQL_CACHE_KB_MAX, &c->cache_kb, err, errlen) != 0)
        return -1;
    if (apply_int("stage_kb", get(ctx, "stage_kb"), 0, INT_MAX, &c->stage_kb, err, errlen) != 0) return -1;
    return apply_tls(c, get, ctx, err, errlen);
}

/* Decodes %XX escapes of a URL part into dst. */
static int url_decode(char *dst, size_t n, const char *src, size_t len) {
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = src[i];
        if (ch == '%') {
            unsigned v;
            char hex[3] = {0};
            if (i + 2 >= len) return -1;
            memcpy(hex, src + i + 1, 2);
            if (sscanf(hex, "%2x", &v) != 1) return -1;
            ch = (char)v;
            i += 2;
        }
        if (o + 1 >= n) return -1;
        dst[o++] = ch;
    }
    dst[o] = 0;
    return 0;
}

/* The user[:password]@ part of a URL, len bytes at s. */
static int apply_userinfo(kvsql_redis_config *c, const char *s, size_t len) {
    const char *colon = memchr(s, ':', len);
    size_t ulen = colon ? (size_t)(colon - s) : len;
    if (url_decode(c->user, sizeof(c->user), s, ulen) != 0) return -1;
    if (colon && url_decode(c->password, sizeof(c->password), colon + 1, len - ulen - 1) != 0) return -1;
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
        if (q->n == QUERY_MAX || !eq || url_decode(q->name[q->n], sizeof(q->name[0]), s, (size_t)(eq - s)) != 0 ||
            url_decode(q->value[q->n], sizeof(q->value[0]), eq + 1, (size_t)(end - eq - 1)) != 0) {
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
