/* tls.c - a TLS session (OpenSSL) over a connected socket (tls.h).
 *
 * Called by client/net/transport.c when it opens a link with cfg->tls. A
 * context holds the trusted CAs (tls_ca= file or directory, else the
 * system's store), the client certificate and key (tls_cert=, tls_key=),
 * TLS 1.2 at least; sessions of the same files share one ("contexts,
 * shared"). Unless tls_verify=0 the peer's
 * chain is verified and its certificate must name the server: a DNS name
 * is sent as SNI and checked (X509_VERIFY_PARAM_set1_host), an IP address
 * is checked against the certificate's IP addresses. Failures are worded
 * with the parameter to change. */
#include "client/net/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The reason of the last OpenSSL error queued, or fallback. */
static const char *last_reason(const char *fallback) {
    unsigned long code = 0, e;
    while ((e = ERR_get_error()) != 0) code = e;
    const char *why = code ? ERR_reason_error_string(code) : NULL;
    return why ? why : fallback;
}

/* A file the process can read, else why in err. */
static int readable(const char *param, const char *path, char *err, size_t errlen) {
    if (access(path, R_OK) == 0) return 0;
    snprintf(err, errlen, "%s=%s: %s", param, path, strerror(errno));
    return -1;
}

/* The CAs to trust: tls_ca= (a PEM file, or a directory of hashed
 * certificates), else the system's store. */
static int load_trust(SSL_CTX *ctx, const kvsql_redis_config *cfg, char *err, size_t errlen) {
    if (!cfg->tls_ca[0]) {
        if (SSL_CTX_set_default_verify_paths(ctx) == 1) return 0;
        snprintf(err, errlen, "TLS: cannot load the system's CA store: %s (set tls_ca=)", last_reason("?"));
        return -1;
    }
    if (readable("tls_ca", cfg->tls_ca, err, errlen) != 0) return -1;
    struct stat st;
    int dir = stat(cfg->tls_ca, &st) == 0 && S_ISDIR(st.st_mode);
    if (SSL_CTX_load_verify_locations(ctx, dir ? NULL : cfg->tls_ca, dir ? cfg->tls_ca : NULL) == 1) return 0;
    snprintf(err, errlen, "tls_ca=%s: not a PEM file of CA certificates: %s", cfg->tls_ca, last_reason("?"));
    return -1;
}

/* The client certificate and key of mutual TLS, when given. */
static int load_identity(SSL_CTX *ctx, const kvsql_redis_config *cfg, char *err, size_t errlen) {
    if (!cfg->tls_cert[0]) return 0;
    if (readable("tls_cert", cfg->tls_cert, err, errlen) != 0 || readable("tls_key", cfg->tls_key, err, errlen) != 0)
        return -1;
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1) {
        snprintf(err, errlen, "tls_cert=%s: not a PEM certificate: %s", cfg->tls_cert, last_reason("?"));
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "tls_key=%s: not a PEM private key: %s", cfg->tls_key, last_reason("?"));
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "tls_key=%s is not the key of tls_cert=%s", cfg->tls_key, cfg->tls_cert);
        return -1;
    }
    return 0;
}

/* The server asked for a client certificate and cfg gives none. */
static int note_cert_request(SSL *ssl, X509 **x509, EVP_PKEY **pkey) {
    (void)x509;
    (void)pkey;
    int *asked = SSL_get_app_data(ssl);
    if (asked) *asked = 1;
    return 0; /* none: the server decides */
}

static SSL_CTX *new_context(const kvsql_redis_config *cfg, char *err, size_t errlen) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "TLS: cannot make a context: %s", last_reason("out of memory"));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
    SSL_CTX_set_read_ahead(ctx, 1); /* a record in one read(), not its header then its body */
    SSL_CTX_set_client_cert_cb(ctx, note_cert_request);
    if ((cfg->tls_verify && load_trust(ctx, cfg, err, errlen) != 0) || load_identity(ctx, cfg, err, errlen) != 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, cfg->tls_verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    return ctx;
}

/* ---- contexts, shared ----
 * Loading the system's CA store takes 30-40 ms: a context is made once per
 * set of files (and their sizes and times of change, so that a renewed
 * certificate is read again) and shared by the sessions that use them.
 * SSL_CTX is reference-counted; a configured one may start sessions in
 * any thread. */
#define CTX_SHARED 8

typedef struct shared_ctx {
    char id[1700];
    SSL_CTX *ctx; /* one reference, the table's */
} shared_ctx;

static shared_ctx shared[CTX_SHARED];
static int nshared, next_evicted;
static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;

static void append_file_id(char *id, size_t n, const char *path) {
    struct stat st;
    size_t o = strlen(id);
    if (path[0] && stat(path, &st) == 0)
        snprintf(id + o, n - o, "|%s:%lld:%lld.%ld", path, (long long)st.st_size, (long long)st.st_mtim.tv_sec,
                 st.st_mtim.tv_nsec);
    else snprintf(id + o, n - o, "|%s", path);
}

/* What makes two contexts the same. */
static void context_id(const kvsql_redis_config *cfg, char *id, size_t n) {
    snprintf(id, n, "%d", cfg->tls_verify);
    append_file_id(id, n, cfg->tls_verify ? cfg->tls_ca : "");
    append_file_id(id, n, cfg->tls_cert);
    append_file_id(id, n, cfg->tls_key);
}

