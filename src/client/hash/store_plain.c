/* store_plain.c - begins of a `redis` VFS store without scripts
 * (redis_store.h), for servers that refuse the begin script: a user whose
 * ACL allows only reads (`+@read ~K ~{K}:*`: no EVAL, or no ZADD inside
 * one), or a server at maxmemory with noeviction (the script registers the
 * reader: a write). Called by store_redis.c's begin when the script was
 * refused; its reads go through store_read.c's reads without a script.
 *
 * Such a snapshot is not registered in T:readers, so no commit keeps undo
 * records for it: it is checked instead. The begin reads the version, the
 * length and whether capture is on, then page 0 and the checks of the last fields, then the
 * version and the length again (two round trips, plain read commands):
 * a commit changes the pages, T:v and T:id in one atomic step, so when the
 * identity (MGET T:v T:id, docs/FORMAT.md "Identity") and HLEN did not
 * move, what was read between is the snapshot's; else it tries again
 * (PLAIN_TRIES times, then SQLITE_BUSY). Each read sends MGET T:v T:id
 * after its HMGET (store_read.c): once another client committed, the
 * transaction's reads fail "snapshot too old" (SQLITE_IOERR_READ), never
 * other data. docs/LIBRARY.md, "Readers that may not write", says what
 * this costs. */
#include "client/hash/redis_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PLAIN_TRIES 8

int rs_plain_wanted(const redisReply *r) {
    int rc = r && r->type == REDIS_REPLY_ERROR ? kvsql_conn_error_code(r->str) : SQLITE_OK;
    return rc == SQLITE_PERM || rc == SQLITE_FULL;
}

/* ---- a reply shaped like the begin script's ------------------------------ */

static redisReply *new_reply(int type) {
    redisReply *r = calloc(1, sizeof(*r));
    if (r) r->type = type;
    return r;
}

static redisReply *string_reply(const char *p, size_t n) {
    redisReply *r = new_reply(REDIS_REPLY_STRING);
    if (r && !(r->str = malloc(n + 1))) {
        free(r);
        return NULL;
    }
    if (r) {
        memcpy(r->str, p, n);
        r->str[n] = 0;
        r->len = n;
    }
    return r;
}

/* {head, v, n} followed by the `more` replies (taken: they belong to the
 * answer now, freed with it); head is 'ok', or 'capture' while capture is
 * on. NULL when out of memory (more freed). */
static redisReply *begin_answer(const char *head, const char *v, long long n, redisReply **more, int nmore) {
    redisReply *a = new_reply(REDIS_REPLY_ARRAY);
    redisReply **el = calloc(3 + (size_t)nmore, sizeof(*el));
    redisReply *ok = string_reply(head, strlen(head)), *ver = string_reply(v, strlen(v)), *len = new_reply(REDIS_REPLY_INTEGER);
    if (!a || !el || !ok || !ver || !len) {
        free(a);
        free(el);
        freeReplyObject(ok);
        freeReplyObject(ver);
        freeReplyObject(len);
        for (int i = 0; i < nmore; i++) freeReplyObject(more[i]);
        return NULL;
    }
    len->integer = n;
    el[0] = ok, el[1] = ver, el[2] = len;
    for (int i = 0; i < nmore; i++) el[3 + i] = more[i];
    a->element = el;
    a->elements = 3 + (size_t)nmore;
    return a;
}

/* ---- the begin ------------------------------------------------------------ */

static void free_replies(redisReply **r, int n) {
    for (int i = 0; i < n; i++) freeReplyObject(r[i]);
}

/* The first error among r[0..n-1] (the others freed), or NULL. */
static redisReply *first_error(redisReply **r, int n) {
    for (int i = 0; i < n; i++)
        if (r[i]->type == REDIS_REPLY_ERROR) {
            redisReply *e = r[i];
            r[i] = NULL;
            free_replies(r, n);
            return e;
        }
    return NULL;
}

