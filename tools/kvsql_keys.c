/* kvsql_keys.c - `kvsql ls`, `kvsql rm` and the removal half of `kvsql
 * mv`: a database's keys as a whole (kvsql_keys.h).
 *
 * A one-hash database's removal is one Lua script that checks, then
 * deletes the hash and every auxiliary key of src/format.h's list: atomic,
 * and replicated as the deletions it made. A spread database's (its run
 * keys are in other slots) makes the same checks in one script that also
 * takes its writer's lease and counts its run keys from its home keys (no
 * keyspace scan); the run keys then go in batches, the lease renewed after
 * each, and the home keys last, in one script that checks the lease is
 * still the removal's (docs/COMMANDS.md says what is atomic). A listing SCANs the hashes of each master and shows
 * those whose field "0" is a SQLite header page, leaving out the
 * format's auxiliary keys. */
#include "kvsql_keys.h"

#include "client/net/cluster.h"
#include "client/net/conn.h"
#include "client/net/transport.h"
#include "format.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define STR_(x) #x
#define STR(x) STR_(x)
#define STR_RUN STR(KVSQL_SPREAD_RUN)

/* ---- one connection, routed to the node that serves a key ---------------- */

typedef struct link {
    kvsql_redis_config cfg;
    kvsql_redis_stats stats;
    kvsql_conn cn;
} link;

static void on_drop(void *owner) {
    (void)owner;
}

/* Connects l for key; -1 with why in err. l must stay where it is. */
static int link_open(link *l, const kvsql_redis_config *cfg, const char *key, char *err, size_t errlen) {
    memset(l, 0, sizeof(*l));
    l->cfg = *cfg;
    kvsql_conn_init(&l->cn, key, &l->cfg, &l->stats, on_drop, l);
    if (kvsql_conn_connect(&l->cn) == SQLITE_OK) return 0;
    snprintf(err, errlen, "%s", l->cn.err);
    kvsql_conn_close(&l->cn);
    return -1;
}

/* One command; NULL with why in err (an error reply is returned as it is). */
static redisReply *link_call(link *l, int argc, const char **argv, const size_t *lens, char *err, size_t errlen) {
    redisReply *r = kvsql_conn_round_trip(&l->cn, argc, argv, lens);
    const char *why = l->cn.c ? kvsql_link_error(l->cn.c) : NULL;
    if (!r) snprintf(err, errlen, "redis at %s: %s", l->cn.where, why && why[0] ? why : "connection lost");
    return r;
}

/* ---- the keys of a database --------------------------------------------- */

/* The index in kvsql_aux_all of an auxiliary key suffix. */
static int aux_index(const char *suffix) {
    for (int i = 0; i < KVSQL_AUX_COUNT; i++)
        if (strcmp(kvsql_aux_all[i], suffix) == 0) return i;
    return -1;
}

/* key and its auxiliary keys: names[0] is key, names[1 + i] the key of
 * kvsql_aux_all[i]. Returns 0, or -1 when out of memory (free it anyway). */
static int database_keys(const char *key, char *names[1 + KVSQL_AUX_COUNT]) {
    size_t len = strlen(key);
    memset(names, 0, sizeof(char *) * (1 + KVSQL_AUX_COUNT));
    if (!(names[0] = strdup(key))) return -1;
    for (int i = 0; i < KVSQL_AUX_COUNT; i++) {
        size_t n = kvsql_aux_key(NULL, 0, key, len, kvsql_aux_all[i]) + 1;
        if (!(names[1 + i] = malloc(n))) return -1;
        kvsql_aux_key(names[1 + i], n, key, len, kvsql_aux_all[i]);
    }
    return 0;
}

static void free_keys(char *names[1 + KVSQL_AUX_COUNT]) {
    for (int i = 0; i < 1 + KVSQL_AUX_COUNT; i++) free(names[i]);
}

