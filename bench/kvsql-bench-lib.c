/* kvsql-bench-lib.c - the library's figures for `make bench` (bench/run).
 *
 *   kvsql-bench-lib HOST PORT KEY ITERATIONS
 *
 * One process, one client, on a redis-server that bench/run started:
 * fills KEY through the `redis` VFS, then measures, interleaved in blocks so
 * that both sides see the same machine noise, the latency of a warm point
 * select through the VFS (one autocommit SELECT: one read transaction) and
 * of a plain PING over hiredis. It also counts round trips exactly, with the
 * VFS's own counter (kvsql_redis_stats_get): per warm read transaction, per
 * one-row write transaction (autocommit UPDATE and INSERT), and per read
 * transaction after another connection committed; and the p50 latency of a
 * one-row autocommit UPDATE. Prints `name value`
 * lines that bench/run reads; exits 1 on any error, with the reason.
 *
 *   kvsql-bench-lib scan HOST PORT KEY MB REPS
 *
 * The cold full scan (issue 12): fills KEY with a table of about MB
 * megabytes through the VFS, then REPS times, alternating, scans it on a
 * new connection (a cold page cache) and reads the same pages with
 * pipelined HMGETs of SCAN_BATCH fields over hiredis; prints the times,
 * and the scan's round trips and pages read from kvsql_redis_stats_get.
 *
 *   kvsql-bench-lib bigcommit HOST PORT KEY ROWS [STAGE_KB]
 *
 * A big commit (issue 12): inserts ROWS rows (32 bytes of text each) into
 * KEY in one transaction through the VFS while another thread PINGs the
 * server over its own connection, one PING per millisecond; prints the
 * insert and commit times, the pages, and the PINGs' p99 and max wait.
 * STAGE_KB sets the URI parameter stage_kb= (0: the commit in one script).
 *
 *   kvsql-bench-lib tls HOST PORT TLS_PORT KEY ITERATIONS TLS_PARAMS
 *
 * The cost of TLS (issue 24): one server listening on PORT (plain) and on
 * TLS_PORT (TLS); KEY filled through the plain port, then warm point
 * selects through two connections of the VFS, one per port (TLS_PARAMS:
 * "&tls=1&tls_ca=..."), interleaved in blocks; prints the p50 and p99 of
 * each and the round trips of one select.
 *
 *   kvsql-bench-lib spread HOST PORT KEY ITERATIONS
 *
 * The spread layout on one server (issue 25): fills KEY as a spread
 * database (layout=spread) and KEY-hash as a one-hash one with the same
 * table, warms both, then times warm point selects on each, alternating
 * blocks of BLOCK, in SPREAD_ROUNDS rounds (a `spread_select_ops` and a
 * `hash_select_ops` line each); and counts the spread database's round
 * trips per warm read transaction and per one-row autocommit UPDATE. */
#include "kvsql.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BLOCK 200 /* requests per side before switching sides */
#define ROWS 10000

static void die(const char *what, const char *why) {
    fprintf(stderr, "kvsql-bench-lib: %s: %s\n", what, why);
    exit(1);
}

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void exec_or_die(sqlite3 *db, const char *sql) {
    char *err = NULL;
    if (sqlite3_exec(db, sql, 0, 0, &err) != SQLITE_OK) die(sql, err ? err : kvsql_errmsg(db));
}

/* extra: more URI parameters ("&name=value..."), or "". */
static sqlite3 *open_db_with(const char *host, int port, const char *key, const char *extra) {
    char uri[600];
    sqlite3 *db;
    snprintf(uri, sizeof(uri), "file:%s?vfs=redis&redis=%s:%d%s", key, host, port, extra);
    if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL) != SQLITE_OK)
        die(uri, kvsql_errmsg(NULL));
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static sqlite3 *open_db(const char *host, int port, const char *key) {
    return open_db_with(host, port, key, "");
}

static long long round_trips(sqlite3 *db) {
    kvsql_redis_stats st;
    if (kvsql_redis_stats_get(db, NULL, &st) != SQLITE_OK) die("stats", "not on the redis VFS");
    return st.round_trips;
}

