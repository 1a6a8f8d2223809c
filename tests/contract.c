/* contract.c - the store contract (src/store.h), run on every store.
 *
 * Built as build/test_contract. The same cases run on the memory store
 * (two transactions on one shared store are two connections) and, when
 * KVSQL_TEST_REDIS=host:port names a redis-server, on the redis store and
 * on the spread store (two stores on one key are two connections). Run alone by tests/run (memory
 * only) and with a server by tests/test_contract.py. Prints "ok
 * STORE/NAME" or "FAIL STORE/NAME: why" per case, then "N passed, N
 * failed". */
#include "check.h"
#include "client/config.h"
#include "client/hash/store_redis.h"
#include "client/spread/store_spread.h"
#include "kvsql.h"
#include "store.h"

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <unistd.h>

#define PSZ 512
#define MAXPAGES 16

/* ---- backends: how a case gets connections to a fresh database ---------- */

typedef struct conn {
    kvsql_store *store;
    kvsql_txn txn;
} conn;

typedef struct backend {
    const char *name;
    int (*fresh)(struct backend *b);              /* a new empty database */
    int (*connect)(struct backend *b, conn *c);   /* a connection to it */
    void (*disconnect)(struct backend *b, conn *c);
    /* The writer's lease of c is gone as if it lapsed (another writer may
     * take over); 0 when done. */
    int (*lose_lease)(struct backend *b, conn *c);
    long long (*stored_pages)(struct backend *b); /* -1: cannot tell */
    /* A URI for database `name` through this backend's VFS. */
    const char *(*uri)(struct backend *b, const char *name, char *out, size_t n);
    kvsql_store *shared;                          /* memory */
    kvsql_redis_config cfg;                       /* redis */
    redisContext *admin;                          /* redis: for checks */
    char key[64];
    int seq;
} backend;

/* memory: one store per database, shared by its connections */

static int mem_fresh(backend *b) {
    kvsql_store_free(b->shared);
    return kvsql_memory_store_new(&b->shared);
}

static int mem_connect(backend *b, conn *c) {
    memset(c, 0, sizeof(*c));
    c->store = b->shared;
    return SQLITE_OK;
}

static void mem_disconnect(backend *b, conn *c) {
    (void)b;
    if (c->txn.level != KVSQL_LOCK_NONE) c->store->m->unlock(c->store, &c->txn, KVSQL_LOCK_NONE);
}

static int mem_lose_lease(backend *b, conn *c) {
    (void)b;
    c->store->m->unlock(c->store, &c->txn, KVSQL_LOCK_READ); /* its write lock ends */
    return 0;
}

static long long mem_stored_pages(backend *b) {
    (void)b;
    return -1;
}

static const char *mem_uri(backend *b, const char *name, char *out, size_t n) {
    (void)b;
    snprintf(out, n, "file:%s?vfs=kvsql-memory", name);
    return out;
}

/* redis: one store per connection, all on one key */

static redisReply *admin_cmd(backend *b, const char *fmt, const char *arg) {
    return redisCommand(b->admin, fmt, arg);
}

static int redis_fresh(backend *b) {
    snprintf(b->key, sizeof(b->key), "contract:%d:%d", (int)getpid(), ++b->seq);
    return SQLITE_OK;
}

static int redis_connect(backend *b, conn *c) {
    memset(c, 0, sizeof(*c));
    return kvsql_redis_store_new(b->key, &b->cfg, &c->store);
}

static void redis_disconnect(backend *b, conn *c) {
    (void)b;
    if (c->txn.level != KVSQL_LOCK_NONE) c->store->m->unlock(c->store, &c->txn, KVSQL_LOCK_NONE);
    kvsql_store_free(c->store);
    c->store = NULL;
}

static int redis_lose_lease(backend *b, conn *c) {
    (void)c;
    char lease[128];
    snprintf(lease, sizeof(lease), "{%s}:lease", b->key);
    redisReply *r = admin_cmd(b, "DEL %s", lease);
    int ok = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    return ok ? 0 : -1;
}

static long long redis_stored_pages(backend *b) {
    redisReply *r = admin_cmd(b, "HLEN %s", b->key);
    long long n = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -2;
    freeReplyObject(r);
    return n;
}

static const char *redis_uri(backend *b, const char *name, char *out, size_t n) {
    snprintf(out, n, "file:%s?vfs=redis&redis=%s:%d", name, b->cfg.host, b->cfg.port);
    return out;
}

