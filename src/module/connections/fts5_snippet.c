/* fts5_snippet.c - FTS5's snippet() and highlight() auxiliary functions,
 * rewritten so that their time is O(n log n) in the phrase matches of a row
 * and the call's time limit can stop them. SQLite's own snippet() scores
 * every window against every match, and both copy their whole result once
 * per match: O(n²) in one step, days for a long row.
 *
 * Written for kvsql from the documented behaviour of SQLite 3.40's
 * snippet(): the same arguments (column, open and close markers,
 * ellipsis, most tokens), the same choice of column and window (each match
 * and the sentence start before it, scored 1000 per distinct phrase and 1
 * per repeated match, +120/+100 for starting a document/sentence) and the
 * same highlighting; highlight() marks a whole column the same way.
 * tests/test_heavy_steps.py compares the results with the library's own.
 * heavy_install() (heavy.c) installs both on every module connection
 * through the connection's fts5_api, in place of FTS5's. */
#include "module/connections/fts5_snippet.h"

#include <stdint.h>
#include <string.h>

/* ---- the FTS5 extension interface (sqlite.org/fts5.html, version 2) ----- */

typedef struct Fts5Context Fts5Context;
typedef struct fts5_phrase_iter {
    const unsigned char *a, *b;
} fts5_phrase_iter;
typedef struct fts5_ext_api fts5_ext_api;
struct fts5_ext_api {
    int iVersion;
    void *(*xUserData)(Fts5Context *);
    int (*xColumnCount)(Fts5Context *);
    int (*xRowCount)(Fts5Context *, sqlite3_int64 *);
    int (*xColumnTotalSize)(Fts5Context *, int, sqlite3_int64 *);
    int (*xTokenize)(Fts5Context *, const char *, int, void *, int (*)(void *, int, const char *, int, int, int));
    int (*xPhraseCount)(Fts5Context *);
    int (*xPhraseSize)(Fts5Context *, int);
    int (*xInstCount)(Fts5Context *, int *);
    int (*xInst)(Fts5Context *, int, int *, int *, int *);
    sqlite3_int64 (*xRowid)(Fts5Context *);
    int (*xColumnText)(Fts5Context *, int, const char **, int *);
    int (*xColumnSize)(Fts5Context *, int, int *);
    int (*xQueryPhrase)(Fts5Context *, int, void *, int (*)(const fts5_ext_api *, Fts5Context *, void *));
    int (*xSetAuxdata)(Fts5Context *, void *, void (*)(void *));
    void *(*xGetAuxdata)(Fts5Context *, int);
    int (*xPhraseFirst)(Fts5Context *, int, fts5_phrase_iter *, int *, int *);
    void (*xPhraseNext)(Fts5Context *, fts5_phrase_iter *, int *, int *);
    int (*xPhraseFirstColumn)(Fts5Context *, int, fts5_phrase_iter *, int *);
    void (*xPhraseNextColumn)(Fts5Context *, fts5_phrase_iter *, int *);
};
typedef void (*fts5_function)(const fts5_ext_api *, Fts5Context *, sqlite3_context *, int, sqlite3_value **);
typedef struct fts5_api_v2 {
    int iVersion;
    int (*xCreateTokenizer)(struct fts5_api_v2 *, const char *, void *, void *, void (*)(void *));
    int (*xFindTokenizer)(struct fts5_api_v2 *, const char *, void **, void *);
    int (*xCreateFunction)(struct fts5_api_v2 *, const char *, void *, fts5_function, void (*)(void *));
} fts5_api_v2;

#define TOKEN_COLOCATED 0x0001 /* FTS5_TOKEN_COLOCATED: a synonym, same position */
#define CORRUPT_VTAB (SQLITE_CORRUPT | (1 << 8))
#define TICK_EVERY 4096 /* matches or tokens between two checks of the time limit */
#define OUT_OF_ORDER (-1) /* FTS5 did not list the matches by column and position */

/* ---- one call ----------------------------------------------------------- */

typedef struct snip {
    const fts5_ext_api *api;
    Fts5Context *fts;
    const heavy_conf *conf;
    unsigned work;
    int stopped; /* the time limit or SQL.KILL stopped the call */
    int ninst, nphrase;
} snip;

/* Counts one unit of work; non-zero when the call must stop. */
static int must_stop(snip *s) {
    if (++s->work % TICK_EVERY || !s->conf || !s->conf->tick) return s->stopped;
    if (s->conf->tick()) s->stopped = 1;
    return s->stopped;
}

