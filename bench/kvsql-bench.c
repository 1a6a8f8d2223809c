/* kvsql-bench.c - closed-loop load generator for redis-server, over hiredis.
 *
 * Built by `make build/kvsql-bench` (a prerequisite of `make bench`) and run
 * by bench/run, which uses it for every throughput and latency figure, the
 * baseline command and the kvsql command alike, so both see the same client.
 *
 *   kvsql-bench [-p PORT] [-c CLIENTS] [-n REQUESTS] [-t SECONDS] [-w WARMUP]
 *               [-r RANGE] [-k KEYS] [-s SEQSTART] [-S SEED] -- COMMAND [ARG ...]
 *
 * CLIENTS connections each keep one request in flight (no pipelining), all
 * driven by one thread with epoll. An argument that is exactly
 *   {rand}     becomes a random integer in 1..RANGE, in canonical decimal;
 *   {seq}      becomes the next number of a sequence from SEQSTART (unique);
 *   {blob:N}   becomes N bytes of 'x'.
 * and an argument PREFIX{key} becomes PREFIX followed by a random integer
 * in 1..KEYS (-k, default 1): many keys, e.g. "db:{key}".
 * The run stops after REQUESTS replies or SECONDS seconds, whichever comes
 * first; the first WARMUP replies are not counted. It prints one line of
 * key=value pairs: requests, errors, seconds, ops_per_sec and latency
 * percentiles in microseconds. Error replies are counted and the first is
 * printed to stderr. Only loopback addresses (127.0.0.1) are used. */
#include <hiredis/hiredis.h>

#include <errno.h>
#include <inttypes.h>
#include <sys/epoll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 1024
#define MAX_ARGS 64
#define MAX_SAMPLES 20000000

typedef struct options {
    int port, clients;
    long long requests, warmup, range, seq, keys;
    double seconds;
    uint64_t seed;
    int argc;
    char **argv;
} options;

typedef struct client {
    redisContext *ctx;
    uint64_t sent_ns;
    int busy;
} client;

