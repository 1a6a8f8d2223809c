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
    return 0;
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
