/* resp.c - commands in RESP, formatted by hand (resp.h).
 *
 * Called by client/net/conn.c and client/net/nodes.c. A command is built in
 * one buffer (on the stack when small) and handed to the link whole. */
#include "client/net/resp.h"

#include <stdlib.h>
#include <string.h>

char *kvsql_put_decimal(char *p, unsigned long long n) {
    char d[24];
    int k = 0;
    do d[k++] = (char)('0' + n % 10);
    while ((n /= 10) > 0);
    while (k > 0) *p++ = d[--k];
    return p;
}

#define APPEND_STACK 1024
int kvsql_resp_append(kvsql_link *l, int argc, const char **argv, const size_t *lens, size_t *bytes) {
    size_t total = 24;
    for (int i = 0; i < argc; i++) total += 24 + 4 + (lens ? lens[i] : strlen(argv[i]));
    char stack[APPEND_STACK], *buf = total <= sizeof(stack) ? stack : malloc(total), *p = buf;
    if (!buf) return REDIS_ERR;
    *p++ = '*';
    p = kvsql_put_decimal(p, (unsigned long long)argc);
    for (int i = 0; i < argc; i++) {
        size_t n = lens ? lens[i] : strlen(argv[i]);
        memcpy(p, "\r\n$", 3);
        p = kvsql_put_decimal(p + 3, n);
        memcpy(p, "\r\n", 2);
        memcpy(p + 2, argv[i], n);
        p += 2 + n;
    }
    memcpy(p, "\r\n", 2);
    p += 2;
    if (bytes) *bytes = (size_t)(p - buf);
    int rc = kvsql_link_append(l, buf, (size_t)(p - buf));
    if (buf != stack) free(buf);
    return rc;
}