/* spread: the same server, the spread store (client/spread/); pages
 * stored: the map's page fields (all but layout, npages, psize) */

static int spread_connect(backend *b, conn *c) {
    memset(c, 0, sizeof(*c));
    return kvsql_spread_store_new(b->key, &b->cfg, &c->store);
}

static long long spread_stored_pages(backend *b) {
    redisReply *r = admin_cmd(b, "HLEN %s", b->key);
    long long n = r && r->type == REDIS_REPLY_INTEGER ? (r->integer ? r->integer - 3 : 0) : -2;
    freeReplyObject(r);
    return n;
}

static const char *spread_uri(backend *b, const char *name, char *out, size_t n) {
    snprintf(out, n, "file:%s?vfs=redis&redis=%s:%d&layout=spread", name, b->cfg.host, b->cfg.port);
    return out;
}

/* ---- pages ----------------------------------------------------------------- */

/* Page idx of a database at state `tag`: page 0 is a valid SQLite header
 * (the redis store checks it), every byte after it says (idx, tag). */
static void make_page(unsigned char *p, uint32_t idx, int tag) {
    memset(p, (int)(idx * 16 + tag) & 0xff, PSZ);
    if (idx == 0) {
        memcpy(p, "SQLite format 3", 16);
        p[16] = PSZ >> 8;
        p[17] = PSZ & 0xff;
        p[18] = p[19] = 1;
    }
}

static int page_tag_is(const unsigned char *p, uint32_t idx, int tag) {
    unsigned char want[PSZ];
    make_page(want, idx, tag);
    return memcmp(p, want, PSZ) == 0;
}

/* Commits pages [0, n) at `tag` (those in `which`, all when NULL) with
 * length n, as one batch, on c (already at WRITE). */
static int commit_pages(conn *c, uint32_t n, int tag, const int *which) {
    static unsigned char data[MAXPAGES][PSZ];
    kvsql_page_ref refs[MAXPAGES];
    uint32_t count = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (which && !which[i]) continue;
        make_page(data[i], i, tag);
        refs[count++] = (kvsql_page_ref){i, data[i]};
    }
    kvsql_batch batch = {PSZ, n, count, refs};
    return c->store->m->commit(c->store, &c->txn, &batch);
}

/* Locks c, retrying while busy: a store may end a transaction without
 * waiting for the server (the redis store sends its end script and reads
 * the reply later), so the lease is free soon after unlock, not at once. */
static int lock_soon(conn *c) {
    int rc = SQLITE_BUSY;
    for (int i = 0; i < 2000 && rc == SQLITE_BUSY; i++) {
        rc = c->store->m->lock(c->store, &c->txn);
        if (rc == SQLITE_BUSY) usleep(1000);
    }
    return rc;
}

/* A whole write transaction on a new connection: n pages at tag. */
static int write_all(backend *b, uint32_t n, int tag) {
    conn c;
    int rc = b->connect(b, &c);
    if (rc == SQLITE_OK) rc = c.store->m->begin(c.store, &c.txn);
    if (rc == SQLITE_OK) rc = lock_soon(&c);
    if (rc == SQLITE_OK) rc = commit_pages(&c, n, tag, NULL);
    if (rc != SQLITE_OK) fprintf(stderr, "  write_all: %d %s\n", rc, c.store ? c.store->m->errmsg(c.store) : "");
    b->disconnect(b, &c);
    return rc;
}

/* Reads every page of c's snapshot; 1 when each is at tag. */
static int all_pages_at(conn *c, int tag) {
    static unsigned char buf[MAXPAGES * PSZ];
    uint32_t n = c->txn.npages;
    if (n == 0 || n > MAXPAGES) return 0;
    if (c->store->m->read(c->store, &c->txn, 0, n, buf) != SQLITE_OK) return 0;
    for (uint32_t i = 0; i < n; i++)
        if (!page_tag_is(buf + (size_t)i * PSZ, i, tag)) return 0;
    return 1;
}

static backend *B;


#define BEGIN(c) CHECK((c)->store->m->begin((c)->store, &(c)->txn) == SQLITE_OK)
#define LOCK(c) CHECK(lock_soon(c) == SQLITE_OK)
#define END(c) (c)->store->m->unlock((c)->store, &(c)->txn, KVSQL_LOCK_NONE)

