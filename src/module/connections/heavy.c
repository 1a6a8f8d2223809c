/* heavy.c - stoppable versions of the built-in SQL functions whose work
 * grows faster than their input (printf and json_patch: heavy_private.c);
 * see heavy.h. Installed by guard.c on every module connection. Written
 * for kvsql against the documented behaviour of SQLite 3.40's functions
 * (tests/test_heavy_steps.py compares the results with the library's
 * own). */
#include "module/connections/heavy.h"
#include "module/connections/heavy_work.h"

#include "module/connections/fts5_snippet.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- UTF-8 as SQLite reads it ------------------------------------------- */

/* Whether byte b continues a multi-byte character. */
static int continues(unsigned char b) {
    return (b & 0xc0) == 0x80;
}

/* The character at *p, moving *p past it: a byte below 0xc0 alone, or a
 * lead byte and every continuation byte after it; malformed ones read as
 * U+FFFD, as SQLite does. */
static unsigned read_char(const unsigned char **p) {
    unsigned c = *(*p)++;
    if (c < 0xc0) return c;
    c &= c < 0xe0 ? 0x1f : c < 0xf0 ? 0x0f : c < 0xf8 ? 0x07 : c < 0xfc ? 0x03 : c < 0xfe ? 0x01 : 0;
    while (continues(**p)) c = (c << 6) + (*(*p)++ & 0x3f);
    if (c < 0x80 || (c & 0xFFFFF800u) == 0xD800 || (c & 0xFFFFFFFEu) == 0xFFFE) c = 0xFFFD;
    return c;
}

static const unsigned char *skip_char(const unsigned char *p) {
    if (*p++ >= 0xc0)
        while (continues(*p)) p++;
    return p;
}

static int count_chars(const unsigned char *p) {
    int n = 0;
    for (; *p; n++) p = skip_char(p);
    return n;
}

/* ---- instr(X, Y) -------------------------------------------------------- */

/* Offset of the first occurrence of needle in hay that begins a
 * character (any byte for BLOBs), as SQLite looks for it; -1: none. A
 * needle beginning with a continuation byte can match only at offset 0;
 * any other cannot match inside a character. glibc's memmem takes linear
 * time. */
static long long find_at_char(const unsigned char *hay, size_t nh, const unsigned char *needle, size_t nn,
                              int is_text) {
    if (nh < nn) return -1;
    if (is_text && continues(needle[0])) return memcmp(hay, needle, nn) == 0 ? 0 : -1;
    const unsigned char *hit = memmem(hay, nh, needle, nn);
    return hit ? (long long)(hit - hay) : -1;
}

/* 1-based position of the character at byte offset at. */
static long long char_position(const unsigned char *s, size_t at) {
    long long n = 1;
    for (size_t i = 1; i <= at; i++) n += !continues(s[i]);
    return n;
}

static void call_instr(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    (void)argc;
    int th = sqlite3_value_type(argv[0]), tn = sqlite3_value_type(argv[1]);
    if (th == SQLITE_NULL || tn == SQLITE_NULL) return;
    int nh = sqlite3_value_bytes(argv[0]), nn = sqlite3_value_bytes(argv[1]);
    if (nn <= 0) {
        sqlite3_result_int(ctx, 1);
        return;
    }
    sqlite3_value *h = argv[0], *n = argv[1], *hdup = NULL, *ndup = NULL;
    const unsigned char *hay, *needle;
    int is_text = !(th == SQLITE_BLOB && tn == SQLITE_BLOB);
    if (!is_text) {
        hay = sqlite3_value_blob(h);
        needle = sqlite3_value_blob(n);
    } else {
        if (th == SQLITE_BLOB || tn == SQLITE_BLOB) { /* a BLOB and a text: both as text */
            h = hdup = sqlite3_value_dup(argv[0]);
            n = ndup = sqlite3_value_dup(argv[1]);
        }
        hay = h ? sqlite3_value_text(h) : NULL;
        needle = n ? sqlite3_value_text(n) : NULL;
        if (hay) nh = sqlite3_value_bytes(h);
        if (needle) nn = sqlite3_value_bytes(n);
    }
    if (!needle || (nh && !hay)) {
        sqlite3_result_error_nomem(ctx);
    } else {
        long long at = find_at_char(hay, (size_t)nh, needle, (size_t)nn, is_text);
        sqlite3_result_int64(ctx, at < 0 ? 0 : is_text ? char_position(hay, (size_t)at) : at + 1);
    }
    sqlite3_value_free(hdup);
    sqlite3_value_free(ndup);
}

