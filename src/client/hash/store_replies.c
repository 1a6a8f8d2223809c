/* store_replies.c - what every part of the hash store (redis_store.h)
 * makes of the server's replies, and how it says why a call failed: the
 * reason recorded for errmsg() and the VFS, the refusals every script may
 * answer before it writes anything (client/hash/scripts.h), the shape of
 * a reply. Calls nothing of the store's own files. */
#include "client/hash/redis_store.h"
#include "sqlite.h"

#include "format.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Records why rc happened for errmsg() and the VFS, then returns rc. */
int rs_fail(redis_store *s, int rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    rc = kvsql_conn_vfail(&s->conn, rc, fmt, ap);
    va_end(ap);
    return rc;
}

/* A call within a transaction whose connection was dropped. */
int rs_connection_gone(redis_store *s) {
    return rs_fail(s, SQLITE_IOERR, "redis at %s: the connection was lost in this transaction", s->conn.where);
}

int rs_reply_is(const redisReply *r, size_t i, const char *word) {
    return r->type == REDIS_REPLY_ARRAY && r->elements > i && r->element[i]->type == REDIS_REPLY_STRING &&
           strcmp(r->element[i]->str, word) == 0;
}

long long rs_reply_int(const redisReply *r) {
    if (r->type == REDIS_REPLY_INTEGER) return r->integer;
    if (r->type == REDIS_REPLY_STRING) return strtoll(r->str, NULL, 10);
    return -1;
}

int rs_bad_reply(redis_store *s, const char *what) {
    return rs_fail(s, SQLITE_IOERR, "redis at %s: unexpected reply to %s of key %s", s->conn.where, what, s->key);
}

static const char *elem_str(const redisReply *r, size_t i) {
    return r->elements > i && r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : "?";
}

int rs_refusal(redis_store *s, const redisReply *r) {
    if (rs_reply_is(r, 0, "aux"))
        return rs_fail(s, SQLITE_ERROR, "key %s: its auxiliary key %s holds a %s, not a %s (damaged or written by "
                                     "hand; docs/FORMAT.md): nothing was written",
                       s->key, elem_str(r, 1), elem_str(r, 2), elem_str(r, 3));
    if (rs_reply_is(r, 0, "version"))
        return rs_fail(s, SQLITE_ERROR, "key %s: its version key %s holds '%.40s', not a version number (damaged or "
                                     "written by hand): nothing was written",
                       s->key, s->keys[SKEY_T_V], elem_str(r, 1));
    if (rs_reply_is(r, 0, "cfg"))
        return rs_fail(s, SQLITE_ERROR, "key %s: kvsql changes: %s holds %s '%.40s', which is not valid (maxlen: 0 or "
                                     "a decimal integer of at most %d digits; trim: ~ or =): nothing was written",
                       s->key, s->keys[SKEY_T_CHANGES_CFG], elem_str(r, 1), elem_str(r, 2), KVSQL_CHANGES_MAXLEN_DIGITS);
    if (rs_reply_is(r, 0, "changes") && strcmp(elem_str(r, 1), "exhausted") == 0)
        return rs_fail(s, SQLITE_ERROR, "key %s: kvsql changes: the stream %s has no stream IDs left for this "
                                     "commit's entries: nothing was written", s->key, s->keys[SKEY_T_CHANGES]);
    if (rs_reply_is(r, 0, "changes"))
        return rs_fail(s, SQLITE_ERROR, "key %s: kvsql changes: %s holds a %s, not a stream: nothing was written",
                       s->key, s->keys[SKEY_T_CHANGES], elem_str(r, 1));
    if (rs_reply_is(r, 0, "gone"))
        return rs_fail(s, SQLITE_IOERR_WRITE, "key %s: the staged commit lost pages it had uploaded (%s was deleted, "
                                           "evicted or lapsed between steps): nothing was written",
                       s->key, s->keys[SKEY_T_STAGE]);
    return -1;
}

int rs_ident_named(const char *ident) {
    return strchr(ident, ':') != NULL;
}

double rs_monotonic_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}