static void step_or_die(sqlite3_stmt *st, int want) {
    int rc = sqlite3_step(st);
    if (rc != want) die(sqlite3_sql(st), sqlite3_errmsg(sqlite3_db_handle(st)));
    sqlite3_reset(st);
}

static double select_once(sqlite3_stmt *st, int id) {
    double t0 = now_us();
    sqlite3_bind_int(st, 1, id);
    step_or_die(st, SQLITE_ROW);
    return now_us() - t0;
}

static double ping_once(redisContext *c) {
    double t0 = now_us();
    redisReply *r = redisCommand(c, "PING");
    if (!r) die("PING", c->errstr);
    freeReplyObject(r);
    return now_us() - t0;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(double *v, int n, double p) {
    qsort(v, n, sizeof(*v), by_value);
    return v[(int)(p * (n - 1))];
}

/* The p50 latency of n one-row autocommit UPDATEs (a write transaction each). */
static double update_p50(sqlite3_stmt *upd, int n) {
    double *t = malloc(sizeof(double) * n);
    if (!t) die("malloc", "out of memory");
    for (int i = 0; i < n; i++) {
        double t0 = now_us();
        sqlite3_bind_int(upd, 1, 1 + i % ROWS);
        step_or_die(upd, SQLITE_DONE);
        t[i] = now_us() - t0;
    }
    double p = percentile(t, n, 0.50);
    free(t);
    return p;
}

/* Average round trips of `n` runs of a statement, each its own transaction. */
static double trips_per_run(sqlite3 *db, sqlite3_stmt *st, int n, int want, int id_base) {
    long long before = round_trips(db);
    for (int i = 0; i < n; i++) {
        sqlite3_bind_int(st, 1, id_base + i);
        step_or_die(st, want);
    }
    return (double)(round_trips(db) - before) / n;
}

/* ---- scan ------------------------------------------------------------------ */

#define SCAN_BATCH 256 /* fields per HMGET of the baseline */

static long long hlen_of(redisContext *c, const char *key) {
    redisReply *r = redisCommand(c, "HLEN %s", key);
    if (!r || r->type != REDIS_REPLY_INTEGER) die("HLEN", c->errstr[0] ? c->errstr : "not an integer");
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

/* Fills key with about mb megabytes: rows of 100 bytes of text. */
static void fill_scan_table(const char *host, int port, const char *key, int mb) {
    sqlite3 *db = open_db(host, port, key);
    char sql[512];
    long rows = (long)mb * 1048576 / 112;
    snprintf(sql, sizeof(sql),
             "drop table if exists t; create table t(id integer primary key, v text);"
             "with recursive c(x) as (select 1 union all select x + 1 from c where x < %ld)"
             " insert into t select x, printf('%%0100d', x) from c",
             rows);
    exec_or_die(db, sql);
    sqlite3_close(db);
}

/* One cold scan on a new connection: seconds; its counters in st. */
static double scan_once(const char *host, int port, const char *key, kvsql_redis_stats *st, long long *bytes) {
    sqlite3 *db = open_db(host, port, key);
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, "select count(*), sum(length(v)) from t", -1, &q, 0) != SQLITE_OK)
        die("prepare", sqlite3_errmsg(db));
    kvsql_redis_stats before;
    if (kvsql_redis_stats_get(db, NULL, &before) != SQLITE_OK) die("stats", "not on the redis VFS");
    double t0 = now_us();
    if (sqlite3_step(q) != SQLITE_ROW) die("scan", sqlite3_errmsg(db));
    double t = (now_us() - t0) / 1e6;
    *bytes = sqlite3_column_int64(q, 1);
    sqlite3_finalize(q);
    if (kvsql_redis_stats_get(db, NULL, st) != SQLITE_OK) die("stats", "not on the redis VFS");
    st->round_trips -= before.round_trips;
    sqlite3_close(db);
    return t;
}