/* ---- the cases --------------------------------------------------------------- */

static int an_empty_database_has_no_pages(void) {
    conn a;
    CHECK(B->connect(B, &a) == SQLITE_OK);
    BEGIN(&a);
    CHECK(a.txn.level == KVSQL_LOCK_READ && a.txn.npages == 0 && a.txn.page_size == 0);
    B->disconnect(B, &a);
    return 0;
}

static int a_commit_is_seen_by_the_next_snapshot(void) {
    CHECK(write_all(B, 4, 1) == SQLITE_OK);
    conn a;
    CHECK(B->connect(B, &a) == SQLITE_OK);
    BEGIN(&a);
    CHECK(a.txn.npages == 4 && a.txn.page_size == PSZ);
    CHECK(all_pages_at(&a, 1));
    B->disconnect(B, &a);
    return 0;
}

static int the_writer_keeps_its_new_snapshot_after_commit(void) {
    conn a;
    CHECK(B->connect(B, &a) == SQLITE_OK);
    BEGIN(&a);
    LOCK(&a);
    uint64_t v = a.txn.version;
    CHECK(commit_pages(&a, 3, 1, NULL) == SQLITE_OK);
    CHECK(a.txn.level == KVSQL_LOCK_WRITE && a.txn.version == v + 1 && a.txn.npages == 3);
    CHECK(all_pages_at(&a, 1));
    CHECK(commit_pages(&a, 5, 2, NULL) == SQLITE_OK); /* a second commit in the same lock */
    CHECK(a.txn.version == v + 2 && all_pages_at(&a, 2));
    a.store->m->unlock(a.store, &a.txn, KVSQL_LOCK_READ);
    CHECK(a.txn.level == KVSQL_LOCK_READ && all_pages_at(&a, 2));
    B->disconnect(B, &a);
    return 0;
}

static int a_second_writer_gets_busy(void) {
    conn a, b;
    CHECK(B->connect(B, &a) == SQLITE_OK && B->connect(B, &b) == SQLITE_OK);
    BEGIN(&a);
    BEGIN(&b);
    LOCK(&a);
    CHECK(b.store->m->lock(b.store, &b.txn) == SQLITE_BUSY);
    CHECK(b.txn.level == KVSQL_LOCK_READ);
    END(&a);
    CHECK(lock_soon(&b) == SQLITE_OK); /* the writer left: b may write now, its snapshot is current */
    B->disconnect(B, &a);
    B->disconnect(B, &b);
    return 0;
}

static int a_writer_whose_snapshot_is_stale_gets_busy_snapshot(void) {
    CHECK(write_all(B, 2, 1) == SQLITE_OK);
    conn a;
    CHECK(B->connect(B, &a) == SQLITE_OK);
    BEGIN(&a);
    CHECK(write_all(B, 2, 2) == SQLITE_OK);
    CHECK(a.store->m->lock(a.store, &a.txn) == SQLITE_BUSY_SNAPSHOT);
    END(&a);
    BEGIN(&a); /* begin again: a new snapshot may write */
    LOCK(&a);
    CHECK(all_pages_at(&a, 2));
    B->disconnect(B, &a);
    return 0;
}

static int a_snapshot_stays_stable_while_others_commit(void) {
    static unsigned char before[8 * PSZ], after[8 * PSZ];
    CHECK(write_all(B, 8, 1) == SQLITE_OK);
    conn r;
    CHECK(B->connect(B, &r) == SQLITE_OK);
    BEGIN(&r);
    CHECK(r.store->m->read(r.store, &r.txn, 0, 4, before) == SQLITE_OK); /* half before */
    uint64_t v = r.txn.version;
    CHECK(write_all(B, 8, 2) == SQLITE_OK);
    int odd[8] = {0, 1, 0, 1, 0, 1, 0, 1};
    conn w;
    CHECK(B->connect(B, &w) == SQLITE_OK);
    BEGIN(&w);
    LOCK(&w);
    CHECK(commit_pages(&w, 8, 3, odd) == SQLITE_OK);
    CHECK(commit_pages(&w, 3, 4, NULL) == SQLITE_OK); /* shrinks */
    B->disconnect(B, &w);
    CHECK(r.store->m->read(r.store, &r.txn, 4, 4, before + 4 * PSZ) == SQLITE_OK); /* half after */
    CHECK(r.store->m->read(r.store, &r.txn, 0, 8, after) == SQLITE_OK);
    CHECK(memcmp(before, after, sizeof(after)) == 0);
    CHECK(r.txn.version == v && r.txn.npages == 8);
    CHECK(all_pages_at(&r, 1));
    END(&r);
    BEGIN(&r);
    CHECK(r.txn.npages == 3 && all_pages_at(&r, 4));
    B->disconnect(B, &r);
    return 0;
}

