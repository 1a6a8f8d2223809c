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
 * transaction after another connection committed. Prints `name value`
 * lines that bench/run reads; exits 1 on any error, with the reason. */
#include "kvsql.h"

#include <hiredis/hiredis.h>
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

static sqlite3 *open_db(const char *host, int port, const char *key) {
    char uri[512];
    sqlite3 *db;
    snprintf(uri, sizeof(uri), "file:%s?vfs=redis&redis=%s:%d", key, host, port);
    if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL) != SQLITE_OK)
        die(uri, kvsql_errmsg(NULL));
    sqlite3_busy_timeout(db, 5000);
    return db;
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

/* Average round trips of `n` runs of a statement, each its own transaction. */
static double trips_per_run(sqlite3 *db, sqlite3_stmt *st, int n, int want, int id_base) {
    long long before = round_trips(db);
    for (int i = 0; i < n; i++) {
        sqlite3_bind_int(st, 1, id_base + i);
        step_or_die(st, want);
    }
    return (double)(round_trips(db) - before) / n;
}

int main(int argc, char **argv) {
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