/* KEYS: the database and its auxiliary keys. ARGV: force, the expected
 * version ("" : any), the KEYS indexes of the lease, of the module's
 * big-write stage, of the version, of T:gc and of T:pending, then a
 * removal token and a lease time (ms). Checks everything; then a one-hash
 * database is deleted at once (its count of keys), while a spread one
 * (docs/FORMAT.md, "The spread layout": its page map says layout=spread)
 * is not touched but its lease is taken with the token and {'spread',
 * runs, 1 when the lease existed before} answered: runs is the count of run keys that may hold a copy of
 * it (the high-water page count of its map, its superseded copies T:gc and
 * its writers' intents T:pending, in runs of KVSQL_SPREAD_RUN pages). */
static const char remove_script[] =
    "local t = redis.call('TYPE', KEYS[1])['ok']\n"
    "if t ~= 'hash' and t ~= 'none' then\n"
    "  return redis.error_reply('WRONGTYPE the key holds a ' .. t .. ', not a database') end\n"
    "if ARGV[1] ~= '1' and redis.call('EXISTS', KEYS[tonumber(ARGV[3])]) == 1 then\n"
    "  return redis.error_reply('LEASED a writer holds its lease (is writing it): add --force to remove it anyway') end\n"
    "if ARGV[1] ~= '1' and redis.call('EXISTS', KEYS[tonumber(ARGV[4])]) == 1 then\n"
    "  return redis.error_reply('LEASED the module is writing it (a big write): add --force to remove it anyway') end\n"
    "if ARGV[2] ~= '' and (redis.call('GET', KEYS[tonumber(ARGV[5])]) or '0') ~= ARGV[2] then\n"
    "  return redis.error_reply('CHANGED it was written meanwhile (version ' .. ARGV[2] .. ' was copied)') end\n"
    "if t == 'hash' and redis.call('HGET', KEYS[1], '" KVSQL_SPREAD_LAYOUT_FIELD "') == '" KVSQL_SPREAD_LAYOUT "' then\n"
    "  local hw = tonumber(redis.call('HGET', KEYS[1], '" KVSQL_SPREAD_NPAGES_FIELD "') or '0') or 0\n"
    "  local gk, pk = KEYS[tonumber(ARGV[6])], KEYS[tonumber(ARGV[7])]\n"
    "  if redis.call('TYPE', gk)['ok'] == 'zset' then\n"
    "    for _, m in ipairs(redis.call('ZRANGE', gk, 0, -1)) do\n"
    "      local p = tonumber(string.match(m, '^(%d+):') or '')\n"
    "      if p and p + 1 > hw then hw = p + 1 end\n"
    "    end\n"
    "  end\n"
    "  if redis.call('TYPE', pk)['ok'] == 'zset' then\n"
    "    for _, m in ipairs(redis.call('ZRANGE', pk, 0, -1)) do\n"
    "      local rest = string.match(m, '^%x+:(.*)$') or ''\n"
    "      local below = tonumber(string.match(rest, '^%*(%d+)$') or '')\n"
    "      if below then hw = math.max(hw, below)\n"
    "      else for d in string.gmatch(rest, '%d+') do hw = math.max(hw, tonumber(d) + 1) end end\n"
    "    end\n"
    "  end\n"
    "  local held = redis.call('EXISTS', KEYS[tonumber(ARGV[3])])\n"
    "  redis.call('SET', KEYS[tonumber(ARGV[3])], ARGV[8], 'PX', ARGV[9])\n"
    "  return {'spread', math.floor((hw + " STR_RUN " - 1) / " STR_RUN "), held}\n"
    "end\n"
    "local n = 0\n"
    "for i = 1, #KEYS do n = n + redis.call('DEL', KEYS[i]) end\n"
    "return n\n";

/* KEYS[1]: the lease. ARGV: the removal token, the lease time (ms).
 * Extends the lease while it is still the token's: 1, else 0. */