/* The shared context of id with a reference for the caller, or NULL. */
static SSL_CTX *find_context(const char *id) {
    SSL_CTX *ctx = NULL;
    pthread_mutex_lock(&shared_lock);
    for (int i = 0; i < nshared && !ctx; i++)
        if (strcmp(shared[i].id, id) == 0 && SSL_CTX_up_ref(shared[i].ctx) == 1) ctx = shared[i].ctx;
    pthread_mutex_unlock(&shared_lock);
    return ctx;
}

/* Shares ctx under id (the table takes a reference of its own). */
static void share_context(const char *id, SSL_CTX *ctx) {
    if (SSL_CTX_up_ref(ctx) != 1) return;
    pthread_mutex_lock(&shared_lock);
    int at = nshared < CTX_SHARED ? nshared++ : next_evicted++ % CTX_SHARED;
    SSL_CTX *old = shared[at].ctx; /* NULL in a new slot */
    snprintf(shared[at].id, sizeof(shared[at].id), "%s", id);
    shared[at].ctx = ctx;
    pthread_mutex_unlock(&shared_lock);
    if (old) SSL_CTX_free(old);
}

/* The context for cfg, shared or new: a reference for the caller. */
static SSL_CTX *get_context(const kvsql_redis_config *cfg, char *err, size_t errlen) {
    char id[sizeof(shared[0].id)];
    context_id(cfg, id, sizeof(id));
    SSL_CTX *ctx = find_context(id);
    if (ctx) return ctx;
    ctx = new_context(cfg, err, errlen);
    if (ctx) share_context(id, ctx);
    return ctx;
}

/* ---- sessions ---- */

static int is_ip_address(const char *s) {
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* SNI for a DNS name; the name or address the certificate must carry. */
static int expect_name(SSL *ssl, const char *name, int verify) {
    int ip = is_ip_address(name);
    if (!ip && SSL_set_tlsext_host_name(ssl, name) != 1) return -1;
    if (!verify) return 0;
    X509_VERIFY_PARAM *p = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    return (ip ? X509_VERIFY_PARAM_set1_ip_asc(p, name) : X509_VERIFY_PARAM_set1_host(p, name, 0)) == 1 ? 0 : -1;
}

/* What to change when verification failed with v. */
static const char *verify_hint(long v, const kvsql_redis_config *cfg) {
    switch (v) {
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        return "; set tls_server_name= to a name the certificate carries";
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        return cfg->tls_ca[0] ? "; no CA of tls_ca= signed it" : "; no CA of the system's store signed it: set tls_ca=";
    default:
        return "";
    }
}

/* Why the handshake failed (ret: SSL_connect's). */
static void handshake_error(SSL *ssl, int ret, const char *name, const kvsql_redis_config *cfg, int asked, char *err,
                            size_t errlen) {
    long v = SSL_get_verify_result(ssl);
    if (cfg->tls_verify && v != X509_V_OK) {
        ERR_clear_error();
        snprintf(err, errlen, "TLS: the server's certificate is not trusted (expected name %s): %s%s", name,
                 X509_verify_cert_error_string(v), verify_hint(v, cfg));
        return;
    }
    char why[200];
    kvsql_tls_io_error(ssl, ret, asked, why, sizeof(why));
    snprintf(err, errlen, "TLS handshake failed: %s", why);
}

SSL *kvsql_tls_start(int fd, const char *host, const kvsql_redis_config *cfg, int *asked_cert, char *err,
                     size_t errlen) {
    const char *name = cfg->tls_server_name[0] ? cfg->tls_server_name : host;
    ERR_clear_error();
    SSL_CTX *ctx = get_context(cfg, err, errlen);
    if (!ctx) return NULL;
    SSL *ssl = SSL_new(ctx);
    SSL_CTX_free(ctx); /* the session holds it */
    if (!ssl || SSL_set_fd(ssl, fd) != 1 || expect_name(ssl, name, cfg->tls_verify) != 0) {
        snprintf(err, errlen, "TLS: cannot start a session for %s: %s", name, last_reason("out of memory"));
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_app_data(ssl, asked_cert);
    int ret = SSL_connect(ssl);
    if (ret == 1) return ssl;
    handshake_error(ssl, ret, name, cfg, *asked_cert, err, errlen);
    SSL_free(ssl);
    return NULL;
}

void kvsql_tls_end(SSL *ssl) {
    SSL_free(ssl);
}

void kvsql_tls_io_error(SSL *ssl, int ret, int asked_cert, char *buf, size_t len) {
    int saved = errno, e = SSL_get_error(ssl, ret);
    unsigned long code = 0, last;
    while ((last = ERR_get_error()) != 0) code = last;
    const char *why = "Server closed the connection";
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) /* a timeout, said as hiredis says it */
        why = strerror(EAGAIN);
    else if (e == SSL_ERROR_SYSCALL && saved) why = strerror(saved);
    else if (e == SSL_ERROR_SSL && code && ERR_GET_REASON(code) != SSL_R_UNEXPECTED_EOF_WHILE_READING)
        why = ERR_reason_error_string(code) ? ERR_reason_error_string(code) : "protocol error";
    const char *hint = "";
    if (e == SSL_ERROR_SSL && code && ERR_GET_REASON(code) == SSL_R_WRONG_VERSION_NUMBER)
        hint = " (does the port speak TLS?)";
    else if (asked_cert && (e == SSL_ERROR_SSL || e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN))
        hint = " (the server asks for a client certificate: set tls_cert= and tls_key=)";
    snprintf(buf, len, "TLS: %s%s", why, hint);
}