/* ---- replace(X, Y, Z) --------------------------------------------------- */

/* Patterns up to this long are looked for byte by byte, as SQLite does
 * (at most this many comparisons per byte); longer ones with memmem, in
 * windows (a sanitizer checks memmem's whole haystack at each call). */
#define SHORT_PATTERN 16
#define WINDOW (1 << 16)

/* Offset of the first occurrence of pat in s[from..ns), or ns. */
static size_t find_from(const unsigned char *s, size_t from, size_t ns, const unsigned char *pat, size_t np) {
    if (np <= SHORT_PATTERN) {
        for (size_t i = from; i + np <= ns; i++)
            if (s[i] == pat[0] && memcmp(s + i, pat, np) == 0) return i;
        return ns;
    }
    size_t window = np * 4 > WINDOW ? np * 4 : WINDOW;
    while (ns - from >= np) {
        size_t len = ns - from < window ? ns - from : window;
        const unsigned char *hit = memmem(s + from, len, pat, np);
        if (hit) return (size_t)(hit - s);
        if (len < window) break;
        from += len - np + 1;
    }
    return ns;
}

/* Length of s with every occurrence of pat (leftmost first, not
 * overlapping) replaced by nr bytes; -1: stopped. When out is given, the
 * result is written there too. */
static long long replace_into(unsigned char *out, const unsigned char *s, size_t ns, const unsigned char *pat,
                              size_t np, const unsigned char *rep, size_t nr, effort *e) {
    size_t i = 0;
    long long len = 0;
    while (ns - i >= np) {
        size_t at = find_from(s, i, ns, pat, np);
        if (at == ns) break;
        if (out) {
            memcpy(out + len, s + i, at - i);
            memcpy(out + len + (at - i), rep, nr);
        }
        len += (long long)(at - i + nr);
        i = at + np;
        if (must_stop(e, np + nr)) return -1;
    }
    if (out) memcpy(out + len, s + i, ns - i);
    return len + (long long)(ns - i);
}

static void call_replace(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    (void)argc;
    const unsigned char *s = sqlite3_value_text(argv[0]);
    if (!s) return;
    int ns = sqlite3_value_bytes(argv[0]);
    const unsigned char *pat = sqlite3_value_text(argv[1]);
    if (!pat) return;
    if (!pat[0]) { /* nothing to look for: X as it came */
        sqlite3_result_value(ctx, argv[0]);
        return;
    }
    int np = sqlite3_value_bytes(argv[1]);
    const unsigned char *rep = sqlite3_value_text(argv[2]);
    if (!rep) return;
    int nr = sqlite3_value_bytes(argv[2]);
    effort e = effort_of(ctx);
    long long len = replace_into(NULL, s, (size_t)ns, pat, (size_t)np, rep, (size_t)nr, &e);
    if (len < 0) return result_stopped(ctx);
    if (len > sqlite3_limit(sqlite3_context_db_handle(ctx), SQLITE_LIMIT_LENGTH, -1))
        return sqlite3_result_error_toobig(ctx);
    unsigned char *out = sqlite3_malloc64((sqlite3_uint64)len + 1);
    if (!out) return sqlite3_result_error_nomem(ctx);
    replace_into(out, s, (size_t)ns, pat, (size_t)np, rep, (size_t)nr, &e); /* same work: not stopped twice */
    out[len] = 0;
    sqlite3_result_text64(ctx, (const char *)out, (sqlite3_uint64)len, sqlite3_free, SQLITE_UTF8);
}

/* ---- trim, ltrim, rtrim (X, Y) ------------------------------------------ */

/* The characters of Y, each a byte string as SQLite splits it (see
 * read_char). When several could be trimmed at a place, the first in Y
 * wins (they may differ in length). For speed: the first single-byte one
 * of each byte value, and the longer ones listed in order by the byte at
 * the end trimmed from. */