typedef struct match {
    int phrase, col, off, end; /* end: off + the phrase's tokens */
} match;

static int match_at(snip *s, int i, match *m) {
    int rc = s->api->xInst(s->fts, i, &m->phrase, &m->col, &m->off);
    m->end = rc == SQLITE_OK ? m->off + s->api->xPhraseSize(s->fts, m->phrase) : 0;
    return rc;
}

/* FTS5 lists matches by column, then position: the windows below rely on
 * it. OUT_OF_ORDER if not. */
static int check_order(snip *s) {
    match prev = {0, -1, -1, 0}, m;
    for (int i = 0; i < s->ninst; i++) {
        int rc = match_at(s, i, &m);
        if (rc != SQLITE_OK) return rc;
        if (m.col < prev.col || (m.col == prev.col && m.off < prev.off)) return OUT_OF_ORDER;
        if (must_stop(s)) return SQLITE_INTERRUPT;
        prev = m;
    }
    return SQLITE_OK;
}

/* The first match at or after column col (matches are ordered). */
static int first_of_column(snip *s, int col, int *at) {
    int lo = 0, hi = s->ninst;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        match m;
        int rc = match_at(s, mid, &m);
        if (rc != SQLITE_OK) return rc;
        if (m.col < col) lo = mid + 1;
        else hi = mid;
    }
    *at = lo;
    return SQLITE_OK;
}

/* ---- sentences ---------------------------------------------------------- */

/* Positions of the tokens that begin a sentence: the first, and each one
 * after white space that follows '.' or ':'. */
typedef struct sentences {
    const char *doc;
    int pos, n, cap, *first;
    snip *s;
} sentences;

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int sentence_add(sentences *f, int pos) {
    if (f->n == f->cap) {
        int cap = f->cap ? f->cap * 2 : 64;
        int *p = sqlite3_realloc64(f->first, (sqlite3_uint64)cap * sizeof(int));
        if (!p) return SQLITE_NOMEM;
        f->first = p;
        f->cap = cap;
    }
    f->first[f->n++] = pos;
    return SQLITE_OK;
}

static int sentence_token(void *ctx, int flags, const char *tok, int ntok, int start, int end) {
    sentences *f = ctx;
    (void)tok, (void)ntok, (void)end;
    if (must_stop(f->s)) return SQLITE_INTERRUPT;
    if (flags & TOKEN_COLOCATED) return SQLITE_OK;
    int pos = f->pos++, i = start - 1;
    if (pos == 0) return sentence_add(f, 0);
    while (i >= 0 && is_space(f->doc[i])) i--;
    if (i != start - 1 && i >= 0 && (f->doc[i] == '.' || f->doc[i] == ':')) return sentence_add(f, pos);
    return SQLITE_OK;
}

/* The last sentence start at or before off; the first one if none. */
static int sentence_before(const sentences *f, int off) {
    int lo = 1, hi = f->n; /* first index in [1, n) whose start is past off */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (f->first[mid] <= off) lo = mid + 1;
        else hi = mid;
    }
    return f->first[lo - 1];
}

/* ---- scoring windows ---------------------------------------------------- */

/* The matches of one column whose position is in [start, end): both ends
 * only move forward, so a whole sweep costs one pass. */
typedef struct window {
    int lo, hi, stop; /* matches [lo, hi) of the column, which ends at stop */
    int distinct;
    int *seen; /* matches of each phrase in the window */
} window;

static int window_move(snip *s, window *w, long long start, long long end) {
    match m;
    int rc = SQLITE_OK;
    while (rc == SQLITE_OK && w->hi < w->stop && (rc = match_at(s, w->hi, &m)) == SQLITE_OK && m.off < end) {
        if (w->seen[m.phrase]++ == 0) w->distinct++;
        w->hi++;
    }
    while (rc == SQLITE_OK && w->lo < w->hi && (rc = match_at(s, w->lo, &m)) == SQLITE_OK && m.off < start) {
        if (--w->seen[m.phrase] == 0) w->distinct--;
        w->lo++;
    }
    return rc;
}

/* 1000 for each phrase in the window, 1 for each further match of it. */
static long long window_score(const window *w) {
    return 999LL * w->distinct + (w->hi - w->lo);
}

