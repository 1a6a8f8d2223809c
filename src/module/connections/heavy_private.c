/* heavy_private.c - printf/format and json_patch for module connections
 * (heavy.h): SQLite's own versions, run once their inputs are known to be
 * cheap enough, on a private in-memory connection of the calling thread;
 * printf's plain conversions through sqlite3_str_appendf, one at a time,
 * without that connection. */
#include "module/connections/heavy_work.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- SQLite's own function, on a private connection ---------------------- */

/* json_patch and printf are not re-implemented: once their inputs are
 * known to be cheap enough, SQLite's own versions run on a private
 * in-memory connection of the calling thread (worker threads run calls
 * too), whose statements "SELECT f(?1, ..., ?n)" are kept by function
 * and number of arguments. */
#define PRIVATE_MAX_ARGS 127 /* SQLITE_MAX_FUNCTION_ARG */
enum { PRIVATE_JSON_PATCH, PRIVATE_PRINTF, PRIVATE_FUNCTIONS };
static const char *const private_names[PRIVATE_FUNCTIONS] = {"json_patch", "printf"};
static _Thread_local sqlite3 *private_db;
static _Thread_local sqlite3_stmt *private_stmts[PRIVATE_FUNCTIONS][PRIVATE_MAX_ARGS + 1];

/* Closes the thread's private connection as the thread ends (a worker
 * thread that kvsql.worker-threads retires). */
static pthread_key_t private_key;
static pthread_once_t private_once = PTHREAD_ONCE_INIT;

static void private_close(void *unused) {
    (void)unused;
    for (int fn = 0; fn < PRIVATE_FUNCTIONS; fn++)
        for (int n = 0; n <= PRIVATE_MAX_ARGS; n++) {
            sqlite3_finalize(private_stmts[fn][n]);
            private_stmts[fn][n] = NULL;
        }
    sqlite3_close(private_db);
    private_db = NULL;
}

static void private_key_create(void) {
    pthread_key_create(&private_key, private_close);
}

static sqlite3 *private_connection(void) {
    if (private_db) return private_db;
    if (sqlite3_open_v2(":memory:", &private_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_MEMORY, NULL) != SQLITE_OK) {
        sqlite3_close(private_db);
        private_db = NULL;
        return NULL;
    }
    pthread_once(&private_once, private_key_create);
    pthread_setspecific(private_key, private_db); /* non-NULL: private_close runs at the thread's end */
    return private_db;
}

static sqlite3_stmt *private_statement(int fn, int argc) {
    if (argc < 0 || argc > PRIVATE_MAX_ARGS) return NULL;
    if (private_stmts[fn][argc]) return private_stmts[fn][argc];
    if (!private_connection()) return NULL;
    char sql[64 + 6 * PRIVATE_MAX_ARGS];
    int n = snprintf(sql, sizeof(sql), "SELECT %s(", private_names[fn]);
    for (int i = 1; i <= argc; i++) n += snprintf(sql + n, sizeof(sql) - (size_t)n, "%s?%d", i > 1 ? "," : "", i);
    snprintf(sql + n, sizeof(sql) - (size_t)n, ")");
    sqlite3_prepare_v3(private_db, sql, -1, SQLITE_PREPARE_PERSISTENT, &private_stmts[fn][argc], NULL);
    return private_stmts[fn][argc];
}