typedef struct charset {
    uint32_t single[256];      /* order of the first 1-byte character b, or UINT32_MAX */
    uint32_t start[257];       /* multi[start[b] .. start[b+1]): longer ones keyed by byte b */
    struct multi {
        uint32_t order, off, len;
    } *multi;
    const unsigned char *text;
} charset;

/* The byte a longer character is keyed by: its first (left) or last. */
static unsigned char key_byte(const unsigned char *c, uint32_t len, int from_left) {
    return from_left ? c[0] : c[len - 1];
}

/* Fills cs from set; 0 when out of memory. */
static int charset_build(charset *cs, const unsigned char *set, int from_left) {
    uint32_t count[256] = {0}, nmulti = 0, order = 0;
    for (int b = 0; b < 256; b++) cs->single[b] = UINT32_MAX;
    cs->text = set;
    for (const unsigned char *p = set; *p; order++) {
        const unsigned char *q = skip_char(p);
        if (q - p == 1) {
            if (cs->single[*p] == UINT32_MAX) cs->single[*p] = order;
        } else {
            count[key_byte(p, (uint32_t)(q - p), from_left)]++;
            nmulti++;
        }
        p = q;
    }
    cs->start[0] = 0;
    for (int b = 0; b < 256; b++) cs->start[b + 1] = cs->start[b] + count[b];
    cs->multi = sqlite3_malloc64((sqlite3_uint64)(nmulti ? nmulti : 1) * sizeof(*cs->multi));
    if (!cs->multi) return 0;
    uint32_t fill[256];
    memcpy(fill, cs->start, sizeof(fill));
    order = 0;
    for (const unsigned char *p = set; *p; order++) {
        const unsigned char *q = skip_char(p);
        if (q - p > 1) {
            struct multi m = {order, (uint32_t)(p - set), (uint32_t)(q - p)};
            cs->multi[fill[key_byte(p, m.len, from_left)]++] = m;
        }
        p = q;
    }
    return 1;
}

/* Bytes of the first character of cs found at the left (or right) end of
 * s[0..n); 0: none; -1: stopped. */
static long long charset_at_end(const charset *cs, const unsigned char *s, size_t n, int from_left, effort *e) {
    unsigned char edge = from_left ? s[0] : s[n - 1];
    uint32_t best = cs->single[edge];
    for (uint32_t i = cs->start[edge]; i < cs->start[edge + 1]; i++) {
        const struct multi *m = &cs->multi[i];
        if (m->order > best) break;
        if (m->len <= n && memcmp(from_left ? s : s + n - m->len, cs->text + m->off, m->len) == 0) return m->len;
        if (must_stop(e, m->len)) return -1;
    }
    return best != UINT32_MAX;
}

/* Trims s[*off .. *off + *n) from one side; 0 when stopped. */
static int trim_side(const charset *cs, const unsigned char *s, size_t *off, size_t *n, int from_left, effort *e) {
    while (*n > 0) {
        long long len = charset_at_end(cs, s + *off, *n, from_left, e);
        if (len < 0 || must_stop(e, 1)) return 0;
        if (len == 0) break;
        if (from_left) *off += (size_t)len;
        *n -= (size_t)len;
    }
    return 1;
}

/* trim, ltrim or rtrim (sides: 1 left, 2 right) with a character set. */
static void trim_call(sqlite3_context *ctx, sqlite3_value **argv, int sides) {
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL) return;
    const unsigned char *s = sqlite3_value_text(argv[0]);
    if (!s) return;
    size_t off = 0, n = (size_t)sqlite3_value_bytes(argv[0]);
    const unsigned char *set = sqlite3_value_text(argv[1]);
    if (!set) return;
    effort e = effort_of(ctx);
    for (int side = 1; side <= 2 && *set; side++) {
        if (!(sides & side)) continue;
        charset cs;
        if (!charset_build(&cs, set, side == 1)) return sqlite3_result_error_nomem(ctx);
        int done = trim_side(&cs, s, &off, &n, side == 1, &e);
        sqlite3_free(cs.multi);
        if (!done) return result_stopped(ctx);
    }
    sqlite3_result_text64(ctx, (const char *)s + off, n, SQLITE_TRANSIENT, SQLITE_UTF8);
}