static const char renew_script[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "return 1\n";

/* KEYS: as remove_script's. ARGV: the lease's KEYS index, the removal
 * token. Deletes every key while the lease is still the token's. */
static const char finish_script[] =
    "if redis.call('GET', KEYS[tonumber(ARGV[1])]) ~= ARGV[2] then\n"
    "  return redis.error_reply('LOST the removal lost its lease before its last step') end\n"
    "local n = 0\n"
    "for i = 1, #KEYS do n = n + redis.call('DEL', KEYS[i]) end\n"
    "return n\n";

/* The removal's hold on a spread database's lease, renewed after every
 * batch of run keys: long enough for many batches, short enough that a
 * removal killed midway frees the database soon. */
#define REMOVE_LEASE_MS "10000"
/* Run keys deleted per round trip. */
#define REMOVE_BATCH 64

/* An error reply's words without its code (the scripts' own codes). */
static void reply_words(const redisReply *r, char *err, size_t errlen) {
    const char *msg = r->str, *space = strchr(msg, ' ');
    if (space && (!strncmp(msg, "WRONGTYPE", 9) || !strncmp(msg, "LEASED", 6) || !strncmp(msg, "CHANGED", 7) ||
                  !strncmp(msg, "LOST", 4)))
        msg = space + 1;
    snprintf(err, errlen, "%s", msg);
}

/* EVAL of script over the database's keys names with the arguments args. */
static redisReply *eval_keys(link *l, const char *script, char *names[1 + KVSQL_AUX_COUNT], int nargs,
                             const char **args, char *err, size_t errlen) {
    char nkeys[8];
    snprintf(nkeys, sizeof(nkeys), "%d", 1 + KVSQL_AUX_COUNT);
    const char *argv[3 + 1 + KVSQL_AUX_COUNT + 16];
    int a = 0;
    argv[a++] = "EVAL";
    argv[a++] = script;
    argv[a++] = nkeys;
    for (int i = 0; i < 1 + KVSQL_AUX_COUNT; i++) argv[a++] = names[i];
    for (int i = 0; i < nargs && i < 16; i++) argv[a++] = args[i];
    return link_call(l, a, argv, NULL, err, errlen);
}

/* DEL of the run keys [from, to) of key, one pipeline on l; a key another
 * node serves (a Redis Cluster's MOVED or ASK) is sent again routed.
 * Adds the keys deleted to *n. 0, or -1 with why in err. */
static int delete_runs(link *l, const char *key, uint32_t from, uint32_t to, long *n, char *err, size_t errlen) {
    int count = (int)(to - from), rc = 0;
    char *names[REMOVE_BATCH] = {0};
    const char *argvs[REMOVE_BATCH][2];
    const char **pv[REMOVE_BATCH];
    int argcs[REMOVE_BATCH];
    redisReply *out[REMOVE_BATCH] = {0};
    size_t len = strlen(key);
    for (int i = 0; i < count && rc == 0; i++) {
        size_t need = kvsql_spread_run_key(NULL, 0, key, len, from + (uint32_t)i) + 1;
        if (!(names[i] = malloc(need))) rc = -1, snprintf(err, errlen, "out of memory");
        else kvsql_spread_run_key(names[i], need, key, len, from + (uint32_t)i);
        argvs[i][0] = "DEL";
        argvs[i][1] = names[i];
        pv[i] = argvs[i];
        argcs[i] = 2;
    }
    if (rc == 0 && (kvsql_conn_down(&l->cn) || kvsql_conn_pipeline(&l->cn, count, argcs, pv, out) != 0)) {
        snprintf(err, errlen, "redis at %s: connection lost while deleting run keys", l->cn.where);
        rc = -1;
    }
    for (int i = 0; i < count && rc == 0; i++) {
        if (out[i]->type == REDIS_REPLY_ERROR && (!strncmp(out[i]->str, "MOVED ", 6) || !strncmp(out[i]->str, "ASK ", 4))) {
            freeReplyObject(out[i]);
            if (!(out[i] = link_call(l, 2, argvs[i], NULL, err, errlen))) rc = -1;
        }
        if (rc == 0 && out[i]->type == REDIS_REPLY_INTEGER) *n += (long)out[i]->integer;
        else if (rc == 0) {
            snprintf(err, errlen, "DEL %s: %s", names[i], out[i]->type == REDIS_REPLY_ERROR ? out[i]->str : "unexpected reply");
            rc = -1;
        }
    }
    for (int i = 0; i < count; i++) {
        freeReplyObject(out[i]);
        free(names[i]);
    }
    return rc;
}

/* The rest of a spread database's removal, its lease held with token:
 * its runs run keys in batches (the lease renewed after each), then its
 * home keys in one script. Adds the keys deleted to *n. 0, or -1. */
static int remove_spread(link *l, const char *key, char *names[1 + KVSQL_AUX_COUNT], uint32_t runs,
                         const char *token, const char *lease_index, long *n, char *err, size_t errlen) {
    for (uint32_t r = 0; r < runs; r += REMOVE_BATCH) {
        uint32_t to = runs - r < REMOVE_BATCH ? runs : r + REMOVE_BATCH;
        if (delete_runs(l, key, r, to, n, err, errlen) != 0) return -1;
        const char *renew[6] = {"EVAL", renew_script, "1", names[1 + aux_index(KVSQL_AUX_LEASE)], token,
                                REMOVE_LEASE_MS};
        redisReply *y = link_call(l, 6, renew, NULL, err, errlen);
        int held = y && y->type == REDIS_REPLY_INTEGER && y->integer == 1;
        if (y && !held)
            snprintf(err, errlen, "the removal lost its lease after %u of %u run keys: run kvsql rm again", to, runs);
        freeReplyObject(y);
        if (!held) return -1;
    }
    const char *args[2] = {lease_index, token};
    redisReply *f = eval_keys(l, finish_script, names, 2, args, err, errlen);
    int rc = f && f->type == REDIS_REPLY_INTEGER ? 0 : -1;
    if (rc == 0) *n += (long)f->integer;
    else if (f && f->type == REDIS_REPLY_ERROR) reply_words(f, err, errlen);
    else if (f) snprintf(err, errlen, "unexpected reply to the removal's last step");
    freeReplyObject(f);
    return rc;
}

long keys_remove(const kvsql_redis_config *cfg, const char *key, int force, const char *expect_version, char *err,
                 size_t errlen) {
    char *names[1 + KVSQL_AUX_COUNT];
    link l;
    long n = -1;
    if (database_keys(key, names) != 0) {
        snprintf(err, errlen, "out of memory");
    } else if (link_open(&l, cfg, key, err, errlen) == 0) {
        char lease[8], wstage[8], version[8], gc[8], pending[8], token[9 + 2 * 16 + 1] = "kvsql-rm:";
        snprintf(lease, sizeof(lease), "%d", 2 + aux_index(KVSQL_AUX_LEASE));
        snprintf(wstage, sizeof(wstage), "%d", 2 + aux_index(KVSQL_AUX_WSTAGE));
        snprintf(version, sizeof(version), "%d", 2 + aux_index(KVSQL_AUX_VERSION));
        snprintf(gc, sizeof(gc), "%d", 2 + aux_index(KVSQL_AUX_GC));
        snprintf(pending, sizeof(pending), "%d", 2 + aux_index(KVSQL_AUX_PENDING));
        kvsql_random_hex(token + 9, 16);
        const char *args[9] = {force ? "1" : "0", expect_version ? expect_version : "", lease, wstage, version, gc,
                               pending, token, REMOVE_LEASE_MS};
        redisReply *r = eval_keys(&l, remove_script, names, 9, args, err, errlen);
        if (r && r->type == REDIS_REPLY_INTEGER) n = (long)r->integer;
        else if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 3 && r->element[1]->type == REDIS_REPLY_INTEGER &&
                 r->element[1]->integer >= 0 && r->element[1]->integer <= UINT32_MAX &&
                 r->element[2]->type == REDIS_REPLY_INTEGER) {
            long done = 0; /* a spread database: its lease is held now (the removal's own is not counted) */
            if (remove_spread(&l, key, names, (uint32_t)r->element[1]->integer, token, lease, &done, err, errlen) == 0)
                n = done - 1 + (long)r->element[2]->integer;
        } else if (r && r->type == REDIS_REPLY_ERROR) {
            reply_words(r, err, errlen);
        } else if (r) {
            snprintf(err, errlen, "unexpected reply to the removal script");
        }
        freeReplyObject(r);
        kvsql_conn_close(&l.cn);
    }
    free_keys(names);
    return n;
}