/* Pages 0..n-1 of key by HMGETs of SCAN_BATCH fields, all pipelined:
 * seconds. Checks that every page came, page_size bytes each. */
static double hmget_all(redisContext *c, const char *key, long long n) {
    double t0 = now_us();
    const char *argv[2 + SCAN_BATCH];
    size_t lens[2 + SCAN_BATCH];
    static char names[SCAN_BATCH][16];
    long long batches = 0;
    for (long long i = 0; i < n; i += SCAN_BATCH, batches++) {
        int k = 0;
        argv[k] = "HMGET", lens[k++] = 5;
        argv[k] = key, lens[k++] = strlen(key);
        for (long long j = i; j < n && j < i + SCAN_BATCH; j++) {
            int len = snprintf(names[j - i], sizeof(names[0]), "%lld", j);
            argv[k] = names[j - i], lens[k++] = (size_t)len;
        }
        redisAppendCommandArgv(c, k, argv, lens);
    }
    long long bytes = 0, psz = -1;
    for (long long b = 0; b < batches; b++) {
        redisReply *r;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) die("HMGET", c->errstr);
        for (size_t j = 0; j < r->elements; j++) {
            if (r->element[j]->type != REDIS_REPLY_STRING) die("HMGET", "a page is missing");
            if (psz < 0) psz = (long long)r->element[j]->len;
            bytes += (long long)r->element[j]->len;
        }
        freeReplyObject(r);
    }
    double t = (now_us() - t0) / 1e6;
    if (bytes != n * psz) die("HMGET", "pages of different lengths");
    return t;
}

static int scan_main(int argc, char **argv) {
    if (argc != 7) die("usage", "kvsql-bench-lib scan HOST PORT KEY MB REPS");
    const char *host = argv[2], *key = argv[4];
    int port = atoi(argv[3]), mb = atoi(argv[5]), reps = atoi(argv[6]);
    if (kvsql_register_redis(0) != SQLITE_OK) die("kvsql_register_redis", kvsql_errmsg(NULL));
    fill_scan_table(host, port, key, mb);
    redisContext *c = redisConnect(host, port);
    if (!c || c->err) die("connect", c ? c->errstr : "out of memory");
    long long pages = hlen_of(c, key);
    printf("scan_pages %lld\n", pages);
    for (int i = 0; i < reps; i++) {
        kvsql_redis_stats st;
        long long bytes;
        double lib = scan_once(host, port, key, &st, &bytes);
        double base = hmget_all(c, key, pages);
        printf("scan_lib_s %.4f\nscan_hmget_s %.4f\n", lib, base);
        printf("scan_round_trips %lld\nscan_pages_read %lld\nscan_reads %lld\nscan_text_bytes %lld\n",
               st.round_trips, st.pages_read, st.reads, bytes);
    }
    redisFree(c);
    return 0;
}

/* ---- bigcommit ------------------------------------------------------------- */

#define PINGS_MAX 600000

typedef struct pinger {
    redisContext *c;
    volatile int stop;
    double *waits;
    int n;
} pinger;

static void *ping_loop(void *arg) {
    pinger *p = arg;
    struct timespec ms = {0, 1000000};
    while (!p->stop && p->n < PINGS_MAX) {
        p->waits[p->n++] = ping_once(p->c) / 1000.0;
        nanosleep(&ms, NULL);
    }
    return NULL;
}