/* The identity MGET T:v T:id answered (docs/FORMAT.md, "Identity"): T:id
 * when it names the version T:v holds, else T:v ("0" when missing), into
 * v (48 bytes); 0, or -1 when T:v is not a version. */
static int version_text(const redisReply *r, char *v) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) return -1;
    const redisReply *ver = r->element[0], *id = r->element[1];
    if (ver->type == REDIS_REPLY_NIL) strcpy(v, "0");
    else if (ver->type != REDIS_REPLY_STRING || ver->len == 0 || ver->len >= 24) return -1;
    else memcpy(v, ver->str, ver->len + 1);
    size_t vl = strlen(v);
    if (id->type == REDIS_REPLY_STRING && id->len < 48 && strncmp(id->str, v, vl) == 0 && id->str[vl] == ':')
        memcpy(v, id->str, id->len + 1);
    return 0;
}

/* One attempt: *out is the answer, an error reply, or NULL with *moved
 * set when the database changed meanwhile; -1 when the connection broke. */
static int begin_once(redis_store *s, const char *cached, redisReply **out, int *moved) {
    const char *get[] = {"MGET", s->keys[SKEY_T_V], s->keys[SKEY_T_ID]}, *hlen[] = {"HLEN", s->key},
               *cfg[] = {"EXISTS", s->keys[SKEY_T_CHANGES_CFG]};
    const char **first[] = {get, hlen, cfg};
    const int firstc[] = {3, 2, 2};
    redisReply *r[5];
    char v[48], again[48], n1[24], n0[24];
    *out = NULL;
    *moved = 0;
    if (kvsql_conn_pipeline(&s->conn, 3, firstc, first, r) != 0) return -1;
    if ((*out = first_error(r, 3))) return 0;
    long long n = r[1]->type == REDIS_REPLY_INTEGER ? r[1]->integer : -1;
    int bad = version_text(r[0], v) != 0 || n < 0;
    const char *head = r[2]->type == REDIS_REPLY_INTEGER && r[2]->integer == 1 ? "capture" : "ok";
    free_replies(r, 3);
    if (bad) return 0; /* *out NULL, not moved: the caller says it */
    char vn[80];
    snprintf(vn, sizeof(vn), "%s/%lld", v, n); /* as begin_once of store_redis.c sends it: named identities only */
    if (n == 0 || strcmp(vn, cached) == 0) { /* page 0 as of v is cached (or there is none) */
        *out = begin_answer(head, v, n, NULL, 0);
        return 0;
    }
    snprintf(n1, sizeof(n1), "%lld", n - 1);
    snprintf(n0, sizeof(n0), "%lld", n);
    const char *page0[] = {"HGET", s->key, "0"}, *last[] = {"HEXISTS", s->key, n1}, *past[] = {"HEXISTS", s->key, n0};
    const char **second[] = {page0, last, past, get, hlen};
    const int secondc[] = {3, 3, 3, 3, 2};
    if (kvsql_conn_pipeline(&s->conn, 5, secondc, second, r) != 0) return -1;
    if ((*out = first_error(r, 5))) return 0;
    *moved = version_text(r[3], again) != 0 || strcmp(again, v) != 0 || r[4]->type != REDIS_REPLY_INTEGER ||
             r[4]->integer != n;
    free_replies(r + 3, 2);
    if (*moved) {
        free_replies(r, 3);
        return 0;
    }
    *out = begin_answer(head, v, n, r, 3);
    return 0;
}

int rs_begin_plain(redis_store *s, const char *cached, redisReply **out) {
    for (int i = 0; i < PLAIN_TRIES; i++) {
        int moved;
        if (begin_once(s, cached, out, &moved) != 0) return kvsql_conn_lost(&s->conn, SQLITE_IOERR, "begin");
        if (!moved) return *out ? SQLITE_OK : rs_bad_reply(s, "begin (without scripts)");
    }
    return rs_fail(s, SQLITE_BUSY, "key %s: the database kept changing while a begin without scripts read it; "
                                   "try again", s->key);
}