/* Where a snippet of ntoken tokens around the window's matches begins. */
static int window_centre(snip *s, const window *w, long long ntoken, int docsize, long long *at) {
    match first, last;
    int rc = match_at(s, w->lo, &first);
    if (rc == SQLITE_OK) rc = match_at(s, w->hi - 1, &last);
    long long adj = first.off - (ntoken - (last.end - first.off)) / 2;
    if (adj + ntoken > docsize) adj = docsize - ntoken;
    *at = adj < 0 ? 0 : adj;
    return rc;
}

typedef struct best {
    long long score, start;
    int col, colsize;
} best;

typedef struct column_scan {
    int col, docsize;
    long long ntoken;
    sentences *sent;
    window at_match, at_sentence;
} column_scan;

/* Scores the windows at match i of the column and at the sentence start
 * before it, keeping the best in *b. */
static int score_match(snip *s, column_scan *c, int i, best *b) {
    match m;
    int rc = match_at(s, i, &m);
    if (rc == SQLITE_OK && m.off > c->docsize) rc = CORRUPT_VTAB;
    if (rc == SQLITE_OK) rc = window_move(s, &c->at_match, m.off, m.off + c->ntoken);
    if (rc != SQLITE_OK) return rc;
    long long score = window_score(&c->at_match);
    if (score > b->score) {
        rc = window_centre(s, &c->at_match, c->ntoken, c->docsize, &b->start);
        b->score = score, b->col = c->col, b->colsize = c->docsize;
    }
    if (rc != SQLITE_OK || c->sent->n == 0 || c->docsize <= c->ntoken) return rc;
    int first = sentence_before(c->sent, m.off);
    if (first >= m.off) return SQLITE_OK;
    rc = window_move(s, &c->at_sentence, first, first + c->ntoken);
    score = window_score(&c->at_sentence) + (first == 0 ? 120 : 100);
    if (rc == SQLITE_OK && score > b->score) b->score = score, b->start = first, b->col = c->col, b->colsize = c->docsize;
    return rc;
}

static int scan_matches(snip *s, column_scan *c, best *b) {
    int from = 0, rc = first_of_column(s, c->col, &from), to = from;
    match m;
    while (rc == SQLITE_OK && to < s->ninst && (rc = match_at(s, to, &m)) == SQLITE_OK && m.col == c->col) to++;
    window init = {from, from, to, 0, NULL};
    c->at_match = c->at_sentence = init;
    size_t bytes = (size_t)s->nphrase * sizeof(int) + 1;
    c->at_match.seen = sqlite3_malloc64(bytes);
    c->at_sentence.seen = sqlite3_malloc64(bytes);
    if (rc == SQLITE_OK && (!c->at_match.seen || !c->at_sentence.seen)) rc = SQLITE_NOMEM;
    if (rc == SQLITE_OK) {
        memset(c->at_match.seen, 0, bytes);
        memset(c->at_sentence.seen, 0, bytes);
    }
    for (int i = from; rc == SQLITE_OK && i < to; i++) rc = must_stop(s) ? SQLITE_INTERRUPT : score_match(s, c, i, b);
    sqlite3_free(c->at_match.seen);
    sqlite3_free(c->at_sentence.seen);
    return rc;
}

/* Scores every window of column col. */
static int scan_column(snip *s, int col, long long ntoken, best *b) {
    sentences sent = {NULL, 0, 0, 0, NULL, s};
    int ndoc = 0;
    column_scan c = {col, 0, ntoken, &sent, {0}, {0}};
    int rc = s->api->xColumnText(s->fts, col, &sent.doc, &ndoc);
    if (rc == SQLITE_OK) rc = s->api->xTokenize(s->fts, sent.doc, ndoc, &sent, sentence_token);
    if (rc == SQLITE_OK) rc = s->api->xColumnSize(s->fts, col, &c.docsize);
    if (rc == SQLITE_OK) rc = scan_matches(s, &c, b);
    sqlite3_free(sent.first);
    return rc;
}

/* ---- the text ----------------------------------------------------------- */

typedef struct out {
    char *p;
    size_t n, cap;
    int rc;
} out;

/* Appends z: its first n bytes (all when n < 0), never past a NUL. */
static void put(out *o, const char *z, long long n) {
    size_t len = 0;
    if (o->rc != SQLITE_OK || !z) return;
    if (n < 0) len = strlen(z);
    else
        while (len < (size_t)n && z[len]) len++;
    if (o->n + len + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->n + len + 1) cap *= 2;
        char *p = sqlite3_realloc64(o->p, cap);
        if (!p) {
            o->rc = SQLITE_NOMEM;
            return;
        }
        o->p = p, o->cap = cap;
    }
    memcpy(o->p + o->n, z, len);
    o->n += len;
    o->p[o->n] = 0;
}

