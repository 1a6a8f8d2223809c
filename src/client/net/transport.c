/* transport.c - the byte stream to one Redis node (transport.h): a plain
 * hiredis connection, or TLS over the same kind of socket.
 *
 * Hiredis connects the socket in both cases (connect timeout, TCP_NODELAY,
 * read/write timeouts, keep-alive) and its redisContext says whether the
 * link broke (err) and why (errstr, or the link's own longer why). Plain: hiredis does all of the I/O. TLS: the
 * session of client/net/tls.c carries the bytes; commands are formatted in
 * RESP by client/net/resp.c (both ways: a third of hiredis's cost per
 * command) and queued here, replies are parsed
 * by a hiredis redisReader fed with what SSL_read returns, so both give the
 * same redisReply objects, in the same order, with the same pipelining. */
#include "client/net/transport.h"

#include "client/net/resp.h"
#include "client/net/tls.h"

#include <limits.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

struct kvsql_link {
    redisContext *c;     /* the socket and the error; plain: all of the I/O */
    SSL *ssl;            /* TLS: the session; NULL: plain */
    redisReader *reader; /* TLS: parses the replies */
    char *out;           /* TLS: commands queued, not written yet */
    size_t outlen, outcap;
    int asked_cert;      /* TLS: the server asked for a client certificate we lack */
    char why[256];       /* why the link broke, when longer than hiredis's errstr holds */
};

#define OUT_KEEP 65536 /* a bigger output buffer is freed once written */
#define READ_CHUNK 16384