static int bigcommit_main(int argc, char **argv) {
    if (argc != 6 && argc != 7) die("usage", "kvsql-bench-lib bigcommit HOST PORT KEY ROWS [STAGE_KB]");
    const char *host = argv[2], *key = argv[4];
    int port = atoi(argv[3]);
    long rows = atol(argv[5]);
    char extra[64] = "";
    if (argc == 7) snprintf(extra, sizeof(extra), "&stage_kb=%d", atoi(argv[6]));
    if (kvsql_register_redis(0) != SQLITE_OK) die("kvsql_register_redis", kvsql_errmsg(NULL));
    sqlite3 *db = open_db_with(host, port, key, extra);
    exec_or_die(db, "drop table if exists t; create table t(id integer primary key, v text)");
    pinger p = {redisConnect(host, port), 0, malloc(sizeof(double) * PINGS_MAX), 0};
    if (!p.c || p.c->err || !p.waits) die("connect", p.c ? p.c->errstr : "out of memory");
    pthread_t th;
    if (pthread_create(&th, NULL, ping_loop, &p) != 0) die("pthread_create", "failed");
    char sql[300];
    snprintf(sql, sizeof(sql),
             "begin; with recursive c(x) as (select 1 union all select x + 1 from c where x < %ld)"
             " insert into t select x, printf('%%032d', x) from c",
             rows);
    double t0 = now_us();
    exec_or_die(db, sql);
    double t1 = now_us();
    exec_or_die(db, "commit");
    double t2 = now_us();
    p.stop = 1;
    pthread_join(th, NULL);
    printf("big_rows %ld\nbig_pages %lld\n", rows, hlen_of(p.c, key));
    printf("big_insert_s %.3f\nbig_commit_s %.3f\n", (t1 - t0) / 1e6, (t2 - t1) / 1e6);
    printf("big_pings %d\nbig_ping_p99_ms %.3f\n", p.n, percentile(p.waits, p.n, 0.99));
    printf("big_ping_max_ms %.3f\n", percentile(p.waits, p.n, 1.0));
    kvsql_redis_stats st;
    if (kvsql_redis_stats_get(db, NULL, &st) != SQLITE_OK) die("stats", "not on the redis VFS");
    printf("big_staged_commits %lld\n", (long long)st.staged_commits);
    sqlite3_close(db);
    redisFree(p.c);
    free(p.waits);
    return 0;
}

/* Warm point selects on a (plain) and b (TLS), interleaved in blocks:
 * p50 and p99 of each, as `NAME_p50_us` lines. */
static void compare_selects(sqlite3 *a, sqlite3 *b, int iters) {
    sqlite3_stmt *sa, *sb;
    if (sqlite3_prepare_v2(a, "select v from t where id = ?", -1, &sa, 0) != SQLITE_OK ||
        sqlite3_prepare_v2(b, "select v from t where id = ?", -1, &sb, 0) != SQLITE_OK)
        die("prepare", kvsql_errmsg(b));
    for (int i = 0; i < ROWS; i++) { /* warm: every page cached */
        select_once(sa, 1 + i);
        select_once(sb, 1 + i);
    }
    double *ta = malloc(sizeof(double) * iters), *tb = malloc(sizeof(double) * iters);
    if (!ta || !tb) die("malloc", "out of memory");
    unsigned seed = 12345;
    for (int done = 0; done < iters; done += BLOCK) {
        for (int i = done; i < done + BLOCK && i < iters; i++)
            ta[i] = select_once(sa, 1 + (int)(rand_r(&seed) % ROWS));
        for (int i = done; i < done + BLOCK && i < iters; i++)
            tb[i] = select_once(sb, 1 + (int)(rand_r(&seed) % ROWS));
    }
    printf("plain_select_p50_us %.2f\nplain_select_p99_us %.2f\n", percentile(ta, iters, 0.50),
           percentile(ta, iters, 0.99));
    printf("tls_select_p50_us %.2f\ntls_select_p99_us %.2f\n", percentile(tb, iters, 0.50),
           percentile(tb, iters, 0.99));
    printf("tls_rt_select %.3f\n", trips_per_run(b, sb, 1000, SQLITE_ROW, 1));
    sqlite3_finalize(sa);
    sqlite3_finalize(sb);
    free(ta);
    free(tb);
}

