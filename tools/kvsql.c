/* kvsql.c - the `kvsql` command: move SQLite databases in and out of Redis.
 *
 * Run by users (`make` builds build/kvsql); tested by tests/test_cli.py.
 *
 *   kvsql import [--replace] [--layout spread] FILE URL
 *                                        an SQLite file (WAL mode included) into a key
 *   kvsql export [--replace] URL FILE    a key into an SQLite file (FILE is replaced whole or kept)
 *   kvsql check URL                      the format and PRAGMA integrity_check
 *   kvsql shell URL [SQL ...]            the sqlite3 shell on the database
 *   kvsql ls SERVER                      the databases of a server or cluster
 *   kvsql gc URL?layout=spread           a spread database's page copies no reader needs
 *   kvsql rm [--force] URL               a database and all its keys
 *   kvsql cp [--replace] URL URL         a database to another key or server
 *   kvsql mv [--replace] URL URL         the same, then the source removed
 *   kvsql version
 *
 * URL is redis://[user[:password]@]host[:port][/db]/KEY[?name=value&...]
 * (KEY %XX-escaped where needed; a unix socket as redis:///path/to.sock/KEY;
 * rediss:// for TLS; the query takes the library's parameters, e.g.
 * tls_ca=, docs/LIBRARY.md). Everything
 * goes through the library's `redis` VFS (src/client/, linked in), so it
 * works on any Redis, with or without the module, and is safe next to
 * other clients: an import is one transaction under the writer lease.
 * Imports, exports and copies show their progress on a terminal (stderr a
 * tty) and say nothing else while they work. */
#include "client/config.h"
#include "kvsql.h"
#include "kvsql_keys.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define KVSQL_CLI_VERSION "1.1.0"

static void usage(FILE *out) {
    fprintf(out,
            "usage: kvsql import [--replace] FILE URL   copy an SQLite file (any journal mode) into a key\n"
            "             (--layout spread: as a database spread over many keys, docs/FORMAT.md)\n"
            "       kvsql export [--replace] URL FILE   copy a key into an SQLite file\n"
            "       kvsql check URL                     check the key's format and integrity\n"
            "       kvsql shell URL [SQL ...]           the sqlite3 shell on the key (SQL: run it and exit)\n"
            "       kvsql ls SERVER                     list the databases: key, layout, pages, size, version\n"
            "       kvsql gc URL?layout=spread          delete a spread database's page copies no reader needs\n"
            "       kvsql rm [--force] URL              remove a database and all its keys (--force: even while\n"
            "                                           a writer holds its lease)\n"
            "       kvsql cp [--replace] URL URL        copy a database (to another key, db or server)\n"
            "       kvsql mv [--replace] URL URL        copy it, then remove the source\n"
            "       kvsql version\n"
            "URL: redis://[user[:password]@]host[:port][/db]/KEY[?name=value&...], or redis:///path/to.sock/KEY\n"
            "     (rediss:// for TLS; the query: tls_ca=, tls_cert=, tls_key=, tls_server_name=, ...)\n"
            "SERVER: redis://[user[:password]@]host[:port][/db][?name=value&...] (any node of a cluster)\n"
            "     (KVSQL_PASSWORD is used when the URL has no password)\n");
}

static int fail(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "kvsql: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    return 1;
}

/* ---- URL: the server part goes to the library, the key stays here ---- */

typedef struct target {
    char server[4096];      /* redis[s]://...[?query]: KVSQL_DEFAULT for the library */
    kvsql_redis_config cfg; /* the same, parsed (with KVSQL_PASSWORD) */
    char key[65536];        /* decoded: the redis VFS opens keys this long, less 8 (src/vfs.c) */
} target;

/* Parses a server URL (redis://[user[:password]@]host[:port][/db]) into
 * c, with KVSQL_PASSWORD when it has no password. 0, or 1 with a message. */
