/* kvsql.c - the `kvsql` command: move SQLite databases in and out of Redis.
 *
 * Run by users (`make` builds build/kvsql); tested by tests/test_cli.py.
 *
 *   kvsql import [--replace] FILE URL    an SQLite file (WAL mode included) into a key
 *   kvsql export [--replace] URL FILE    a key into an SQLite file
 *   kvsql check URL                      the format and PRAGMA integrity_check
 *   kvsql shell URL [SQL ...]            the sqlite3 shell on the database
 *   kvsql version
 *
 * URL is redis://[user[:password]@]host[:port][/db]/KEY[?name=value&...]
 * (KEY %XX-escaped where needed; a unix socket as redis:///path/to.sock/KEY;
 * rediss:// for TLS; the query takes the library's parameters, e.g.
 * tls_ca=, docs/LIBRARY.md). Everything
 * goes through the library's `redis` VFS (src/client/, linked in), so it
 * works on any Redis, with or without the module, and is safe next to
 * other clients: an import is one transaction under the writer lease. */
#include "client/config.h"
#include "kvsql.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KVSQL_CLI_VERSION "1.1.0"

static void usage(FILE *out) {
    fprintf(out,
            "usage: kvsql import [--replace] FILE URL   copy an SQLite file (any journal mode) into a key\n"
            "       kvsql export [--replace] URL FILE   copy a key into an SQLite file\n"
            "       kvsql check URL                     check the key's format and integrity\n"
            "       kvsql shell URL [SQL ...]           the sqlite3 shell on the key (SQL: run it and exit)\n"
            "       kvsql version\n"
            "URL: redis://[user[:password]@]host[:port][/db]/KEY[?name=value&...], or redis:///path/to.sock/KEY\n"
            "     (rediss:// for TLS; the query: tls_ca=, tls_cert=, tls_key=, tls_server_name=, ...)\n"
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
    char server[4096]; /* redis[s]://...[?query]: KVSQL_DEFAULT for the library */
    char key[4096];    /* decoded */
} target;

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes %XX escapes; -1 on a bad escape or when it does not fit. */
static int percent_decode(char *dst, size_t n, const char *src) {
    size_t o = 0;
    for (const char *p = src; *p; p++) {
        int c = (unsigned char)*p;
        if (c == '%') {
            int hi = hex_value(p[1]), lo = hi < 0 ? -1 : hex_value(p[2]);
            if (lo < 0) return -1;
            c = hi * 16 + lo;
            p += 2;
        }
        if (c == 0 || o + 1 >= n) return -1;
        dst[o++] = (char)c;
    }
    dst[o] = 0;
    return 0;
}

/* Splits URL into server (with the query) and key; the server part is
 * checked by the library's own parser (client/config.c). 0, or 1 with a
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
    char key[sizeof(t->key)];
    if (n + nq >= sizeof(t->server) || nk >= sizeof(key)) return fail("%s: the URL is too long", url, NULL);
    memcpy(t->server, url, n);
    memcpy(t->server + n, q ? q : "", nq + 1);
    memcpy(key, slash + 1, nk);
    key[nk] = 0;
    if (percent_decode(t->key, sizeof(t->key), key) != 0)
        return fail("%s: the key has a bad %%XX escape, a %%00, or is too long", url, NULL);
    kvsql_redis_config c;
    char err[512];
    kvsql_redis_config_defaults(&c);
    if (kvsql_redis_config_from_url(&c, t->server, err, sizeof(err)) != 0) return fail("%s: %s", url, err);
    return 0;
}

/* Registers the redis VFS with URL's server as its default. */
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

/* Opens the key through the redis VFS (its name is the key, verbatim). */
static int open_key(const target *t, int flags, sqlite3 **db) {
    if (sqlite3_open_v2(t->key, db, flags, "redis") == SQLITE_OK) return 0;
    fail("key %s: %s", t->key, db_error(*db));
    sqlite3_close(*db);
    *db = NULL;
    return 1;
}

/* One integer from a PRAGMA; -1 with a message on error. */
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
    char what[4200];
    snprintf(what, sizeof(what), "key %s", t->key);
    return pragma_int(db, "PRAGMA page_count", what);
}

/* Copies every page of src into dst (replacing what dst held) as one
 * transaction. */