static int tls_main(int argc, char **argv) {
    if (argc != 8) die("usage", "kvsql-bench-lib tls HOST PORT TLS_PORT KEY ITERATIONS TLS_PARAMS");
    const char *host = argv[2], *key = argv[5];
    int port = atoi(argv[3]), tls_port = atoi(argv[4]), iters = atoi(argv[6]);
    if (iters < BLOCK) iters = BLOCK;
    if (kvsql_register_redis(0) != SQLITE_OK) die("kvsql_register_redis", kvsql_errmsg(NULL));
    sqlite3 *plain = open_db(host, port, key), *tls = open_db_with(host, tls_port, key, argv[7]);
    exec_or_die(plain, "drop table if exists t; create table t(id integer primary key, v text);"
                       "with recursive c(x) as (select 1 union all select x + 1 from c where x < 10000)"
                       " insert into t select x, printf('%032d', x) from c");
    compare_selects(plain, tls, iters);
    sqlite3_close(plain);
    sqlite3_close(tls);
    return 0;
}

/* ---- spread ---------------------------------------------------------------- */

#define SPREAD_ROUNDS 5

static void fill_rows(sqlite3 *db) {
    exec_or_die(db, "drop table if exists t; create table t(id integer primary key, v text);"
                    "with recursive c(x) as (select 1 union all select x + 1 from c where x < 10000)"
                    " insert into t select x, printf('%032d', x) from c");
}

/* Seconds of n warm point selects on st, ids drawn from *seed. */
static double select_block(sqlite3_stmt *st, int n, unsigned *seed) {
    double t = 0;
    for (int i = 0; i < n; i++) t += select_once(st, 1 + (int)(rand_r(seed) % ROWS));
    return t / 1e6;
}