int keys_state(const kvsql_redis_config *cfg, const char *key, char *out, size_t outlen, int *spread, char *err,
               size_t errlen) {
    char *names[1 + KVSQL_AUX_COUNT];
    link l;
    int held = -1;
    *spread = 0;
    if (database_keys(key, names) != 0) {
        snprintf(err, errlen, "out of memory");
    } else if (link_open(&l, cfg, key, err, errlen) == 0) {
        const char *get[2] = {"GET", names[1 + aux_index(KVSQL_AUX_VERSION)]};
        const char *exists[2] = {"EXISTS", names[1 + aux_index(KVSQL_AUX_LEASE)]};
        const char *layout[3] = {"HGET", key, KVSQL_SPREAD_LAYOUT_FIELD};
        redisReply *v = link_call(&l, 2, get, NULL, err, errlen);
        redisReply *e = v ? link_call(&l, 2, exists, NULL, err, errlen) : NULL;
        redisReply *m = e ? link_call(&l, 3, layout, NULL, err, errlen) : NULL; /* an error: not a hash */
        if (m && (v->type == REDIS_REPLY_STRING || v->type == REDIS_REPLY_NIL) && e->type == REDIS_REPLY_INTEGER) {
            snprintf(out, outlen, "%s", v->type == REDIS_REPLY_NIL ? "0" : v->str);
            held = e->integer > 0;
            *spread = m->type == REDIS_REPLY_STRING && strcmp(m->str, KVSQL_SPREAD_LAYOUT) == 0;
        } else if (m) {
            snprintf(err, errlen, "%s", v->type == REDIS_REPLY_ERROR ? v->str : e->type == REDIS_REPLY_ERROR ? e->str : "unexpected reply");
        }
        freeReplyObject(v);
        freeReplyObject(e);
        freeReplyObject(m);
        kvsql_conn_close(&l.cn);
    }
    free_keys(names);
    return held;
}

