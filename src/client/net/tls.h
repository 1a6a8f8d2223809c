/* tls.h - a TLS session (OpenSSL) over a connected socket, as the
 * configuration asks: the CA to trust (tls_ca=, else the system's store),
 * a client certificate for mutual TLS (tls_cert=, tls_key=), the name the
 * server's certificate must carry (tls_server_name=, else the host), and
 * verification on unless tls_verify=0.
 *
 * Used by client/net/transport.c only. Every failure comes back as a message
 * that says what to change. */
#ifndef KVSQL_CLIENT_TLS_H
#define KVSQL_CLIENT_TLS_H

#include "client/config.h"

#include <openssl/ssl.h>
#include <stddef.h>

/* Runs the TLS handshake on socket fd, connected to host, within the
 * socket's timeouts. *asked_cert is set when the server asks for a client
 * certificate that cfg does not give; it must outlive the session. The
 * session, or NULL with why in err. */
SSL *kvsql_tls_start(int fd, const char *host, const kvsql_redis_config *cfg, int *asked_cert, char *err,
                     size_t errlen);

/* Ends the session (the socket stays open). */
void kvsql_tls_end(SSL *ssl);

/* Why SSL_read or SSL_write returned ret: a message in buf. */
void kvsql_tls_io_error(SSL *ssl, int ret, int asked_cert, char *buf, size_t len);

#endif