/* Runs of overlapping matches of one column, in order. */
typedef struct runs {
    int next, stop;
    long long start, end; /* the current run's first and last token; -1: none left */
} runs;

static int runs_next(snip *s, runs *r) {
    match m;
    r->start = r->end = -1;
    while (r->next < r->stop) {
        int rc = match_at(s, r->next, &m);
        if (rc != SQLITE_OK) return rc;
        if (r->start >= 0 && m.off > r->end) break;
        if (r->start < 0) r->start = m.off, r->end = m.end - 1;
        else if (m.end - 1 > r->end) r->end = m.end - 1;
        r->next++;
    }
    return SQLITE_OK;
}

typedef struct marking {
    snip *s;
    const char *doc, *open, *close;
    long long pos, from, to, done; /* token position; tokens [from, to] (to <= 0: all); bytes copied */
    runs run;
    out text;
} marking;

static int mark_token(void *ctx, int flags, const char *tok, int ntok, int start, int end) {
    marking *k = ctx;
    (void)tok, (void)ntok;
    if (must_stop(k->s)) return SQLITE_INTERRUPT;
    if (flags & TOKEN_COLOCATED) return SQLITE_OK;
    long long pos = k->pos++;
    if (k->to > 0) {
        if (pos < k->from || pos > k->to) return SQLITE_OK;
        if (k->from && pos == k->from) k->done = start;
    }
    if (pos == k->run.start) {
        put(&k->text, k->doc + k->done, start - k->done);
        put(&k->text, k->open, -1);
        k->done = start;
    }
    if (pos == k->run.end) {
        if (k->to > 0 && k->run.start < k->from) put(&k->text, k->open, -1);
        put(&k->text, k->doc + k->done, end - k->done);
        put(&k->text, k->close, -1);
        k->done = end;
        int rc = runs_next(k->s, &k->run);
        if (rc != SQLITE_OK) return rc;
    }
    if (k->to > 0 && pos == k->to) {
        put(&k->text, k->doc + k->done, end - k->done);
        k->done = end;
        if (pos >= k->run.start && pos < k->run.end) put(&k->text, k->close, -1);
    }
    return k->text.rc;
}

/* Marks the runs of matches of column col in its text k->doc (ndoc
 * bytes), copying tokens k->from to k->to (the whole text when k->to <= 0,
 * as SQLite 3.40 does) into k->text. */
static int mark_column(snip *s, int col, int ndoc, marking *k) {
    int from = 0;
    match m;
    int rc = first_of_column(s, col, &from);
    k->run.next = k->run.stop = from;
    while (rc == SQLITE_OK && k->run.stop < s->ninst && (rc = match_at(s, k->run.stop, &m)) == SQLITE_OK &&
           m.col == col)
        k->run.stop++;
    if (rc == SQLITE_OK) rc = runs_next(s, &k->run);
    while (rc == SQLITE_OK && k->run.start >= 0 && k->run.start < k->from) rc = runs_next(s, &k->run);
    if (rc == SQLITE_OK) rc = s->api->xTokenize(s->fts, k->doc, ndoc, k, mark_token);
    return rc;
}

/* The snippet of column b->col from token b->start: k->text. */
static int write_snippet(snip *s, const best *b, long long ntoken, const char *ellipsis, marking *k) {
    int ndoc = 0;
    int rc = s->api->xColumnText(s->fts, b->col, &k->doc, &ndoc);
    if (rc != SQLITE_OK || !k->doc) return rc;
    k->from = b->start, k->to = b->start + ntoken - 1;
    if (b->start > 0) put(&k->text, ellipsis, -1);
    rc = mark_column(s, b->col, ndoc, k);
    if (k->to >= b->colsize - 1) put(&k->text, k->doc + k->done, ndoc - k->done);
    else put(&k->text, ellipsis, -1);
    return rc != SQLITE_OK ? rc : k->text.rc;
}

/* The result of a call: the text, NULL, or why it failed. */
static void result_of(sqlite3_context *ctx, const snip *s, int rc, out *text) {
    if (s->stopped) {
        sqlite3_result_error(ctx, "interrupted", -1);
        sqlite3_result_error_code(ctx, SQLITE_INTERRUPT);
    } else if (rc == OUT_OF_ORDER) {
        sqlite3_result_error(ctx, "FTS5 listed the phrase matches out of order", -1);
    } else if (rc != SQLITE_OK) {
        sqlite3_result_error_code(ctx, rc);
    } else if (text->p) {
        sqlite3_result_text(ctx, text->p, (int)text->n, SQLITE_TRANSIENT);
    } else {
        sqlite3_result_null(ctx);
    }
    sqlite3_free(text->p);
}