static int spread_main(int argc, char **argv) {
    if (argc != 6) die("usage", "kvsql-bench-lib spread HOST PORT KEY ITERATIONS");
    const char *host = argv[2], *key = argv[4];
    int port = atoi(argv[3]), iters = atoi(argv[5]);
    char hkey[300];
    snprintf(hkey, sizeof(hkey), "%s-hash", key);
    if (iters < BLOCK * SPREAD_ROUNDS) iters = BLOCK * SPREAD_ROUNDS;
    if (kvsql_register_redis(0) != SQLITE_OK) die("kvsql_register_redis", kvsql_errmsg(NULL));
    sqlite3 *sp = open_db_with(host, port, key, "&layout=spread"), *h = open_db(host, port, hkey);
    fill_rows(sp);
    fill_rows(h);
    sqlite3_stmt *ssel, *hsel, *supd;
    if (sqlite3_prepare_v2(sp, "select v from t where id = ?", -1, &ssel, 0) != SQLITE_OK ||
        sqlite3_prepare_v2(h, "select v from t where id = ?", -1, &hsel, 0) != SQLITE_OK ||
        sqlite3_prepare_v2(sp, "update t set v = 'x' || v where id = ?", -1, &supd, 0) != SQLITE_OK)
        die("prepare", sqlite3_errmsg(sp));
    for (int i = 0; i < ROWS; i++) select_once(ssel, 1 + i), select_once(hsel, 1 + i); /* warm */
    unsigned seed = 12345;
    int per_round = iters / SPREAD_ROUNDS;
    for (int r = 0; r < SPREAD_ROUNDS; r++) {
        double ts = 0, th = 0;
        for (int done = 0; done < per_round; done += BLOCK) {
            ts += select_block(ssel, BLOCK, &seed);
            th += select_block(hsel, BLOCK, &seed);
        }
        int n = (per_round + BLOCK - 1) / BLOCK * BLOCK;
        printf("spread_select_ops %.1f\n", n / ts);
        printf("hash_select_ops %.1f\n", n / th);
    }
    printf("spread_rt_read_warm %.3f\n", trips_per_run(sp, ssel, 1000, SQLITE_ROW, 1));
    printf("spread_rt_update %.3f\n", trips_per_run(sp, supd, 200, SQLITE_DONE, 1));
    sqlite3_finalize(ssel);
    sqlite3_finalize(hsel);
    sqlite3_finalize(supd);
    sqlite3_close(sp);
    sqlite3_close(h);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "spread") == 0) return spread_main(argc, argv);
    if (argc > 1 && strcmp(argv[1], "scan") == 0) return scan_main(argc, argv);
    if (argc > 1 && strcmp(argv[1], "tls") == 0) return tls_main(argc, argv);
    if (argc > 1 && strcmp(argv[1], "bigcommit") == 0) return bigcommit_main(argc, argv);
    if (argc != 5) die("usage", "kvsql-bench-lib HOST PORT KEY ITERATIONS");
    const char *host = argv[1], *key = argv[3];
    int port = atoi(argv[2]), iters = atoi(argv[4]);
    if (iters < BLOCK) iters = BLOCK;
    if (kvsql_register_redis(0) != SQLITE_OK) die("kvsql_register_redis", kvsql_errmsg(NULL));
    sqlite3 *db = open_db(host, port, key), *other = open_db(host, port, key);
    exec_or_die(db, "drop table if exists t; create table t(id integer primary key, v text);"
                    "with recursive c(x) as (select 1 union all select x + 1 from c where x < 10000)"
                    " insert into t select x, printf('%032d', x) from c");
    redisContext *c = redisConnect(host, port);
    if (!c || c->err) die("connect", c ? c->errstr : "out of memory");

    sqlite3_stmt *sel, *upd, *ins;
    if (sqlite3_prepare_v2(db, "select v from t where id = ?", -1, &sel, 0) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "update t set v = 'x' || v where id = ?", -1, &upd, 0) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "insert into t values (?, 'new row')", -1, &ins, 0) != SQLITE_OK)
        die("prepare", sqlite3_errmsg(db));
    for (int i = 0; i < ROWS; i++) select_once(sel, 1 + i); /* warm: every page cached */

    double *lib = malloc(sizeof(double) * iters), *ping = malloc(sizeof(double) * iters);
    if (!lib || !ping) die("malloc", "out of memory");
    unsigned seed = 12345;
    for (int done = 0; done < iters; done += BLOCK) {
        for (int i = done; i < done + BLOCK && i < iters; i++) lib[i] = select_once(sel, 1 + (int)(rand_r(&seed) % ROWS));
        for (int i = done; i < done + BLOCK && i < iters; i++) ping[i] = ping_once(c);
    }
    printf("lib_select_p50_us %.2f\n", percentile(lib, iters, 0.50));
    printf("lib_select_p99_us %.2f\n", percentile(lib, iters, 0.99));
    printf("ping_p50_us %.2f\n", percentile(ping, iters, 0.50));
    printf("ping_p99_us %.2f\n", percentile(ping, iters, 0.99));

    printf("rt_read_warm %.3f\n", trips_per_run(db, sel, 1000, SQLITE_ROW, 1));
    printf("rt_update %.3f\n", trips_per_run(db, upd, 200, SQLITE_DONE, 1));
    printf("lib_update_p50_us %.2f\n", update_p50(upd, iters / 20 < BLOCK ? BLOCK : iters / 20));
    printf("rt_insert %.3f\n", trips_per_run(db, ins, 200, SQLITE_DONE, ROWS + 1));
    /* Another connection commits one row; the next read transaction here
     * must learn what changed. */
    sqlite3_stmt *oupd;
    if (sqlite3_prepare_v2(other, "update t set v = 'y' where id = ?", -1, &oupd, 0) != SQLITE_OK)
        die("prepare", sqlite3_errmsg(other));
    long long trips = 0;
    for (int i = 0; i < 50; i++) {
        sqlite3_bind_int(oupd, 1, 1 + i * 97);
        step_or_die(oupd, SQLITE_DONE);
        long long before = round_trips(db);
        select_once(sel, 1 + i * 97);
        trips += round_trips(db) - before;
    }
    printf("rt_read_after_other_commit %.3f\n", trips / 50.0);

    sqlite3_finalize(sel);
    sqlite3_finalize(upd);
    sqlite3_finalize(ins);
    sqlite3_finalize(oupd);
    sqlite3_close(db);
    sqlite3_close(other);
    redisFree(c);
    free(lib);
    free(ping);
    return 0;
}