static void call_trim(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    (void)argc;
    trim_call(ctx, argv, 3);
}

static void call_ltrim(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    (void)argc;
    trim_call(ctx, argv, 1);
}

static void call_rtrim(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    (void)argc;
    trim_call(ctx, argv, 2);
}

/* ---- LIKE and GLOB ------------------------------------------------------ */

/* What the pattern's special characters are; 0: none. */
typedef struct pattern_rules {
    unsigned any, one, set, esc; /* '%' '_' (LIKE) or '*' '?' '[' (GLOB); ESCAPE */
    int nocase;                  /* ASCII letters match either case */
} pattern_rules;

static unsigned ascii_lower(unsigned c) {
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static int same_char(unsigned a, unsigned b, int nocase) {
    return a == b || (nocase && a < 0x80 && b < 0x80 && ascii_lower(a) == ascii_lower(b));
}

/* Whether c is in the GLOB set at *p (after its '['), moving *p past its
 * ']'; -1 when the set has no ']' (nothing matches then). */
static int in_set(const unsigned char **p, unsigned c, effort *e) {
    const unsigned char *q = *p, *begin = q;
    int invert = 0, seen = 0;
    unsigned prior = 0, d = read_char(&q);
    if (d == '^') {
        invert = 1;
        d = read_char(&q);
    }
    if (d == ']') {
        seen = c == ']';
        d = read_char(&q);
    }
    while (d && d != ']') {
        if (d == '-' && *q != ']' && *q != 0 && prior > 0) {
            d = read_char(&q);
            if (c >= prior && c <= d) seen = 1;
            prior = 0;
        } else {
            if (c == d) seen = 1;
            prior = d;
        }
        d = read_char(&q);
    }
    *p = q;
    e->done += (uint64_t)(q - begin); /* counted; the caller checks */
    if (!d) return -1;
    return seen ^ invert;
}

enum { NO_MATCH = 0, MATCH = 1, STOPPED = 2 };

/* Whether the pattern's next element (at *p, not a wildcard for any
 * number of characters) matches the character at *s; moves both past
 * them. */
static int element_matches(const unsigned char **p, const unsigned char **s, const pattern_rules *r, effort *e) {
    unsigned c = read_char(p);
    if (**s == 0) return 0;
    if (r->set && c == r->set) {
        unsigned sc = read_char(s);
        return in_set(p, sc, e) == 1;
    }
    int escaped = 0;
    if (r->esc && c == r->esc) {
        c = read_char(p);
        if (c == 0) {
            (*p)--; /* stays at the end */
            return 0;
        }
        escaped = 1;
    }
    unsigned sc = read_char(s);
    if (same_char(c, sc, r->nocase)) return 1;
    return !escaped && r->one && c == r->one;
}

/* Matches str against pat: going forward, and on a mismatch going back to
 * the last any-wildcard, which then takes one more character. */
static int pattern_match(const unsigned char *pat, const unsigned char *str, const pattern_rules *r, effort *e) {
    const unsigned char *p = pat, *s = str, *star_p = NULL, *star_s = NULL;
    for (;;) {
        if (*p && r->any) {
            const unsigned char *q = p;
            if (read_char(&q) == r->any) {
                while (*q) { /* more wildcards after it */
                    const unsigned char *q2 = q;
                    if (read_char(&q2) != r->any) break;
                    q = q2;
                }
                if (*q == 0) return MATCH;
                star_p = p = q;
                star_s = s;
                continue;
            }
        }
        if (*p == 0) {
            if (*s == 0) return MATCH;
        } else if (element_matches(&p, &s, r, e)) {
            if (must_stop(e, 1)) return STOPPED;
            continue;
        }
        if (!star_p || *star_s == 0) return NO_MATCH;
        star_s = skip_char(star_s);
        p = star_p;
        s = star_s;
        if (must_stop(e, 1)) return STOPPED;
    }
}

/* Whether this libsqlite3 was built so that LIKE and GLOB never match a
 * BLOB (Debian's is): set by heavy_install(). */
static int blobs_never_match;

static void pattern_call(sqlite3_context *ctx, int argc, sqlite3_value **argv, pattern_rules r) {
    sqlite3 *db = sqlite3_context_db_handle(ctx);
    if (blobs_never_match &&
        (sqlite3_value_type(argv[0]) == SQLITE_BLOB || sqlite3_value_type(argv[1]) == SQLITE_BLOB))
        return sqlite3_result_int(ctx, 0);
    if (sqlite3_value_bytes(argv[0]) > sqlite3_limit(db, SQLITE_LIMIT_LIKE_PATTERN_LENGTH, -1))
        return sqlite3_result_error(ctx, "LIKE or GLOB pattern too complex", -1);
    if (argc == 3) {
        const unsigned char *esc = sqlite3_value_text(argv[2]);
        if (!esc) return;
        if (count_chars(esc) != 1) return sqlite3_result_error(ctx, "ESCAPE expression must be a single character", -1);
        r.esc = read_char(&esc);
        if (r.esc == r.any) r.any = 0;
        if (r.esc == r.one) r.one = 0;
    }
    const unsigned char *pat = sqlite3_value_text(argv[0]), *str = sqlite3_value_text(argv[1]);
    if (!pat || !str) return;
    effort e = effort_of(ctx);
    int m = pattern_match(pat, str, &r, &e);
    if (m == STOPPED) return result_stopped(ctx);
    sqlite3_result_int(ctx, m == MATCH);
}

static void call_like(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    const heavy_conf *conf = sqlite3_user_data(ctx);
    pattern_rules r = {'%', '_', 0, 0, !conf->case_sensitive_like};
    pattern_call(ctx, argc, argv, r);
}

static void call_glob(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    pattern_rules r = {'*', '?', '[', 0, 0};
    pattern_call(ctx, argc, argv, r);
}

/* ---- installing --------------------------------------------------------- */

int heavy_pragma_boolean(const char *v) {
    static const struct {
        const char *name;
        int value;
    } words[] = {{"on", 1}, {"no", 0}, {"off", 0}, {"false", 0}, {"yes", 1}, {"true", 1}};
    if (!v) return 0;
    if (*v >= '0' && *v <= '9') {
        long long x = 0;
        int base = 10;
        const char *p = v;
        if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
            base = 16;
            p += 2;
        }
        for (; *p; p++) {
            int d = *p >= '0' && *p <= '9' ? *p - '0'
                  : base == 16 && *p >= 'a' && *p <= 'f' ? *p - 'a' + 10
                  : base == 16 && *p >= 'A' && *p <= 'F' ? *p - 'A' + 10 : -1;
            if (d < 0) break;
            x = x * base + d;
            if (x > 0x7fffffffLL) return 0;
        }
        return (int)(x & 0xff) != 0;
    }
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strcasecmp(words[i].name, v) == 0) return words[i].value;
    return 0;
}