/* Sets ctx's result to SQLite's own function fn on argv. */
static void call_private(sqlite3_context *ctx, int fn, int argc, sqlite3_value **argv) {
    sqlite3_stmt *st = private_statement(fn, argc);
    if (!st) return sqlite3_result_error_nomem(ctx);
    sqlite3 *db = sqlite3_context_db_handle(ctx);
    sqlite3_limit(private_db, SQLITE_LIMIT_LENGTH, sqlite3_limit(db, SQLITE_LIMIT_LENGTH, -1));
    int rc = SQLITE_OK;
    for (int i = 0; rc == SQLITE_OK && i < argc; i++) rc = sqlite3_bind_value(st, i + 1, argv[i]);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        sqlite3_result_value(ctx, sqlite3_column_value(st, 0));
    } else {
        sqlite3_result_error(ctx, sqlite3_errmsg(private_db), -1);
        sqlite3_result_error_code(ctx, sqlite3_extended_errcode(private_db));
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* ---- printf(F, ...) and format(F, ...) ------------------------------------ */

/* SQLite 3.40's %c repeats its character `precision` times, one append
 * at a time, and goes on counting after its result has outgrown
 * SQLITE_LIMIT_LENGTH: printf('%.*c', 900000000, 'x') spent seconds in
 * one step to return NULL. Its format is read here as SQLite reads it
 * (flags, width, precision, '*' taking the next argument as an integer);
 * when the %c conversions repeat more characters than the limit allows,
 * the result is NULL, as SQLite's would be; otherwise SQLite's printf
 * runs (call_private). */

typedef struct format_args {
    int argc, next; /* argv[next] is the next argument; argv[0] is the format */
    sqlite3_value **argv;
} format_args;

static int int_arg(format_args *a) {
    return a->next < a->argc ? (int)sqlite3_value_int64(a->argv[a->next++]) : 0;
}

/* Arguments a conversion takes: 1, or 0 for %% and %n; -1 for one that
 * ends the format (unknown, or kvsql-internal as %T and %S). */
static int conversion_args(unsigned c) {
    if (c == '%' || c == 'n') return 0;
    return c && strchr("dsgzqQwcouxXifeEGpr", (int)c) ? 1 : -1;
}

/* Characters the %c conversions of the format repeat, as SQLite counts. */
static long long repeated_chars(const unsigned char *fmt, format_args *a) {
    long long total = 0;
    for (const unsigned char *p = fmt; *p; p++) {
        if (*p != '%') continue;
        unsigned c = *++p;
        if (!c) break;
        long long precision = -1;
        int done = 0;
        do {
            switch (c) {
            case '-': case '+': case ' ': case '#': case '!': case '0': case ',': break;
            case 'l':
                c = *++p;
                if (c == 'l') c = *++p;
                done = 1;
                break;
            case '1': case '2': case '3': case '4': case '5': case '6': case '7': case '8': case '9':
                while ((c = *++p) >= '0' && c <= '9') {}
                if (c != '.' && c != 'l') done = 1;
                else p--;
                break;
            case '*':
                int_arg(a); /* the width */
                if ((c = p[1]) != '.' && c != 'l') {
                    c = *++p;
                    done = 1;
                }
                break;
            case '.':
                c = *++p;
                if (c == '*') {
                    int v = int_arg(a);
                    precision = v >= 0 ? v : v >= -2147483647 ? -(long long)v : -1;
                    c = *++p;
                } else {
                    unsigned px = 0;
                    while (c >= '0' && c <= '9') {
                        px = px * 10 + c - '0';
                        c = *++p;
                    }
                    precision = px & 0x7fffffff;
                }
                if (c == 'l') --p;
                else done = 1;
                break;
            default: done = 1; break;
            }
        } while (!done && (c = *++p) != 0);
        int takes = conversion_args(c);
        if (takes < 0) break;
        if (c == 'c' && precision > 1) total += precision;
        a->next += takes;
        if (!*p) break;
    }
    return total;
}

/* Most formats need no private statement (about 5,000 instructions a
 * call, most of a bulk insert that calls printf per row): their
 * conversions read their arguments from a list of values exactly as
 * sqlite3_str_appendf reads them from C arguments, once an integer
 * conversion takes a 64-bit value ("ll"; SQLite's list gives every one
 * sqlite3_value_int64) and %z is %s (from a list it frees nothing). Those
 * are run one at a time through sqlite3_str_appendf; a format with any
 * other conversion (%c, %p, %n, %r, '*', an unknown or internal one) runs
 * on the private connection as before. */
enum { CONV_OTHER, CONV_NONE, CONV_INT, CONV_DOUBLE, CONV_TEXT };
#define DIRECT_SPEC_MAX 48 /* longer conversions (many digits) run on the private connection */

static int direct_conversion(unsigned c) {
    if (c == '%') return CONV_NONE;
    if (c && strchr("diuxXo", (int)c)) return CONV_INT;
    if (c && strchr("feEgG", (int)c)) return CONV_DOUBLE;
    if (c && strchr("szqQw", (int)c)) return CONV_TEXT;
    return CONV_OTHER;
}

/* Reads the conversion after the '%' at *pp as SQLite's printf reads it
 * (flags, width, precision, 'l's), leaving *pp at its conversion
 * character, and writes it into spec without the 'l's; its class, or
 * CONV_OTHER when it must run on the private connection. */
static int direct_spec(const unsigned char **pp, char spec[DIRECT_SPEC_MAX]) {
    const unsigned char *p = *pp;
    size_t n = 0;
    unsigned c = *++p;
    int done = 0;
    spec[n++] = '%';
    do {
        if (n >= DIRECT_SPEC_MAX - 4) return CONV_OTHER; /* room for "ll", the conversion and the NUL */
        switch (c) {
        case '-': case '+': case ' ': case '#': case '!': case '0': case ',': spec[n++] = (char)c; break;
        case 'l':
            c = *++p;
            if (c == 'l') c = *++p;
            done = 1;
            break;
        case '1': case '2': case '3': case '4': case '5': case '6': case '7': case '8': case '9':
            spec[n++] = (char)c;
            while ((c = *++p) >= '0' && c <= '9')
                if (n < DIRECT_SPEC_MAX - 4) spec[n++] = (char)c;
                else return CONV_OTHER;
            if (c != '.' && c != 'l') done = 1;
            else p--;
            break;
        case '.':
            spec[n++] = '.';
            while ((c = *++p) >= '0' && c <= '9')
                if (n < DIRECT_SPEC_MAX - 4) spec[n++] = (char)c;
                else return CONV_OTHER;
            if (c == '*') return CONV_OTHER;
            if (c == 'l') --p;
            else done = 1;
            break;
        case '*': return CONV_OTHER;
        default: done = 1; break;
        }
    } while (!done && (c = *++p) != 0);
    int kind = direct_conversion(c);
    if (kind == CONV_INT) {
        spec[n++] = 'l';
        spec[n++] = 'l';
    }
    spec[n++] = c == 'z' ? 's' : (char)c;
    spec[n] = 0;
    *pp = p;
    return kind;
}

/* Where the direct path writes: a buffer on the stack (most results are
 * short: no allocation but the result's), or, for a result that does
 * not fit there, a sqlite3_str that grows as SQLite's printf grows its own. */
#define DIRECT_ROOM 256
typedef struct direct_out {
    sqlite3_str *str; /* NULL: buf */
    char buf[DIRECT_ROOM];
    int len, full; /* full: buf had no room left; start again with str */
} direct_out;

static void out_text(direct_out *o, const char *p, int n) {
    if (o->str) return sqlite3_str_append(o->str, p, n);
    if (n >= DIRECT_ROOM - 1 - o->len) {
        o->full = 1;
        return;
    }
    memcpy(o->buf + o->len, p, (size_t)n);
    o->len += n;
}

/* One conversion with its C argument (none for %%: an extra argument is
 * not read). sqlite3_snprintf stops at the buffer's end, so a result that
 * reaches it may be cut; a conversion that needs a work buffer larger
 * than the room left (a long %q, %f or %d with a big precision) writes
 * nothing. In both cases (and for a conversion that is empty indeed) the
 * stack is not used. */
#define OUT_CONVERSION(o, spec, arg)                                                                                 \
    do {                                                                                                             \
        if ((o)->str) {                                                                                              \
            sqlite3_str_appendf((o)->str, spec, arg);                                                                \
        } else {                                                                                                     \
            int room_ = DIRECT_ROOM - (o)->len;                                                                      \
            int k_ = (int)strlen(sqlite3_snprintf(room_, (o)->buf + (o)->len, spec, arg));                           \
            if (k_ == 0 || k_ >= room_ - 2) (o)->full = 1;                                                           \
            else (o)->len += k_;                                                                                     \
        }                                                                                                            \
    } while (0)

/* Appends the format's conversions, each with its argument as SQLite's
 * printf takes it from the list (none left: 0, 0.0 or NULL); 0 when the
 * format has a conversion for the private connection. Stops early when
 * the stack buffer is full (o->full). */
static int direct_append(direct_out *o, const unsigned char *fmt, int argc, sqlite3_value **argv) {
    int next = 1;
    for (const unsigned char *p = fmt; *p && !o->full; p++) {
        if (*p != '%') {
            const unsigned char *end = p;
            while (*end && *end != '%') end++;
            out_text(o, (const char *)p, (int)(end - p));
            if (!*end) break;
            p = end;
        }
        if (!p[1]) { /* a '%' that ends the format stands for itself */
            out_text(o, "%", 1);
            break;
        }
        char spec[DIRECT_SPEC_MAX];
        sqlite3_value *v = next < argc ? argv[next] : NULL;
        switch (direct_spec(&p, spec)) {
        case CONV_NONE: OUT_CONVERSION(o, spec, 0); break;
        case CONV_INT: OUT_CONVERSION(o, spec, v ? sqlite3_value_int64(v) : 0LL); next++; break;
        case CONV_DOUBLE: OUT_CONVERSION(o, spec, v ? sqlite3_value_double(v) : 0.0); next++; break;
        case CONV_TEXT: OUT_CONVERSION(o, spec, v ? (const char *)sqlite3_value_text(v) : NULL); next++; break;
        default: return 0;
        }
    }
    return 1;
}

/* The result of the sqlite3_str path: NULL when it passed
 * SQLITE_LIMIT_LENGTH (or is empty), an out-of-memory error when memory
 * was refused, as SQLite's printf. */
static void result_str(sqlite3_context *ctx, sqlite3_str *str) {
    int err = sqlite3_str_errcode(str), n = sqlite3_str_length(str);
    char *text = sqlite3_str_finish(str);
    if (err == SQLITE_NOMEM) {
        sqlite3_free(text);
        sqlite3_result_error_nomem(ctx);
    } else {
        sqlite3_result_text(ctx, text, n, sqlite3_free); /* NULL text: NULL */
    }
}

/* SQLite's printf(fmt, ...) into ctx's result without the private
 * connection; 0 (nothing set) when the format needs it. An empty format
 * gives NULL, as SQLite's (any conversion makes at least ''). When the
 * stack had no room, the format is read again into a sqlite3_str (reading
 * a value's text twice gives the same text). */
static int printf_direct(sqlite3_context *ctx, const unsigned char *fmt, int argc, sqlite3_value **argv) {
    direct_out o;
    o.str = NULL;
    o.len = o.full = 0;
    if (!direct_append(&o, fmt, argc, argv)) return 0;
    if (!o.full) {
        if (*fmt) sqlite3_result_text(ctx, o.buf, o.len, SQLITE_TRANSIENT);
        return 1;
    }
    o.str = sqlite3_str_new(sqlite3_context_db_handle(ctx));
    o.full = 0;
    if (!direct_append(&o, fmt, argc, argv)) { /* one past where the stack was full needs the private connection */
        sqlite3_free(sqlite3_str_finish(o.str));
        return 0;
    }
    result_str(ctx, o.str);
    return 1;
}

void heavy_call_printf(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    const unsigned char *fmt = argc >= 1 ? sqlite3_value_text(argv[0]) : NULL;
    if (!fmt) return; /* NULL, as SQLite's */
    format_args a = {argc, 1, argv};
    long long repeats = repeated_chars(fmt, &a);
    if (repeats > sqlite3_limit(sqlite3_context_db_handle(ctx), SQLITE_LIMIT_LENGTH, -1))
        return; /* SQLite's result is too big: NULL */
    effort e = effort_of(ctx); /* a call already stopped does not start this much work */
    if (must_stop(&e, (uint64_t)repeats)) return result_stopped(ctx);
    if (repeats >= CHECK_EVERY) { /* the result's memory, asked for first: a call that */
        void *room = sqlite3_malloc64((sqlite3_uint64)repeats); /* must stop is refused it (budget.c) */
        if (!room) return e.conf->tick && e.conf->tick() ? result_stopped(ctx) : sqlite3_result_error_nomem(ctx);
        sqlite3_free(room);
    }
    if (!printf_direct(ctx, fmt, argc, argv)) call_private(ctx, PRIVATE_PRINTF, argc, argv);
}

/* ---- json_patch(T, P) --------------------------------------------------- */

/* SQLite's json_patch compares every member of the patch with every member
 * of the target at the same level: quadratic. Run by SQLite
 * (call_private) once the inputs are known to be small enough. */

/* Whether text is a JSON object (its first character past white space). */
static int is_object(const unsigned char *t) {
    while (*t == ' ' || *t == '\t' || *t == '\n' || *t == '\r') t++;
    return *t == '{';
}

static long long count_byte(const unsigned char *t, int n, unsigned char b) {
    long long k = 0;
    for (int i = 0; i < n; i++) k += t[i] == b;
    return k;
}

/* Upper bound of json_patch's comparisons: every member has a ':'. */
static int json_patch_too_big(sqlite3_value **argv) {
    const unsigned char *target = sqlite3_value_text(argv[0]), *patch = sqlite3_value_text(argv[1]);
    if (!target || !patch || !is_object(patch)) return 0;
    long long members = count_byte(target, sqlite3_value_bytes(argv[0]), ':');
    return members * sqlite3_value_bytes(argv[1]) > HEAVY_JSON_PATCH_MAX_WORK;
}

void heavy_call_json_patch(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    if (json_patch_too_big(argv))
        return sqlite3_result_error(ctx,
                                    "json_patch: target and patch too large for one call inside Redis (members of the "
                                    "target times bytes of the patch above 67108864; see docs/SECURITY.md)",
                                    -1);
    call_private(ctx, PRIVATE_JSON_PATCH, argc, argv);
}