static int a_batch_is_seen_whole_or_not_at_all(void) {
    static unsigned char buf[8 * PSZ];
    CHECK(write_all(B, 8, 1) == SQLITE_OK);
    conn old, w, young;
    CHECK(B->connect(B, &old) == SQLITE_OK && B->connect(B, &w) == SQLITE_OK);
    BEGIN(&old);
    CHECK(old.store->m->read(old.store, &old.txn, 0, 3, buf) == SQLITE_OK);
    BEGIN(&w);
    LOCK(&w);
    CHECK(commit_pages(&w, 10, 2, NULL) == SQLITE_OK);
    END(&w);
    CHECK(all_pages_at(&old, 1) && old.txn.npages == 8); /* none of it */
    CHECK(B->connect(B, &young) == SQLITE_OK);
    BEGIN(&young);
    CHECK(young.txn.npages == 10 && all_pages_at(&young, 2)); /* all of it */
    B->disconnect(B, &old);
    B->disconnect(B, &w);
    B->disconnect(B, &young);
    return 0;
}

static int shrinking_drops_the_pages_cut_off(void) {
    CHECK(write_all(B, 8, 1) == SQLITE_OK);
    CHECK(write_all(B, 3, 2) == SQLITE_OK);
    long long stored = B->stored_pages(B);
    CHECK(stored == -1 || stored == 3);
    conn a;
    CHECK(B->connect(B, &a) == SQLITE_OK);
    BEGIN(&a);
    CHECK(a.txn.npages == 3 && all_pages_at(&a, 2));
    B->disconnect(B, &a);
    return 0;
}

static int a_commit_after_losing_the_lease_writes_nothing(void) {
    CHECK(write_all(B, 4, 1) == SQLITE_OK);
    conn a, b, c;
    CHECK(B->connect(B, &a) == SQLITE_OK && B->connect(B, &b) == SQLITE_OK);
    BEGIN(&a);
    LOCK(&a);
    CHECK(B->lose_lease(B, &a) == 0);
    BEGIN(&b);
    LOCK(&b); /* b takes over */
    CHECK(commit_pages(&b, 4, 2, NULL) == SQLITE_OK);
    END(&b);
    CHECK(commit_pages(&a, 6, 3, NULL) == SQLITE_IOERR_LOCK);
    END(&a);
    CHECK(B->connect(B, &c) == SQLITE_OK);
    BEGIN(&c);
    CHECK(c.txn.npages == 4 && all_pages_at(&c, 2));
    B->disconnect(B, &a);
    B->disconnect(B, &b);
    B->disconnect(B, &c);
    return 0;
}

static int a_failed_lock_changes_nothing(void) {
    CHECK(write_all(B, 2, 1) == SQLITE_OK);
    conn a, b;
    CHECK(B->connect(B, &a) == SQLITE_OK && B->connect(B, &b) == SQLITE_OK);
    BEGIN(&a);
    LOCK(&a);
    BEGIN(&b);
    CHECK(b.store->m->lock(b.store, &b.txn) == SQLITE_BUSY);
    CHECK(all_pages_at(&b, 1)); /* b still reads its snapshot */
    CHECK(commit_pages(&a, 2, 2, NULL) == SQLITE_OK); /* a is still the writer */
    B->disconnect(B, &a);
    B->disconnect(B, &b);
    return 0;
}