static struct timeval ms_tv(int ms) {
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

void kvsql_link_break(kvsql_link *l, const char *why) {
    if (!l->c->err) l->c->err = REDIS_ERR_IO;
    snprintf(l->why, sizeof(l->why), "%s", why);
}

int kvsql_link_broken(const kvsql_link *l) {
    return l->c->err != 0;
}

const char *kvsql_link_error(const kvsql_link *l) {
    return l->why[0] ? l->why : l->c->errstr[0] ? l->c->errstr : "connection closed";
}

void kvsql_link_free(kvsql_link *l) {
    if (!l) return;
    if (l->ssl) kvsql_tls_end(l->ssl);
    if (l->reader) redisReaderFree(l->reader);
    if (l->c) redisFree(l->c);
    free(l->out);
    free(l);
}

/* TLS over the connected socket: the handshake within the connect
 * timeout, then the command timeout (0: none). */
static int start_tls(kvsql_link *l, const char *host, const kvsql_redis_config *cfg, char *err, size_t errlen) {
    if (redisSetTimeout(l->c, ms_tv(cfg->connect_timeout_ms)) != REDIS_OK) {
        snprintf(err, errlen, "%s", l->c->errstr);
        return -1;
    }
    l->ssl = kvsql_tls_start(l->c->fd, host, cfg, &l->asked_cert, err, errlen);
    if (!l->ssl) return -1;
    l->reader = redisReaderCreate();
    if (!l->reader) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

kvsql_link *kvsql_link_open(const char *host, int port, const kvsql_redis_config *cfg, char *err, size_t errlen) {
    kvsql_link *l = calloc(1, sizeof(*l));
    if (!l) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    struct timeval tv = ms_tv(cfg->connect_timeout_ms);
    l->c = port ? redisConnectWithTimeout(host, port, tv) : redisConnectUnixWithTimeout(host, tv);
    if (!l->c || l->c->err) {
        snprintf(err, errlen, "%s", l->c ? l->c->errstr : "out of memory");
        kvsql_link_free(l);
        return NULL;
    }
    if (cfg->tls && (!port || start_tls(l, host, cfg, err, errlen) != 0)) {
        if (!port) snprintf(err, errlen, "TLS needs host:port, not a unix socket");
        kvsql_link_free(l);
        return NULL;
    }
    if ((cfg->timeout_ms > 0 || cfg->tls) && redisSetTimeout(l->c, ms_tv(cfg->timeout_ms)) != REDIS_OK) {
        snprintf(err, errlen, "%s", l->c->errstr);
        kvsql_link_free(l);
        return NULL;
    }
    if (port) redisEnableKeepAlive(l->c);
    return l;
}

/* ---- commands ----------------------------------------------------------- */

static int queue(kvsql_link *l, const char *cmd, size_t len) {
    if (l->outlen + len > l->outcap) {
        size_t cap = l->outcap ? l->outcap : 4096;
        while (cap < l->outlen + len) cap *= 2;
        char *p = realloc(l->out, cap);
        if (!p) return REDIS_ERR;
        l->out = p;
        l->outcap = cap;
    }
    memcpy(l->out + l->outlen, cmd, len);
    l->outlen += len;
    return REDIS_OK;
}

int kvsql_link_append(kvsql_link *l, const char *cmd, size_t len) {
    return l->ssl ? queue(l, cmd, len) : redisAppendFormattedCommand(l->c, cmd, len);
}

/* Formatted by resp.c, not hiredis: measured with callgrind on a spread
 * database's warm point select (its begin script, 13 arguments),
 * redisFormatSdsCommandArgv took 8,600 instructions, resp.c 1,700. */
int kvsql_link_append_argv(kvsql_link *l, int argc, const char **argv, const size_t *lens) {
    return kvsql_resp_append(l, argc, argv, lens, NULL);
}

/* ---- TLS I/O ------------------------------------------------------------- */

static int io_failed(kvsql_link *l, int ret) {
    char why[200];
    kvsql_tls_io_error(l->ssl, ret, l->asked_cert, why, sizeof(why));
    kvsql_link_break(l, why);
    return REDIS_ERR;
}

static int tls_flush(kvsql_link *l) {
    size_t done = 0;
    while (done < l->outlen) {
        size_t n = l->outlen - done;
        ERR_clear_error();
        int w = SSL_write(l->ssl, l->out + done, n > INT_MAX ? INT_MAX : (int)n);
        if (w <= 0) return io_failed(l, w);
        done += (size_t)w;
    }
    l->outlen = 0;
    if (l->outcap > OUT_KEEP) {
        free(l->out);
        l->out = NULL;
        l->outcap = 0;
    }
    return REDIS_OK;
}

/* A reply the reader has whole, or NULL in *r when it needs more bytes. */
static int take_reply(kvsql_link *l, void **r) {
    if (redisReaderGetReply(l->reader, r) == REDIS_OK) return REDIS_OK;
    char why[160];
    snprintf(why, sizeof(why), "Protocol error: %s", l->reader->errstr);
    l->c->err = REDIS_ERR_PROTOCOL;
    kvsql_link_break(l, why);
    return REDIS_ERR;
}

static int read_more(kvsql_link *l) {
    char buf[READ_CHUNK];
    ERR_clear_error();
    int n = SSL_read(l->ssl, buf, sizeof(buf));
    if (n <= 0) return io_failed(l, n);
    if (redisReaderFeed(l->reader, buf, (size_t)n) != REDIS_OK) {
        kvsql_link_break(l, "out of memory");
        return REDIS_ERR;
    }
    return REDIS_OK;
}

int kvsql_link_flush(kvsql_link *l) {
    if (l->c->err) return REDIS_ERR;
    if (l->ssl) return tls_flush(l);
    int done = 0;
    while (!done)
        if (redisBufferWrite(l->c, &done) != REDIS_OK) return REDIS_ERR;
    return REDIS_OK;
}

int kvsql_link_get_reply(kvsql_link *l, redisReply **reply) {
    *reply = NULL;
    if (!l->ssl) return redisGetReply(l->c, (void **)reply);
    if (l->c->err) return REDIS_ERR;
    void *r = NULL;
    if (take_reply(l, &r) != REDIS_OK) return REDIS_ERR;
    if (!r && tls_flush(l) != REDIS_OK) return REDIS_ERR;
    while (!r)
        if (read_more(l) != REDIS_OK || take_reply(l, &r) != REDIS_OK) return REDIS_ERR;
    *reply = r;
    return REDIS_OK;
}