/* ---- listing -------------------------------------------------------------- */

typedef struct row {
    char *key;
    size_t len;
    char layout[48];
    long long pages, size;
    char version[24];
} row;

typedef struct rows {
    row *v;
    size_t n, cap;
} rows;

/* Describes the spread database whose page map is `key` (docs/FORMAT.md,
 * "The spread layout"): 1, or 0 when the map lacks its layout fields. */
static int describe_spread(link *l, const char *key, size_t len, const redisReply *v, row *rw, char *err,
                           size_t errlen) {
    const char *hmget[5] = {"HMGET", key, KVSQL_SPREAD_LAYOUT_FIELD, KVSQL_SPREAD_NPAGES_FIELD, KVSQL_SPREAD_PSIZE_FIELD};
    size_t hmget_l[5] = {5, len, strlen(hmget[2]), strlen(hmget[3]), strlen(hmget[4])};
    redisReply *m = link_call(l, 5, hmget, hmget_l, err, errlen);
    if (!m) return -1;
    int rc = 0;
    if (m->type == REDIS_REPLY_ARRAY && m->elements == 3 && m->element[0]->type == REDIS_REPLY_STRING &&
        strcmp(m->element[0]->str, KVSQL_SPREAD_LAYOUT) == 0 && m->element[1]->type == REDIS_REPLY_STRING &&
        m->element[2]->type == REDIS_REPLY_STRING) {
        long long psz = atoll(m->element[2]->str);
        rw->pages = atoll(m->element[1]->str);
        rw->size = rw->pages * psz;
        snprintf(rw->layout, sizeof(rw->layout), "spread/%lld", psz);
        snprintf(rw->version, sizeof(rw->version), "%s", v->type == REDIS_REPLY_STRING ? v->str : "0");
        rc = 1;
    }
    freeReplyObject(m);
    return rc;
}