/* Through the VFS: two names that share their first 64 bytes. */
static int long_names_are_distinct_databases(void) {
    char n1[200], n2[200], u1[400], u2[400];
    memset(n1, 'x', 100);
    snprintf(n1 + 100, 100, "%d-%d-one", (int)getpid(), B->seq);
    memcpy(n2, n1, 100);
    snprintf(n2 + 100, 100, "%d-%d-two", (int)getpid(), B->seq);
    sqlite3 *d1 = NULL, *d2 = NULL;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI;
    CHECK(sqlite3_open_v2(B->uri(B, n1, u1, sizeof(u1)), &d1, flags, NULL) == SQLITE_OK);
    CHECK(sqlite3_open_v2(B->uri(B, n2, u2, sizeof(u2)), &d2, flags, NULL) == SQLITE_OK);
    CHECK_OK(d1, "create table one(a); insert into one values (1)");
    CHECK_OK(d2, "create table two(a); insert into two values (2), (2)");
    CHECK(query_int(d1, "select count(*) from sqlite_schema where name = 'two'") == 0);
    CHECK(query_int(d2, "select count(*) from sqlite_schema where name = 'one'") == 0);
    CHECK(query_int(d1, "select sum(a) from one") == 1);
    CHECK(query_int(d2, "select sum(a) from two") == 4);
    CHECK_OK(d1, "drop table one");
    CHECK_OK(d2, "drop table two");
    sqlite3_close(d1);
    sqlite3_close(d2);
    return 0;
}

static const test cases[] = {
    T(an_empty_database_has_no_pages),
    T(a_commit_is_seen_by_the_next_snapshot),
    T(the_writer_keeps_its_new_snapshot_after_commit),
    T(a_second_writer_gets_busy),
    T(a_writer_whose_snapshot_is_stale_gets_busy_snapshot),
    T(a_snapshot_stays_stable_while_others_commit),
    T(a_batch_is_seen_whole_or_not_at_all),
    T(shrinking_drops_the_pages_cut_off),
    T(a_commit_after_losing_the_lease_writes_nothing),
    T(a_failed_lock_changes_nothing),
    T(long_names_are_distinct_databases),
};

/* Runs every case on b, each on a fresh database; adds to the counts. */
static void run_cases(backend *b, int *passed, int *failed) {
    B = b;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        failure[0] = 0;
        int bad = b->fresh(b) != SQLITE_OK;
        if (bad) snprintf(failure, sizeof(failure), "cannot make a fresh database");
        else bad = cases[i].fn() != 0;
        printf("%s %s/%s%s%s\n", bad ? "FAIL" : "ok", b->name, cases[i].name, bad ? ": " : "", bad ? failure : "");
        *(bad ? failed : passed) += 1;
    }
}

static int redis_backend(backend *b, const char *addr, char *err, size_t n) {
    memset(b, 0, sizeof(*b));
    b->name = "redis";
    b->fresh = redis_fresh;
    b->connect = redis_connect;
    b->disconnect = redis_disconnect;
    b->lose_lease = redis_lose_lease;
    b->stored_pages = redis_stored_pages;
    b->uri = redis_uri;
    kvsql_redis_config_defaults(&b->cfg);
    if (kvsql_redis_config_address(&b->cfg, addr, err, n) != 0) return -1;
    b->admin = redisConnect(b->cfg.host, b->cfg.port);
    if (!b->admin || b->admin->err) {
        snprintf(err, n, "cannot connect to %s", addr);
        return -1;
    }
    return kvsql_register_redis(0) == SQLITE_OK ? 0 : -1;
}

int main(void) {
    int passed = 0, failed = 0;
    if (kvsql_register() != SQLITE_OK) return 2;
    backend mem;
    memset(&mem, 0, sizeof(mem));
    mem.name = "memory";
    mem.fresh = mem_fresh;
    mem.connect = mem_connect;
    mem.disconnect = mem_disconnect;
    mem.lose_lease = mem_lose_lease;
    mem.stored_pages = mem_stored_pages;
    mem.uri = mem_uri;
    run_cases(&mem, &passed, &failed);
    kvsql_store_free(mem.shared);
    const char *addr = getenv("KVSQL_TEST_REDIS");
    if (addr && *addr) {
        backend rb;
        char err[300] = "";
        if (redis_backend(&rb, addr, err, sizeof(err)) == 0) run_cases(&rb, &passed, &failed);
        else {
            printf("FAIL redis: %s\n", err);
            failed++;
        }
        if (rb.admin) redisFree(rb.admin);
        if (redis_backend(&rb, addr, err, sizeof(err)) == 0) {
            rb.name = "spread";
            rb.connect = spread_connect;
            rb.stored_pages = spread_stored_pages;
            rb.uri = spread_uri;
            rb.seq = 1000; /* keys apart from the redis store's databases */
            run_cases(&rb, &passed, &failed);
        }
        if (rb.admin) redisFree(rb.admin);
    } else {
        printf("# redis store skipped: KVSQL_TEST_REDIS=host:port is not set\n");
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