static int parse_server(const char *url, kvsql_redis_config *c) {
    char err[512];
    kvsql_redis_config_defaults(c);
    if (kvsql_redis_config_from_url(c, url, err, sizeof(err)) != 0) return fail("%s: %s", url, err);
    if (!c->password[0] && getenv("KVSQL_PASSWORD"))
        snprintf(c->password, sizeof(c->password), "%s", getenv("KVSQL_PASSWORD"));
    return 0;
}

/* Splits URL into server (with the query) and key; the server part is
 * checked by the library's own parser (client/config.c) into t->cfg. 0, or 1 with a
 * message. */
static int parse_url(const char *url, target *t) {
    size_t prefix = strncmp(url, "rediss://", 9) == 0 ? 9 : 8;
    const char *q = strchr(url, '?'), *end = q ? q : url + strlen(url), *slash = end;
    while (slash > url && slash[-1] != '/') slash--;
    slash--; /* the last '/' before the query */
    if ((strncmp(url, "redis://", 8) != 0 && prefix != 9) || slash < url + prefix || slash == url + prefix)
        return fail("%s: expected redis://[user[:password]@]host[:port][/db]/KEY[?name=value&...] (rediss:// for TLS)",
                    url, NULL);
    if (slash + 1 == end) return fail("%s: the URL names no key (redis://host:port/KEY)", url, NULL);
    size_t n = (size_t)(slash - url), nq = q ? strlen(q) : 0, nk = (size_t)(end - slash - 1);
    if (n + nq >= sizeof(t->server) || nk >= sizeof(t->key)) return fail("%s: the URL is too long", url, NULL);
    memcpy(t->server, url, n);
    memcpy(t->server + n, q ? q : "", nq + 1);
    if (kvsql_url_decode(t->key, sizeof(t->key), slash + 1, nk) != 0)
        return fail("%s: the key has a bad %%XX escape, a %%00, or is too long", url, NULL);
    return parse_server(t->server, &t->cfg);
}

/* Registers the redis VFS with t's server as its default: the databases
 * opened next are on that server. */
static int use_server(const target *t) {
    if (setenv("KVSQL_DEFAULT", t->server, 1) != 0) return fail("cannot set KVSQL_DEFAULT: %s", strerror(errno), 0);
    if (kvsql_register_redis(0) != SQLITE_OK) return fail("cannot register the redis VFS: %s", kvsql_errmsg(NULL), 0);
    return 0;
}

/* ---- databases --------------------------------------------------------- */

/* kvsql's reason for db's last error when it has one, else SQLite's. */
static const char *db_error(sqlite3 *db) {
    const char *why = kvsql_errmsg(db);
    return why[0] ? why : sqlite3_errmsg(db);
}

/* Opens the key through the redis VFS (its name is the key, verbatim),
 * on t's server. */
static int open_key(const target *t, int flags, sqlite3 **db) {
    if (use_server(t)) return 1;
    if (sqlite3_open_v2(t->key, db, flags, "redis") == SQLITE_OK) return 0;
    const char *why = db_error(*db);
    if (strncmp(why, t->key, strlen(t->key)) == 0) fail("key %s", why, NULL); /* it names the key already */
    else fail("key %s: %s", t->key, why);
    sqlite3_close(*db);
    *db = NULL;
    return 1;
}

/* One integer from a PRAGMA; -1 with a message naming `what` on error. */
static sqlite3_int64 pragma_int(sqlite3 *db, const char *sql, const char *what) {
    sqlite3_stmt *st = NULL;
    sqlite3_int64 v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    else {
        const char *why = db_error(db);
        if (strncmp(why, "key ", 4) == 0) fail("%s", why, NULL); /* it names the key already */
        else fail("%s: %s", what, why);
    }
    sqlite3_finalize(st);
    return v;
}

/* The pages of a key's database: 0 when the key is missing or empty. */
static sqlite3_int64 key_pages(sqlite3 *db, const target *t) {
    char what[200];
    snprintf(what, sizeof(what), "key %.150s", t->key);
    return pragma_int(db, "PRAGMA page_count", what);
}

/* ---- progress: on a terminal only --------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

typedef struct progress {
    int on;          /* stderr is a terminal */
    double start, shown;
    const char *what;
} progress;