/* ---- highlight(col, open, close) ---------------------------------------- */

static const char *text_of(sqlite3_value *v) {
    const char *z = (const char *)sqlite3_value_text(v);
    return z ? z : "";
}

static void call_highlight(const fts5_ext_api *api, Fts5Context *fts, sqlite3_context *ctx, int argc,
                           sqlite3_value **argv) {
    if (argc != 3) {
        sqlite3_result_error(ctx, "wrong number of arguments to function highlight()", -1);
        return;
    }
    snip s = {api, fts, api->xUserData(fts), 0, 0, 0, api->xPhraseCount(fts)};
    marking k = {&s, NULL, text_of(argv[1]), text_of(argv[2]), 0, 0, -1, 0, {0, 0, -1, -1}, {NULL, 0, 0, 0}};
    int ndoc = 0, col = sqlite3_value_int(argv[0]);
    int rc = api->xColumnText(fts, col, &k.doc, &ndoc);
    if (rc == SQLITE_OK && k.doc) {
        rc = api->xInstCount(fts, &s.ninst);
        if (rc == SQLITE_OK) rc = check_order(&s);
        if (rc == SQLITE_OK) rc = mark_column(&s, col, ndoc, &k);
        put(&k.text, k.doc + k.done, ndoc - k.done);
        if (rc == SQLITE_OK) rc = k.text.rc;
    }
    result_of(ctx, &s, rc, &k.text);
}

/* ---- snippet(col, open, close, ellipsis, ntoken) ------------------------- */

static int choose_window(snip *s, int col, long long ntoken, best *b) {
    int rc = s->api->xInstCount(s->fts, &s->ninst);
    if (rc == SQLITE_OK) rc = check_order(s);
    for (int i = 0, n = s->api->xColumnCount(s->fts); rc == SQLITE_OK && i < n; i++)
        if (col < 0 || col == i) rc = scan_column(s, i, ntoken, b);
    if (rc == SQLITE_OK && b->colsize == 0) rc = s->api->xColumnSize(s->fts, b->col, &b->colsize);
    return rc;
}

static void call_snippet(const fts5_ext_api *api, Fts5Context *fts, sqlite3_context *ctx, int argc,
                         sqlite3_value **argv) {
    if (argc != 5) {
        sqlite3_result_error(ctx, "wrong number of arguments to function snippet()", -1);
        return;
    }
    snip s = {api, fts, api->xUserData(fts), 0, 0, 0, api->xPhraseCount(fts)};
    int col = sqlite3_value_int(argv[0]);
    long long ntoken = sqlite3_value_int(argv[4]);
    best b = {0, 0, col >= 0 ? col : 0, 0};
    marking k = {&s, NULL, text_of(argv[1]), text_of(argv[2]), 0, 0, 0, 0, {0, 0, -1, -1}, {NULL, 0, 0, 0}};
    int rc = choose_window(&s, col, ntoken, &b);
    if (rc == SQLITE_OK) rc = write_snippet(&s, &b, ntoken, text_of(argv[3]), &k);
    result_of(ctx, &s, rc, &k.text);
}

/* ---- installing --------------------------------------------------------- */

/* The connection's fts5_api, or NULL without FTS5. */
static fts5_api_v2 *fts5_api_of(sqlite3 *db) {
    fts5_api_v2 *api = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT fts5(?1)", -1, &st, NULL) != SQLITE_OK) return NULL;
    sqlite3_bind_pointer(st, 1, (void *)&api, "fts5_api_ptr", NULL);
    sqlite3_step(st);
    sqlite3_finalize(st);
    return api;
}

int fts5_snippet_install(sqlite3 *db, heavy_conf *conf) {
    fts5_api_v2 *api = fts5_api_of(db);
    if (!api) return SQLITE_OK; /* no FTS5: no snippet() to replace */
    if (api->iVersion < 2) return SQLITE_ERROR;
    int rc = api->xCreateFunction(api, "snippet", conf, call_snippet, NULL);
    if (rc == SQLITE_OK) rc = api->xCreateFunction(api, "highlight", conf, call_highlight, NULL);
    return rc;
}
