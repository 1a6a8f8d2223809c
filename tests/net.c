/* net.c - a driver of the network layer for many nodes
 * (src/client/net/nodes.h), run by tests/test_net.py against real
 * redis-server processes: a Redis Cluster or one server.
 *
 *   net_probe ADDRESS     (host:port, or a redis:// URL with TLS, AUTH ...)
 *
 * reads lines on stdin, one batch or order each, and answers one line of
 * JSON each on stdout:
 *   run CMD ; CMD ; ...   a batch: each CMD's words split at spaces, routed
 *                         by its second word (the key); answers rc, err,
 *                         every reply in order, the batch counters and
 *                         each node's counters
 *   clear                 zeroes the counters
 * It knows nothing of kvsql's formats: the tests choose the commands. */
#include "client/config.h"
#include "client/net/nodes.h"
#include "sqlite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put_string(const char *s, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20 || c > 0x7e) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

static void put_reply(const redisReply *r) {
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS: put_string(r->str, r->len); break;
    case REDIS_REPLY_INTEGER: printf("%lld", r->integer); break;
    case REDIS_REPLY_ERROR:
        printf("{\"error\":");
        put_string(r->str, r->len);
        putchar('}');
        break;
    case REDIS_REPLY_ARRAY:
        putchar('[');
        for (size_t i = 0; i < r->elements; i++) {
            if (i) putchar(',');
            put_reply(r->element[i]);
        }
        putchar(']');
        break;
    default: printf("null");
    }
}

static void put_counters(const kvsql_net *n) {
    printf("\"batches\":%lld,\"rounds\":%lld,\"refreshes\":%lld,\"max_in_flight\":%d,\"nodes\":{", n->batches,
           n->rounds, n->refreshes, n->max_in_flight);
    for (int k = 0; k < n->nnodes; k++) {
        const kvsql_net_counters *c = &n->node[k].count;
        char at[300];
        printf("%s\"%s\":{\"requests\":%lld,\"round_trips\":%lld,\"bytes_out\":%lld,\"bytes_in\":%lld,"
               "\"connects\":%lld,\"redirects\":%lld}",
               k ? "," : "", kvsql_node_where(&n->node[k].addr, at, sizeof(at)), c->requests, c->round_trips,
               c->bytes_out, c->bytes_in, c->connects, c->redirects);
    }
    printf("}");
}

/* Splits line into commands (at ';') of words (at spaces), in place. */
static int parse(char *line, kvsql_net_cmd *cmds, int cap, const char **words, int wcap) {
    int n = 0, w = 0;
    for (char *save = NULL, *part = strtok_r(line, ";", &save); part && n < cap;
         part = strtok_r(NULL, ";", &save)) {
        int first = w;
        for (char *s2 = NULL, *word = strtok_r(part, " \t\n", &s2); word && w < wcap;
             word = strtok_r(NULL, " \t\n", &s2))
            words[w++] = word;
        if (w - first < 2) {
            w = first;
            continue;
        }
        cmds[n] = (kvsql_net_cmd){.argc = w - first, .argv = &words[first], .key = words[first + 1],
                                  .keylen = strlen(words[first + 1])};
        n++;
    }
    return n;
}

static void run_line(kvsql_net *n, char *line, size_t len) {
    int cap = (int)(len / 4 + 2), wcap = (int)(len / 2 + 2);
    kvsql_net_cmd *cmds = malloc(sizeof(*cmds) * (size_t)cap);
    const char **words = malloc(sizeof(*words) * (size_t)wcap);
    if (!cmds || !words) {
        printf("{\"rc\":%d,\"err\":\"out of memory\"}\n", SQLITE_NOMEM);
        free(cmds);
        free(words);
        return;
    }
    int count = parse(line, cmds, cap, words, wcap);
    int rc = kvsql_net_run(n, cmds, count);
    printf("{\"rc\":%d,\"err\":", rc);
    put_string(n->err, strlen(n->err));
    printf(",\"replies\":[");
    for (int i = 0; i < count; i++) {
        if (i) putchar(',');
        if (cmds[i].reply) put_reply(cmds[i].reply);
        else printf("null");
        freeReplyObject(cmds[i].reply);
    }
    printf("],");
    put_counters(n);
    printf("}\n");
    free(cmds);
    free(words);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: net_probe host:port|redis://...\n");
        return 2;
    }
    static kvsql_redis_config cfg;
    char err[512];
    kvsql_redis_config_defaults(&cfg);
    int bad = strncmp(argv[1], "redis", 5) == 0 ? kvsql_redis_config_from_url(&cfg, argv[1], err, sizeof(err))
                                                : kvsql_redis_config_address(&cfg, argv[1], err, sizeof(err));
    if (bad) {
        fprintf(stderr, "net_probe: %s\n", err);
        return 2;
    }
    kvsql_net *n = kvsql_net_new(&cfg, NULL);
    if (!n) return 1;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) > 0) {
        if (strncmp(line, "run ", 4) == 0) run_line(n, line + 4, (size_t)len - 4);
        else if (strncmp(line, "clear", 5) == 0) {
            kvsql_net_clear_counters(n);
            printf("{\"rc\":0}\n");
        } else printf("{\"rc\":-1,\"err\":\"unknown order\"}\n");
        fflush(stdout);
    }
    free(line);
    kvsql_net_free(n);
    return 0;
}
