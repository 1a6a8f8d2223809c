/* slt.c - kvsql-slt: runs sqllogictest scripts through one engine.
 *
 *   kvsql-slt --engine ENGINE [--redis HOST:PORT] [--no-reference] FILE...
 *
 * Engines: native (SQLite on a temporary file, the reference), memory (our
 * VFS on the in-process memory store), module (SQL.EXEC on a redis-server
 * with kvsql.so, --redis, default 127.0.0.1:6379), vfs (the redis VFS of
 * libkvsql on a redis-server, module or not, --redis).
 * Every engine but native also runs each file on a native database beside
 * it, and a record fails unless it came out the same on both; with
 * --no-reference only the script's expectations are checked.
 * Called by `make slt` (tools/slt-all.sh) and tests/test_slt.py.
 *
 * Prints one line per file with its counts and its first failing record,
 * a line with the time spent in each engine's SQL, then "N passed,
 * N failed" over all records run. Exit status: 0 all
 * passed, 1 some record failed, 2 usage error or an engine that broke. */
#include "slt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct options {
    const char *engine;
    int no_reference;
    char host[256];
    int port;
    char **files;
    int nfiles;
} options;

typedef struct totals {
    long passed, failed;
    double engine_seconds, reference_seconds;
    int broke; /* a file could not be run */
} totals;

static void usage(FILE *out) {
    fprintf(out, "usage: kvsql-slt --engine native|memory|module|vfs [--redis HOST:PORT] [--no-reference] FILE...\n"
                 "  native  SQLite on a fresh temporary file (the reference)\n"
                 "  memory  kvsql's VFS on the in-process memory store\n"
                 "  module  SQL.EXEC on redis-server with kvsql.so (--redis, default 127.0.0.1:6379)\n"
                 "  vfs     kvsql's redis VFS (libkvsql) on a redis-server (--redis), module not needed\n"
                 "Engines other than native are also compared record by record with native,\n"
                 "unless --no-reference is given.\n");
}

static int parse_redis_address(const char *arg, options *o) {
    const char *colon = strrchr(arg, ':');
    if (!colon || colon == arg || (size_t)(colon - arg) >= sizeof(o->host)) return -1;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535) return -1;
    snprintf(o->host, sizeof(o->host), "%.*s", (int)(colon - arg), arg);
    o->port = (int)port;
    return 0;
}

/* Fills o from argv; returns -1 (after saying why) on a usage error. */
static int parse_options(int argc, char **argv, options *o) {
    snprintf(o->host, sizeof(o->host), "127.0.0.1");
    o->port = 6379;
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1] == '-'; i++) {
        if (!strcmp(argv[i], "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(argv[i], "--no-reference")) {
            o->no_reference = 1;
        } else if (!strcmp(argv[i], "--engine") && i + 1 < argc) {
            o->engine = argv[++i];
        } else if (!strcmp(argv[i], "--redis") && i + 1 < argc) {
            if (parse_redis_address(argv[++i], o) != 0) {
                fprintf(stderr, "kvsql-slt: --redis wants HOST:PORT, not '%s'\n", argv[i]);
                return -1;
            }
        } else {
            fprintf(stderr, "kvsql-slt: unknown or incomplete option '%s'\n", argv[i]);
            return -1;
        }
    }
    o->files = argv + i;
    o->nfiles = argc - i;
    if (!o->engine) fprintf(stderr, "kvsql-slt: --engine is required\n");
    else if (o->nfiles == 0) fprintf(stderr, "kvsql-slt: no test files given\n");
    return o->engine && o->nfiles > 0 ? 0 : -1;
}

/* The engine named in o; NULL after saying why. */
static slt_engine *make_engine(const options *o) {
    char err[1024] = "";
    slt_engine *e = NULL;
    if (!strcmp(o->engine, "native")) e = slt_native_engine();
    else if (!strcmp(o->engine, "memory")) e = slt_memory_engine();
    else if (!strcmp(o->engine, "module")) e = slt_module_engine(o->host, o->port, err, sizeof(err));
    else if (!strcmp(o->engine, "vfs")) e = slt_vfs_engine(o->host, o->port, err, sizeof(err));
    else {
        fprintf(stderr, "kvsql-slt: unknown engine '%s'\n", o->engine);
        usage(stderr);
        return NULL;
    }
    if (!e) fprintf(stderr, "kvsql-slt: engine %s: %s\n", o->engine, err[0] ? err : "out of memory");
    return e;
}

static void print_file_result(const char *path, const slt_file_result *r, double seconds) {
    printf("%s: %ld passed, %ld failed, %ld skipped", path, r->passed, r->failed, r->skipped);
    if (r->halted_at) printf(", halted at line %d", r->halted_at);
    printf(" (%.1f s)", seconds);
    if (r->error[0]) printf("; error: %s", r->error);
    else if (r->first_failure_line) printf("; first failure %s:%d: %s", path, r->first_failure_line, r->first_failure);
    printf("\n");
    fflush(stdout);
}

/* Runs every file; stops early only when an engine broke. */
static void run_files(slt_engine *e, slt_engine *ref, const options *o, totals *t) {
    for (int i = 0; i < o->nfiles; i++) {
        slt_file_result r;
        double start = slt_now();
        if (slt_run_file(e, ref, o->files[i], &r) != 0) t->broke = 1;
        print_file_result(o->files[i], &r, slt_now() - start);
        t->passed += r.passed;
        t->failed += r.failed;
        t->engine_seconds += r.engine_seconds;
        t->reference_seconds += r.reference_seconds;
        if (r.fatal) {
            fprintf(stderr, "kvsql-slt: stopping: %s\n", r.error);
            break;
        }
    }
}

int main(int argc, char **argv) {
    options o = {0};
    if (parse_options(argc, argv, &o) != 0) {
        usage(stderr);
        return 2;
    }
    slt_engine *e = make_engine(&o), *ref = NULL;
    if (!e) return 2;
    if (strcmp(o.engine, "native") != 0 && !o.no_reference && !(ref = slt_native_engine())) {
        fprintf(stderr, "kvsql-slt: out of memory\n");
        e->destroy(e);
        return 2;
    }
    totals t = {0};
    run_files(e, ref, &o, &t);
    printf("time in SQL: %s %.1f s", e->name, t.engine_seconds);
    if (ref) printf(", reference %s %.1f s", ref->name, t.reference_seconds);
    printf("\n%ld passed, %ld failed\n", t.passed, t.failed);
    e->destroy(e);
    if (ref) ref->destroy(ref);
    return t.broke ? 2 : t.failed ? 1 : 0;
}