static void progress_start(progress *p, const char *what) {
    p->on = isatty(STDERR_FILENO);
    p->start = now_s();
    p->shown = 0;
    p->what = what;
}

/* "done/total pages, rate, time left", at most 5 times a second. */
static void progress_show(progress *p, long long done, long long total, int last) {
    double t = now_s();
    if (!p->on || (!last && t - p->shown < 0.2)) return;
    p->shown = t;
    double rate = done / (t - p->start > 1e-3 ? t - p->start : 1e-3);
    long long left = rate > 0 ? (long long)((total - done) / rate + 0.5) : 0;
    fprintf(stderr, "\r%s: %lld/%lld pages, %.0f pages/s, %llds left   ", p->what, done, total, rate, left);
    if (last) fputc('\n', stderr);
    fflush(stderr);
}

/* Pages copied per step: small enough for a lively progress line. */
#define COPY_STEP_PAGES 256

/* Copies every page of src into dst (replacing what dst held) as one
 * transaction of dst, from one snapshot of src (a read transaction held
 * across the steps). */
static int copy_database(sqlite3 *src, sqlite3 *dst, const char *dst_name) {
    if (sqlite3_exec(src, "BEGIN; SELECT count(*) FROM sqlite_schema", NULL, NULL, NULL) != SQLITE_OK)
        return fail("%s: copy failed: %s", dst_name, db_error(src));
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
    int rc = SQLITE_ERROR;
    if (b) {
        progress p;
        progress_start(&p, dst_name);
        while ((rc = sqlite3_backup_step(b, COPY_STEP_PAGES)) == SQLITE_OK) {
            int remaining = sqlite3_backup_remaining(b), total = sqlite3_backup_pagecount(b);
            progress_show(&p, total - remaining, total, 0);
            if (p.on && remaining <= COPY_STEP_PAGES) /* the next step ends with the commit */
                fprintf(stderr, "\r%s: %d/%d pages, committing...            ", dst_name, total - remaining, total);
        }
        if (rc == SQLITE_DONE) progress_show(&p, sqlite3_backup_pagecount(b), sqlite3_backup_pagecount(b), 1);
        else if (p.on && p.shown > 0) fputc('\n', stderr);
        sqlite3_backup_finish(b);
    }
    sqlite3_exec(src, "COMMIT", NULL, NULL, NULL);
    if (rc == SQLITE_DONE) return 0;
    const char *why = db_error(dst);
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) why = "another client is writing it; try again";
    else if (!kvsql_errmsg(dst)[0] && kvsql_errmsg(src)[0]) why = kvsql_errmsg(src); /* the source failed */
    return fail("%s: copy failed: %s", dst_name, why);
}

/* ---- files --------------------------------------------------------------- */

/* Checks that path starts with an SQLite header; *wal: it is in WAL mode.
 * 0, or 1 with one message. */
static int check_source_header(const char *path, int *wal) {
    static const char magic[16] = "SQLite format 3";
    unsigned char h[100];
    FILE *f = fopen(path, "rb");
    if (!f) return fail("%s: %s", path, strerror(errno));
    size_t n = fread(h, 1, sizeof(h), f);
    fclose(f);
    if (n == 0) return fail("%s is empty (0 bytes): not an SQLite database; nothing was imported", path, NULL);
    if (n < sizeof(h) || memcmp(h, magic, sizeof(magic)) != 0)
        return fail("%s is not an SQLite database (no SQLite header); nothing was imported", path, NULL);
    *wal = h[18] == 2 || h[19] == 2;
    return 0;
}

/* The source file, read-only with SQLite's own VFS; a WAL-mode file comes
 * back as an in-memory copy marked rollback-journal (the kvsql format has
 * no WAL), with what its -wal file held. */