/* Describes hash `key` into rw when it holds a database: 1, 0 when not
 * one, -1 with why in err. */
static int describe(link *l, const char *key, size_t len, row *rw, char *err, size_t errlen) {
    size_t aux_len = kvsql_aux_key(NULL, 0, key, len, KVSQL_AUX_VERSION);
    char *vkey = malloc(aux_len + 1);
    if (!vkey) return snprintf(err, errlen, "out of memory"), -1;
    kvsql_aux_key(vkey, aux_len + 1, key, len, KVSQL_AUX_VERSION);
    const char *hget[3] = {"HGET", key, "0"}, *hlen[2] = {"HLEN", key}, *get[2] = {"GET", vkey};
    size_t hget_l[3] = {4, len, 1}, hlen_l[2] = {4, len}, get_l[2] = {3, aux_len};
    redisReply *p1 = link_call(l, 3, hget, hget_l, err, errlen);
    redisReply *n = p1 ? link_call(l, 2, hlen, hlen_l, err, errlen) : NULL;
    redisReply *v = n ? link_call(l, 2, get, get_l, err, errlen) : NULL;
    int rc = v ? 0 : -1;
    char why[100];
    if (rc == 0 && p1->type == REDIS_REPLY_STRING &&
        kvsql_check_page1((const unsigned char *)p1->str, p1->len, why, sizeof(why)) == 0 &&
        n->type == REDIS_REPLY_INTEGER) {
        uint32_t psz = kvsql_header_page_size((const unsigned char *)p1->str);
        rw->pages = n->integer;
        rw->size = n->integer * (long long)psz;
        snprintf(rw->layout, sizeof(rw->layout), "hash/%u", (unsigned)psz);
        snprintf(rw->version, sizeof(rw->version), "%s", v->type == REDIS_REPLY_STRING ? v->str : "0");
        rc = 1;
    } else if (rc == 0 && p1->type == REDIS_REPLY_STRING && kvsql_spread_copy_id_valid(p1->str, p1->len)) {
        rc = describe_spread(l, key, len, v, rw, err, errlen); /* a spread database's page map */
    }
    freeReplyObject(p1);
    freeReplyObject(n);
    freeReplyObject(v);
    free(vkey);
    return rc;
}

static int add_row(rows *rs, const row *rw, const char *key, size_t len) {
    if (rs->n == rs->cap) {
        size_t cap = rs->cap ? rs->cap * 2 : 16;
        row *v = realloc(rs->v, cap * sizeof(row));
        if (!v) return -1;
        rs->v = v;
        rs->cap = cap;
    }
    row *dst = &rs->v[rs->n];
    *dst = *rw;
    if (!(dst->key = malloc(len + 1))) return -1;
    memcpy(dst->key, key, len);
    dst->key[len] = 0;
    dst->len = len;
    rs->n++;
    return 0;
}