typedef struct run {
    options *o;
    client clients[MAX_CLIENTS];
    int epfd;
    uint64_t rng;
    long long next_seq;
    char *blobs[MAX_ARGS];
    uint64_t *lat;           /* latency samples, ns */
    long long nlat, done, errors, issued, inflight;
    uint64_t t_start, t_measure, t_end;
    int measuring;
} run;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t xorshift(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static int usage(void) {
    fprintf(stderr, "usage: kvsql-bench [-p PORT] [-c CLIENTS] [-n REQUESTS] [-t SECONDS] [-w WARMUP]\n"
                    "                   [-r RANGE] [-k KEYS] [-s SEQSTART] [-S SEED] -- COMMAND [ARG ...]\n");
    return 2;
}

static int parse_options(options *o, int argc, char **argv) {
    *o = (options){.port = 6379, .clients = 1, .requests = 10000, .seconds = 60, .range = 100000, .keys = 1,
                   .seq = 1, .seed = 88172645463325252ull};
    int i = 1;
    for (; i < argc && strcmp(argv[i], "--") != 0; i += 2) {
        if (i + 1 >= argc) return -1;
        const char *f = argv[i], *v = argv[i + 1];
        if (!strcmp(f, "-p")) o->port = atoi(v);
        else if (!strcmp(f, "-c")) o->clients = atoi(v);
        else if (!strcmp(f, "-n")) o->requests = atoll(v);
        else if (!strcmp(f, "-t")) o->seconds = atof(v);
        else if (!strcmp(f, "-w")) o->warmup = atoll(v);
        else if (!strcmp(f, "-r")) o->range = atoll(v);
        else if (!strcmp(f, "-k")) o->keys = atoll(v);
        else if (!strcmp(f, "-s")) o->seq = atoll(v);
        else if (!strcmp(f, "-S")) o->seed = strtoull(v, NULL, 10) | 1;
        else return -1;
    }
    if (i >= argc - 1) return -1; /* no command after -- */
    o->argc = argc - i - 1;
    o->argv = argv + i + 1;
    if (o->clients < 1 || o->clients > MAX_CLIENTS || o->argc > MAX_ARGS || o->requests < 1 ||
        o->requests > MAX_SAMPLES || o->seconds <= 0 || o->range < 1 || o->keys < 1 || o->warmup < 0)
        return -1;
    return 0;
}

/* Expands {blob:N} once, up front. */
static int make_blobs(run *r) {
    for (int i = 0; i < r->o->argc; i++) {
        long n;
        if (sscanf(r->o->argv[i], "{blob:%ld}", &n) == 1) {
            if (n < 0 || n > 64 * 1024 * 1024 || !(r->blobs[i] = malloc((size_t)n + 1))) return -1;
            memset(r->blobs[i], 'x', (size_t)n);
            r->blobs[i][n] = 0;
        }
    }
    return 0;
}

/* PREFIX{key}, with a prefix short enough for the buffer. */
static int is_key_pattern(const char *a) {
    size_t n = strlen(a);
    return n >= 5 && n < 200 && !strcmp(a + n - 5, "{key}");
}

static int send_request(run *r, client *c) {
    const char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    char nums[MAX_ARGS][256];
    for (int i = 0; i < r->o->argc; i++) {
        const char *a = r->o->argv[i];
        if (r->blobs[i]) argv[i] = r->blobs[i];
        else if (!strcmp(a, "{rand}"))
            snprintf(nums[i], sizeof(nums[i]), "%lld", (long long)(xorshift(&r->rng) % (uint64_t)r->o->range) + 1),
                argv[i] = nums[i];
        else if (!strcmp(a, "{seq}")) snprintf(nums[i], sizeof(nums[i]), "%lld", r->next_seq++), argv[i] = nums[i];
        else if (is_key_pattern(a))
            snprintf(nums[i], sizeof(nums[i]), "%.*s%lld", (int)(strlen(a) - 5), a,
                     (long long)(xorshift(&r->rng) % (uint64_t)r->o->keys) + 1),
                argv[i] = nums[i];
        else argv[i] = a;
        lens[i] = strlen(argv[i]);
    }
    if (redisAppendCommandArgv(c->ctx, r->o->argc, argv, lens) != REDIS_OK) return -1;
    int done = 0;
    c->sent_ns = now_ns();
    while (!done)
        if (redisBufferWrite(c->ctx, &done) != REDIS_OK) return -1;
    c->busy = 1;
    r->issued++;
    r->inflight++;
    return 0;
}

static int time_is_up(run *r) {
    return now_ns() - r->t_start >= (uint64_t)(r->o->seconds * 1e9);
}

static int want_more(run *r) {
    return r->issued < r->o->warmup + r->o->requests && !time_is_up(r);
}

static void count_reply(run *r, client *c, redisReply *reply) {
    uint64_t t = now_ns();
    c->busy = 0;
    r->inflight--;
    if (reply->type == REDIS_REPLY_ERROR) {
        if (r->errors++ == 0) fprintf(stderr, "kvsql-bench: error reply: %s\n", reply->str);
    }
    r->done++;
    if (!r->measuring && r->done >= r->o->warmup) {
        r->measuring = 1;
        r->t_measure = t;
        return;
    }
    if (r->measuring && r->nlat < r->o->requests) r->lat[r->nlat++] = t - c->sent_ns;
}

/* Reads what arrived on client i; sends its next request. -1 on failure. */
static int on_readable(run *r, int i) {
    client *c = &r->clients[i];
    if (redisBufferRead(c->ctx) != REDIS_OK) return -1;
    void *reply = NULL;
    if (redisGetReplyFromReader(c->ctx, &reply) != REDIS_OK) return -1;
    if (!reply) return 0; /* partial reply */
    count_reply(r, c, reply);
    freeReplyObject(reply);
    if (want_more(r)) return send_request(r, c);
    return 0;
}

static int loop(run *r) {
    for (int i = 0; i < r->o->clients && want_more(r); i++)
        if (send_request(r, &r->clients[i]) != 0) return -1;
    struct epoll_event ev[MAX_CLIENTS];
    while (r->inflight > 0) {
        int n = epoll_wait(r->epfd, ev, MAX_CLIENTS, 30000);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            fprintf(stderr, "kvsql-bench: no reply in 30 s\n");
            return -1;
        }
        for (int k = 0; k < n; k++) {
            int i = (int)ev[k].data.u32;
            if (on_readable(r, i) != 0) {
                fprintf(stderr, "kvsql-bench: connection %d: %s\n", i, r->clients[i].ctx->errstr);
                return -1;
            }
        }
    }
    r->t_end = now_ns();
    return 0;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double percentile_us(run *r, double p) {
    if (r->nlat == 0) return 0;
    long long i = (long long)(p * (double)(r->nlat - 1) + 0.5);
    return (double)r->lat[i] / 1000.0;
}

static void report(run *r) {
    double secs = r->measuring ? (double)(r->t_end - r->t_measure) / 1e9 : 0;
    qsort(r->lat, (size_t)r->nlat, sizeof(*r->lat), cmp_u64);
    printf("requests=%lld errors=%lld clients=%d seconds=%.4f ops_per_sec=%.1f "
           "p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f\n",
           r->nlat, r->errors, r->o->clients, secs, secs > 0 ? (double)r->nlat / secs : 0, percentile_us(r, 0.5),
           percentile_us(r, 0.9), percentile_us(r, 0.99), percentile_us(r, 0.999), percentile_us(r, 1.0));
}

static int connect_all(run *r) {
    struct timeval tv = {5, 0};
    if ((r->epfd = epoll_create1(0)) < 0) {
        perror("kvsql-bench: epoll_create1");
        return -1;
    }
    for (int i = 0; i < r->o->clients; i++) {
        redisContext *c = redisConnectWithTimeout("127.0.0.1", r->o->port, tv);
        if (!c || c->err) {
            fprintf(stderr, "kvsql-bench: cannot connect to 127.0.0.1:%d: %s\n", r->o->port,
                    c ? c->errstr : "out of memory");
            if (c) redisFree(c);
            return -1;
        }
        r->clients[i].ctx = c;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
            perror("kvsql-bench: epoll_ctl");
            return -1;
        }
    }
    return 0;
}

static void free_run(run *r) {
    for (int i = 0; i < r->o->clients; i++)
        if (r->clients[i].ctx) redisFree(r->clients[i].ctx);
    if (r->epfd > 0) close(r->epfd);
    for (int i = 0; i < MAX_ARGS; i++) free(r->blobs[i]);
    free(r->lat);
}

int main(int argc, char **argv) {
    static run r;
    options o;
    if (parse_options(&o, argc, argv) != 0) return usage();
    r.o = &o;
    r.rng = o.seed;
    r.next_seq = o.seq;
    r.lat = malloc(sizeof(*r.lat) * (size_t)o.requests);
    int rc = 1;
    if (r.lat && make_blobs(&r) == 0 && connect_all(&r) == 0) {
        r.t_start = now_ns();
        r.measuring = o.warmup == 0;
        r.t_measure = r.t_start;
        if (loop(&r) == 0) {
            report(&r);
            rc = r.errors ? 3 : 0;
        }
    }
    free_run(&r);
    return rc;
}