static int open_source(const char *path, sqlite3 **db) {
    int wal = 0;
    if (check_source_header(path, &wal)) return 1;
    if (sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY, "unix") != SQLITE_OK ||
        sqlite3_exec(*db, "PRAGMA schema_version", NULL, NULL, NULL) != SQLITE_OK) {
        fail("%s: not a readable SQLite database (%s)", path, sqlite3_errmsg(*db));
        sqlite3_close(*db);
        *db = NULL;
        return 1;
    }
    if (!wal) return 0;
    sqlite3_int64 n = 0;
    unsigned char *bytes = sqlite3_serialize(*db, "main", &n, 0);
    sqlite3_close(*db);
    *db = NULL;
    if (!bytes || n < 100) {
        sqlite3_free(bytes);
        return fail("%s: cannot read the WAL-mode database", path, NULL);
    }
    bytes[18] = bytes[19] = 1; /* rollback journal */
    if (sqlite3_open_v2(":memory:", db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
        sqlite3_deserialize(*db, "main", bytes, n, n, SQLITE_DESERIALIZE_FREEONCLOSE | SQLITE_DESERIALIZE_READONLY) !=
            SQLITE_OK) {
        sqlite3_close(*db);
        return fail("%s: out of memory converting the WAL-mode database", path, NULL);
    }
    return 0;
}

/* A file beside an SQLite file that belongs to it: a hot journal or a WAL
 * with content means FILE is in use or was not closed cleanly, and a
 * new FILE would be mixed with it. */
static int has_companion(const char *file) {
    static const char *const suffixes[] = {"-journal", "-wal"};
    char path[PATH_MAX];
    struct stat st;
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s%s", file, suffixes[i]);
        if (stat(path, &st) == 0 && st.st_size > 0) return 1;
    }
    return 0;
}

/* fsync of a file or directory by path; -1 with errno. */
static int sync_path(const char *path, int flags) {
    int fd = open(path, flags);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* Moves the finished temporary file tmp to file (over it with replace,
 * else only if file still does not exist), then syncs the directory. */
static int publish_file(const char *tmp, const char *file, int replace) {
    if (sync_path(tmp, O_RDONLY) != 0) return fail("%s: fsync: %s", tmp, strerror(errno));
    if (replace ? rename(tmp, file) != 0 : link(tmp, file) != 0)
        return fail("%s: %s", file, strerror(errno));
    if (!replace) unlink(tmp);
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", file);
    if (sync_path(dirname(dir), O_RDONLY | O_DIRECTORY) != 0)
        return fail("%s: fsync of its directory: %s", file, strerror(errno));
    return 0;
}

/* Writes the database of src into file: into a temporary file beside it,
 * synced, then renamed over it. A failure at any point leaves file as it
 * was (the old copy, or none) and no temporary file. */
static int export_file(sqlite3 *src, const char *file, int replace) {
    char tmp[PATH_MAX], journal[PATH_MAX + 8];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.kvsql-XXXXXX", file) >= sizeof(tmp))
        return fail("%s: the path is too long", file, NULL);
    int fd = mkstemp(tmp);
    if (fd < 0) return fail("%s: cannot make a temporary file beside it: %s", file, strerror(errno));
    close(fd);
    snprintf(journal, sizeof(journal), "%s-journal", tmp);
    sqlite3 *dst = NULL;
    int rc = 1;
    if (sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE, "unix") != SQLITE_OK)
        fail("%s: %s", tmp, sqlite3_errmsg(dst));
    else rc = copy_database(src, dst, file);
    if (sqlite3_close(dst) != SQLITE_OK && rc == 0) rc = fail("%s: closing: %s", tmp, sqlite3_errmsg(dst));
    if (rc == 0) rc = publish_file(tmp, file, replace);
    if (rc != 0) {
        unlink(tmp);
        unlink(journal);
    }
    return rc;
}

/* ---- commands ----------------------------------------------------------- */

static int cmd_import(const char *file, const char *url, int replace) {
    target *t = malloc(sizeof(target));
    sqlite3 *src = NULL, *dst = NULL;
    int rc = !t || parse_url(url, t) || open_source(file, &src);
    if (!rc) rc = open_key(t, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &dst);
    sqlite3_int64 pages = rc ? -1 : key_pages(dst, t);
    if (pages < 0) rc = 1;
    else if (pages > 0 && !replace)
        rc = fail("key %s already holds a database: add --replace to overwrite it", t->key, NULL);
    else rc = copy_database(src, dst, t->key);
    if (rc == 0) printf("imported %s into %s\n", file, t->key);
    sqlite3_close(src);
    sqlite3_close(dst);
    free(t);
    return rc;
}