/* Every database on the node l is connected to. */
static int scan_node(link *l, rows *rs, char *err, size_t errlen) {
    char cursor[32] = "0";
    int turns = 0;
    do {
        const char *scan[7] = {"SCAN", cursor, "COUNT", "1000", "TYPE", "hash"};
        redisReply *r = link_call(l, 6, scan, NULL, err, errlen);
        if (!r) return -1;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
            r->element[1]->type != REDIS_REPLY_ARRAY) {
            snprintf(err, errlen, "redis at %s: SCAN: %s", l->cn.where, r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
            freeReplyObject(r);
            return -1;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            const redisReply *k = r->element[1]->element[i];
            size_t db_len;
            row rw;
            if (k->type != REDIS_REPLY_STRING || kvsql_is_aux_key(k->str, k->len, &db_len)) continue;
            int is_db = describe(l, k->str, k->len, &rw, err, errlen);
            if (is_db < 0 || (is_db && add_row(rs, &rw, k->str, k->len) != 0)) {
                if (is_db > 0) snprintf(err, errlen, "out of memory");
                freeReplyObject(r);
                return -1;
            }
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0 && ++turns < 100000000);
    return 0;
}

/* A key of slot (found by trying names): connecting for it reaches the
 * slot's owner. */
static void key_of_slot(int slot, char *out, size_t n) {
    for (unsigned i = 0;; i++) {
        snprintf(out, n, "kvsql-ls-%u", i);
        if (kvsql_key_slot(out, strlen(out)) == slot) return;
    }
}

/* Scans each master of the cluster map r (CLUSTER SLOTS) once. */
static int scan_cluster(const kvsql_redis_config *cfg, const redisReply *r, rows *rs, char *err, size_t errlen) {
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *range = r->element[i];
        if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 || range->element[2]->type != REDIS_REPLY_ARRAY ||
            range->element[2]->elements < 2)
            continue;
        int seen = 0; /* the same master in an earlier range */
        const redisReply *m = range->element[2];
        for (size_t j = 0; j < i && !seen; j++) {
            const redisReply *o = r->element[j];
            seen = o->type == REDIS_REPLY_ARRAY && o->elements >= 3 && o->element[2]->type == REDIS_REPLY_ARRAY &&
                   o->element[2]->elements >= 2 && strcmp(o->element[2]->element[0]->str, m->element[0]->str) == 0 &&
                   o->element[2]->element[1]->integer == m->element[1]->integer;
        }
        if (seen) continue;
        char key[40];
        link l;
        key_of_slot((int)range->element[0]->integer, key, sizeof(key));
        if (link_open(&l, cfg, key, err, errlen) != 0) return -1;
        int rc = scan_node(&l, rs, err, errlen);
        kvsql_conn_close(&l.cn);
        if (rc != 0) return -1;
    }
    return 0;
}

static int by_key(const void *a, const void *b) {
    const row *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->key, y->key, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* The key as text: bytes outside printable ASCII as \xNN. */
static void print_key(FILE *out, const row *rw) {
    for (size_t i = 0; i < rw->len; i++) {
        unsigned char ch = (unsigned char)rw->key[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '\\') fputc(ch, out);
        else fprintf(out, "\\x%02x", ch);
    }
}

long keys_list(const kvsql_redis_config *cfg, FILE *out, char *err, size_t errlen) {
    rows rs = {0};
    link l;
    if (link_open(&l, cfg, "kvsql-ls", err, errlen) != 0) return -1;
    const char *slots[2] = {"CLUSTER", "SLOTS"};
    redisReply *r = cfg->port ? link_call(&l, 2, slots, NULL, err, errlen) : NULL;
    int rc = cfg->port && !r ? -1 : 0;
    if (rc == 0 && r && r->type == REDIS_REPLY_ARRAY) rc = scan_cluster(cfg, r, &rs, err, errlen);
    else if (rc == 0) rc = scan_node(&l, &rs, err, errlen); /* not a cluster: this one server */
    freeReplyObject(r);
    kvsql_conn_close(&l.cn);
    if (rc == 0) {
        qsort(rs.v, rs.n, sizeof(row), by_key);
        fprintf(out, "%-24s %-10s %10s %14s %10s\n", "KEY", "LAYOUT", "PAGES", "SIZE", "VERSION");
        for (size_t i = 0; i < rs.n; i++) {
            print_key(out, &rs.v[i]);
            fprintf(out, "%*s %-10s %10lld %14lld %10s\n", rs.v[i].len < 24 ? (int)(24 - rs.v[i].len) : 0, "",
                    rs.v[i].layout, rs.v[i].pages, rs.v[i].size, rs.v[i].version);
        }
    }
    for (size_t i = 0; i < rs.n; i++) free(rs.v[i].key);
    free(rs.v);
    return rc == 0 ? (long)rs.n : -1;
}