static int copy_database(sqlite3 *src, sqlite3 *dst, const char *dst_name) {
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
    if (!b) return fail("%s: %s", dst_name, db_error(dst));
    int rc = sqlite3_backup_step(b, -1);
    sqlite3_backup_finish(b);
    if (rc == SQLITE_DONE) return 0;
    const char *why = db_error(dst);
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) why = "another client is writing it; try again";
    return fail("%s: copy failed: %s", dst_name, why);
}

/* Bytes 18-19 of the header: 2 when the file is in WAL mode. */
static int file_is_wal(const char *path) {
    unsigned char h[100];
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(h, 1, sizeof(h), f);
    fclose(f);
    return n == sizeof(h) && (h[18] == 2 || h[19] == 2);
}

/* The source file, read-only with SQLite's own VFS; a WAL-mode file comes
 * back as an in-memory copy marked rollback-journal (the kvsql format has
 * no WAL), with what its -wal file held. */
static int open_source(const char *path, sqlite3 **db) {
    if (access(path, R_OK) != 0) return fail("%s: %s", path, strerror(errno));
    if (sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY, "unix") != SQLITE_OK ||
        pragma_int(*db, "PRAGMA schema_version", path) < 0) {
        if (*db) fail("%s: not a readable SQLite database (%s)", path, sqlite3_errmsg(*db));
        sqlite3_close(*db);
        return 1;
    }
    if (!file_is_wal(path)) return 0;
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

/* ---- commands ----------------------------------------------------------- */

static int cmd_import(const char *file, const char *url, int replace) {
    target t;
    sqlite3 *src = NULL, *dst = NULL;
    if (parse_url(url, &t) || use_server(&t) || open_source(file, &src)) return 1;
    int rc = open_key(&t, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &dst);
    sqlite3_int64 pages = rc ? -1 : key_pages(dst, &t);
    if (pages < 0) rc = 1;
    else if (pages > 0 && !replace)
        rc = fail("key %s already holds a database: add --replace to overwrite it", t.key, NULL);
    else rc = copy_database(src, dst, t.key);
    if (rc == 0) printf("imported %s into %s\n", file, t.key);
    sqlite3_close(src);
    sqlite3_close(dst);
    return rc;
}

static int cmd_export(const char *url, const char *file, int replace) {
    target t;
    sqlite3 *src = NULL, *dst = NULL;
    if (parse_url(url, &t) || use_server(&t)) return 1;
    if (access(file, F_OK) == 0 && !replace) return fail("%s exists: add --replace to overwrite it", file, NULL);
    if (open_key(&t, SQLITE_OPEN_READONLY, &src)) return 1;
    sqlite3_int64 pages = key_pages(src, &t);
    int rc = 1;
    if (pages == 0) fail("key %s holds no database", t.key, NULL);
    else if (pages > 0) {
        static const char *const suffixes[] = {"", "-journal", "-wal", "-shm"};
        char path[4200];
        for (int i = 0; replace && i < 4; i++) {
            snprintf(path, sizeof(path), "%s%s", file, suffixes[i]);
            unlink(path);
        }
        if (sqlite3_open_v2(file, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "unix") != SQLITE_OK)
            fail("%s: %s", file, sqlite3_errmsg(dst));
        else rc = copy_database(src, dst, file);
    }
    if (rc == 0) printf("exported %s to %s\n", t.key, file);
    sqlite3_close(src);
    sqlite3_close(dst);
    return rc;
}

static int cmd_check(const char *url) {
    target t;
    sqlite3 *db = NULL;
    if (parse_url(url, &t) || use_server(&t) || open_key(&t, SQLITE_OPEN_READONLY, &db)) return 1;
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
    target t;
    char lib[4096], load[4200], open[13000];
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

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    int replace = argc > 2 && strcmp(argv[2], "--replace") == 0;
    char **rest = argv + 2 + replace;
    int nrest = argc - 2 - replace;
    if (strcmp(cmd, "import") == 0 && nrest == 2) return cmd_import(rest[0], rest[1], replace);
    if (strcmp(cmd, "export") == 0 && nrest == 2) return cmd_export(rest[0], rest[1], replace);
    if (strcmp(cmd, "check") == 0 && argc == 3) return cmd_check(argv[2]);
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