static int cmd_export(const char *url, const char *file, int replace) {
    target *t = malloc(sizeof(target));
    sqlite3 *src = NULL;
    int rc = !t || parse_url(url, t);
    if (!rc && access(file, F_OK) == 0 && !replace) rc = fail("%s exists: add --replace to overwrite it", file, NULL);
    if (!rc && has_companion(file))
        rc = fail("%s has a -journal or -wal file: it is open or was not closed cleanly; nothing was written", file,
                  NULL);
    if (!rc) rc = open_key(t, SQLITE_OPEN_READONLY, &src);
    if (!rc) {
        sqlite3_int64 pages = key_pages(src, t);
        if (pages == 0) rc = fail("key %s holds no database", t->key, NULL);
        else if (pages < 0) rc = 1;
        else rc = export_file(src, file, replace);
    }
    if (rc == 0) printf("exported %s to %s\n", t->key, file);
    sqlite3_close(src);
    free(t);
    return rc;
}

/* Adds layout=spread to t's URL query (the server part the library
 * opens with), unless the URL chose a layout itself. 0, or 1 with a
 * message. */
static int default_spread(target *t) {
    if (t->cfg.layout[0]) return 0;
    size_t n = strlen(t->server);
    const char *add = strchr(t->server, '?') ? "&layout=spread" : "?layout=spread";
    if (n + strlen(add) >= sizeof(t->server)) return fail("%s: the URL is too long", t->server, NULL);
    memcpy(t->server + n, add, strlen(add) + 1);
    return parse_server(t->server, &t->cfg);
}

/* cp and mv: src's database into dst (another key, db or server), as one
 * transaction of dst. A spread source is opened as one, and makes the
 * copy spread too unless dst's URL says layout=. *version: src's version
 * before the copy (for mv). */
static int copy_key(target *s, target *d, int replace, char *version, size_t vlen) {
    char err[512];
    int spread = 0;
    if (strcmp(s->server, d->server) == 0 && strcmp(s->key, d->key) == 0)
        return fail("%s: the source and the destination are the same database", s->key, NULL);
    int held = keys_state(&s->cfg, s->key, version, vlen, &spread, err, sizeof(err));
    if (held < 0) return fail("key %s: %s", s->key, err);
    if (spread && (default_spread(s) || default_spread(d))) return 1;
    sqlite3 *src = NULL, *dst = NULL;
    int rc = open_key(s, SQLITE_OPEN_READONLY, &src) || open_key(d, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &dst);
    sqlite3_int64 pages = rc ? -1 : key_pages(dst, d);
    if (pages < 0) rc = 1;
    else if (pages > 0 && !replace)
        rc = fail("key %s already holds a database: add --replace to overwrite it", d->key, NULL);
    else rc = copy_database(src, dst, d->key);
    sqlite3_close(src);
    sqlite3_close(dst);
    return rc;
}

static int cmd_cp(const char *from, const char *to, int replace, int move) {
    target *s = malloc(sizeof(target)), *d = malloc(sizeof(target));
    char version[32], err[512];
    int spread;
    int rc = !s || !d || parse_url(from, s) || parse_url(to, d);
    if (!rc && move && keys_state(&s->cfg, s->key, version, sizeof(version), &spread, err, sizeof(err)) > 0)
        rc = fail("key %s: a writer holds its lease (is writing it): try again later", s->key, NULL);
    if (!rc) rc = copy_key(s, d, replace, version, sizeof(version));
    if (!rc && move) {
        long n = keys_remove(&s->cfg, s->key, 0, version, err, sizeof(err));
        if (n < 0) rc = fail("copied to %s, but the source was kept: %s", d->key, err);
    }
    if (rc == 0) printf("%s %s to %s\n", move ? "moved" : "copied", s->key, d->key);
    free(s);
    free(d);
    return rc;
}