static const struct {
    const char *name;
    int nargs;
    void (*fn)(sqlite3_context *, int, sqlite3_value **);
} overrides[] = {
    {"instr", 2, call_instr}, {"replace", 3, call_replace}, {"trim", 2, call_trim},
    {"ltrim", 2, call_ltrim}, {"rtrim", 2, call_rtrim},      {"like", 2, call_like},
    {"like", 3, call_like},   {"glob", 2, call_glob},       {"json_patch", 2, heavy_call_json_patch},
    {"printf", -1, heavy_call_printf}, {"format", -1, heavy_call_printf},
};

int heavy_install(sqlite3 *db, heavy_conf *conf) {
    int rc = SQLITE_OK;
    blobs_never_match = sqlite3_compileoption_used("LIKE_DOESNT_MATCH_BLOBS");
    for (size_t i = 0; rc == SQLITE_OK && i < sizeof(overrides) / sizeof(overrides[0]); i++)
        rc = sqlite3_create_function_v2(db, overrides[i].name, overrides[i].nargs,
                                        SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, conf, overrides[i].fn,
                                        NULL, NULL, NULL);
    if (rc == SQLITE_OK) rc = fts5_snippet_install(db, conf); /* FTS5's snippet(), fts5_snippet.c */
    return rc;
}