static int cmd_rm(const char *url, int force) {
    target *t = malloc(sizeof(target));
    char err[512];
    int rc = !t || parse_url(url, t);
    if (!rc) {
        long n = keys_remove(&t->cfg, t->key, force, NULL, err, sizeof(err));
        if (n < 0) rc = fail("key %s: %s", t->key, err);
        else if (n == 0) rc = fail("key %s: no database there", t->key, NULL);
        else printf("removed %s (%ld keys)\n", t->key, n);
    }
    free(t);
    return rc;
}

static int cmd_ls(const char *url) {
    kvsql_redis_config cfg;
    char err[512];
    if (parse_server(url, &cfg)) return 1;
    if (keys_list(&cfg, stdout, err, sizeof(err)) < 0) return fail("%s: %s", url, err);
    return 0;
}

/* kvsql gc URL: the page copies of a spread database (URL with
 * ?layout=spread) that no reader can need any more are deleted, in
 * bounded steps (client/spread/store_spread.c). */
static int cmd_gc(const char *url) {
    static target t;
    sqlite3 *db = NULL;
    if (parse_url(url, &t) || open_key(&t, SQLITE_OPEN_READWRITE, &db)) return 1;
    char what[200];
    snprintf(what, sizeof(what), "key %.150s", t.key);
    sqlite3_int64 n = pragma_int(db, "SELECT kvsql_gc()", what);
    sqlite3_close(db);
    if (n < 0) return 1;
    printf("%s: %lld page copies collected\n", t.key, (long long)n);
    return 0;
}

static int cmd_check(const char *url) {
    static target t;
    sqlite3 *db = NULL;
    if (parse_url(url, &t) || open_key(&t, SQLITE_OPEN_READONLY, &db)) return 1;
    sqlite3_int64 pages = key_pages(db, &t);
    int rc = 1;
    if (pages == 0) fail("key %s holds no database", t.key, NULL);
    if (pages > 0) {
        sqlite3_stmt *st = NULL;
        int problems = 0;
        if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) != SQLITE_OK) problems = -1;
        while (problems >= 0 && sqlite3_step(st) == SQLITE_ROW) {
            const char *line = (const char *)sqlite3_column_text(st, 0);
            if (line && strcmp(line, "ok") == 0) continue;
            printf("%s: %s\n", t.key, line ? line : "?");
            problems++;
        }
        if (sqlite3_finalize(st) != SQLITE_OK || problems < 0)
            fail("key %s: %s", t.key, db_error(db));
        else if (problems == 0) {
            printf("%s: ok (%lld pages of %lld bytes)\n", t.key, (long long)pages,
                   (long long)pragma_int(db, "PRAGMA page_size", t.key));
            rc = 0;
        }
    }
    sqlite3_close(db);
    return rc;
}

/* libkvsql.so: $KVSQL_LIBRARY, else beside this program. */
static int find_library(char *out, size_t n) {
    const char *env = getenv("KVSQL_LIBRARY");
    if (env && *env) {
        snprintf(out, n, "%s", env);
        return access(out, R_OK) == 0 ? 0 : fail("KVSQL_LIBRARY=%s: %s", env, strerror(errno));
    }
    char exe[2048];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (len <= 0) return fail("cannot find this program's directory: set KVSQL_LIBRARY", NULL, NULL);
    exe[len] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    if ((size_t)snprintf(out, n, "%s/libkvsql.so", exe) >= n) return fail("the path of %s is too long", exe, NULL);
    return access(out, R_OK) == 0 ? 0 : fail("%s not found: set KVSQL_LIBRARY to libkvsql.so", out, NULL);
}

/* file:KEY?vfs=redis with every byte of KEY but [A-Za-z0-9._~-] escaped. */
static void key_uri(const char *key, char *out, size_t n) {
    size_t o = (size_t)snprintf(out, n, ".open 'file:");
    for (const unsigned char *p = (const unsigned char *)key; *p && o + 4 < n; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("._~-", *p))
            out[o++] = (char)*p;
        else o += (size_t)snprintf(out + o, n - o, "%%%02X", *p);
    }
    snprintf(out + o, n - o, "?vfs=redis'");
}

static int cmd_shell(const char *url, char **sql, int nsql) {
    static target t;
    static char lib[4096], load[4200], open[3 * sizeof(t.key) + 40];
    if (parse_url(url, &t) || find_library(lib, sizeof(lib))) return 1;
    if (setenv("KVSQL_DEFAULT", t.server, 1) != 0) return fail("cannot set KVSQL_DEFAULT", NULL, NULL);
    snprintf(load, sizeof(load), ".load '%s'", lib);
    key_uri(t.key, open, sizeof(open));
    char **argv = calloc((size_t)nsql + 8, sizeof(char *));
    if (!argv) return fail("out of memory", NULL, NULL);
    int a = 0;
    argv[a++] = "sqlite3";
    argv[a++] = "-cmd";
    argv[a++] = load;
    argv[a++] = "-cmd";
    argv[a++] = open;
    argv[a++] = ":memory:"; /* the shell's first database, before .load */
    for (int i = 0; i < nsql; i++) argv[a++] = sql[i];
    execvp("sqlite3", argv);
    free(argv);
    return fail("cannot run sqlite3: %s (install the sqlite3 package)", strerror(errno), NULL);
}

/* Takes "--layout NAME" out of argv (import only): the URL gets the
 * library's parameter layout=NAME. 0, or -1 when it has no NAME. */
static int take_layout(int *argc, char **argv, const char **layout) {
    for (int i = 2; i < *argc; i++) {
        if (strcmp(argv[i], "--layout") != 0) continue;
        if (i + 1 >= *argc) return -1;
        *layout = argv[i + 1];
        for (int j = i; j + 2 <= *argc; j++) argv[j] = argv[j + 2];
        *argc -= 2;
        return 0;
    }
    return 0;
}

static int cmd_import_layout(const char *file, const char *url, int replace, const char *layout) {
    if (!layout) return cmd_import(file, url, replace);
    size_t n = strlen(url) + strlen(layout) + 16;
    char *u = malloc(n);
    if (!u) return fail("out of memory", NULL, NULL);
    snprintf(u, n, "%s%slayout=%s", url, strchr(url, '?') ? "&" : "?", layout);
    int rc = cmd_import(file, u, replace);
    free(u);
    return rc;
}

int main(int argc, char **argv) {
    const char *layout = NULL;
    if (argc < 2 || (strcmp(argv[1], "import") == 0 && take_layout(&argc, argv, &layout) != 0)) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    int replace = argc > 2 && strcmp(argv[2], "--replace") == 0;
    int force = argc > 2 && strcmp(argv[2], "--force") == 0;
    char **rest = argv + 2 + replace + force;
    int nrest = argc - 2 - replace - force;
    if (strcmp(cmd, "import") == 0 && nrest == 2 && !force) return cmd_import_layout(rest[0], rest[1], replace, layout);
    if (strcmp(cmd, "export") == 0 && nrest == 2 && !force) return cmd_export(rest[0], rest[1], replace);
    if (strcmp(cmd, "cp") == 0 && nrest == 2 && !force) return cmd_cp(rest[0], rest[1], replace, 0);
    if (strcmp(cmd, "mv") == 0 && nrest == 2 && !force) return cmd_cp(rest[0], rest[1], replace, 1);
    if (strcmp(cmd, "rm") == 0 && nrest == 1 && !replace) return cmd_rm(rest[0], force);
    if (strcmp(cmd, "ls") == 0 && argc == 3) return cmd_ls(argv[2]);
    if (strcmp(cmd, "check") == 0 && argc == 3) return cmd_check(argv[2]);
    if (strcmp(cmd, "gc") == 0 && argc == 3) return cmd_gc(argv[2]);
    if (strcmp(cmd, "shell") == 0 && argc >= 3) return cmd_shell(argv[2], argv + 3, argc - 3);
    if (strcmp(cmd, "version") == 0 && argc == 2) {
        printf("kvsql %s (SQLite %s)\n", KVSQL_CLI_VERSION, sqlite3_libversion());
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 2;
}
