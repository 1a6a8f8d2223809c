/* format.c - the rules of the kvsql storage format; see format.h and
 * docs/FORMAT.md. Called by the VFS and by every store. */
#include "format.h"
#include "sqlite.h"

#include <stdio.h>
#include <string.h>

/* SQLite's lock bytes start at this file offset (PENDING_BYTE). */
#define LOCK_BYTE_OFFSET 0x40000000u

size_t kvsql_field_name(char out[KVSQL_FIELD_MAX], uint32_t index) {
    char rev[KVSQL_FIELD_MAX];
    size_t n = 0;
    do {
        rev[n++] = (char)('0' + index % 10);
        index /= 10;
    } while (index);
    for (size_t i = 0; i < n; i++) out[i] = rev[n - 1 - i];
    out[n] = 0;
    return n;
}

int kvsql_field_parse(const char *name, size_t len, uint32_t *index) {
    if (len == 0 || len > KVSQL_FIELD_MAX - 1 || (name[0] == '0' && len > 1)) return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (name[i] < '0' || name[i] > '9') return -1;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    if (v > UINT32_MAX) return -1;
    *index = (uint32_t)v;
    return 0;
}

int kvsql_page_size_valid(uint64_t n) {
    return n >= 512 && n <= 65536 && (n & (n - 1)) == 0;
}

int kvsql_check_page1(const unsigned char *page1, size_t len, char *why, size_t why_len) {
    static const char magic[16] = "SQLite format 3";
    const char *reason = NULL;
    if (page1 && kvsql_spread_copy_id_valid((const char *)page1, len))
        reason = "it holds a database of layout spread: open it with layout=spread";
    else if (!page1 || len < 100 || memcmp(page1, magic, 16) != 0)
        reason = "field 0 is not a SQLite header page";
    else if (!kvsql_page_size_valid(len) || kvsql_header_page_size(page1) != len)
        reason = "field 0 is not one page long, as its header says";
    else if (page1[18] == 2 || page1[19] == 2)
        reason = "the database is in WAL mode, which kvsql does not store";
    if (!reason) return 0;
    snprintf(why, why_len, "%s", reason);
    return -1;
}

uint32_t kvsql_lock_byte_index(uint32_t page_size) {
    return LOCK_BYTE_OFFSET / page_size;
}

uint32_t kvsql_hash_npages(uint32_t hlen, uint32_t page_size, int lock_byte_missing) {
    return hlen + (page_size && lock_byte_missing && hlen > kvsql_lock_byte_index(page_size) ? 1 : 0);
}

const char *kvsql_hashed_part(const char *key, size_t len, size_t *part_len) {
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t rest = len - (size_t)(open - key) - 1;
        const char *close = memchr(open + 1, '}', rest);
        if (close && close > open + 1) {
            *part_len = (size_t)(close - open - 1);
            return open + 1;
        }
    }
    *part_len = len;
    return key;
}

int kvsql_has_hash_tag(const char *key, size_t len) {
    size_t n;
    return kvsql_hashed_part(key, len, &n) != key;
}

size_t kvsql_aux_key(char *out, size_t cap, const char *key, size_t len, const char *suffix) {
    int tagged = kvsql_has_hash_tag(key, len);
    size_t slen = strlen(suffix);
    size_t n = len + slen + (tagged ? 0 : 2);
    if (n + 1 > cap) return n;
    char *p = out;
    if (!tagged) *p++ = '{';
    memcpy(p, key, len);
    p += len;
    if (!tagged) *p++ = '}';
    memcpy(p, suffix, slen + 1);
    return n;
}

const char *const kvsql_aux_all[KVSQL_AUX_COUNT] = {KVSQL_AUX_ALL};
_Static_assert(sizeof((const char *[]){KVSQL_AUX_ALL}) / sizeof(const char *) == KVSQL_AUX_COUNT,
               "KVSQL_AUX_COUNT counts KVSQL_AUX_ALL");

int kvsql_is_aux_key(const char *name, size_t len, size_t *db_len) {
    for (int i = 0; i < KVSQL_AUX_COUNT; i++) {
        size_t slen = strlen(kvsql_aux_all[i]);
        if (len <= slen || memcmp(name + len - slen, kvsql_aux_all[i], slen) != 0) continue;
        if (!kvsql_has_hash_tag(name, len - slen)) continue;
        *db_len = len - slen;
        return 1;
    }
    return 0;
}

_Static_assert(KVSQL_UNDO_FIELD_LEN == KVSQL_UNDO_PAGE_HEX + 1 + KVSQL_UNDO_VERSION_HEX, "undo field length");

void kvsql_undo_field(char out[KVSQL_UNDO_FIELD_LEN + 1], uint32_t index, uint64_t version) {
    snprintf(out, KVSQL_UNDO_FIELD_LEN + 1, "%0*x:%0*llx", KVSQL_UNDO_PAGE_HEX, (unsigned)index, KVSQL_UNDO_VERSION_HEX,
             (unsigned long long)version);
}

int kvsql_changes_maxlen_valid(const char *s, size_t len) {
    if (len == 0 || (len == 1 && s[0] == '0')) return 1;
    if (len > KVSQL_CHANGES_MAXLEN_DIGITS || s[0] < '1' || s[0] > '9') return 0;
    for (size_t i = 1; i < len; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    return 1;
}

int kvsql_changes_trim_valid(const char *s, size_t len) {
    return len == 0 || (len == 1 && (s[0] == '~' || s[0] == '='));
}

/* Parses the decimal digits of s[0..len) into *v; -1 when they are not a
 * uint64_t. */
static int parse_u64(const char *s, size_t len, uint64_t *v) {
    if (len == 0 || len > 20) return -1;
    uint64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (n > (UINT64_MAX - d) / 10) return -1;
        n = n * 10 + d;
    }
    *v = n;
    return 0;
}

int kvsql_stream_has_room(const char *last_id, size_t len, uint64_t need) {
    const char *dash = memchr(last_id, '-', len);
    uint64_t ms, seq;
    if (!dash || parse_u64(last_id, (size_t)(dash - last_id), &ms) != 0 ||
        parse_u64(dash + 1, len - (size_t)(dash + 1 - last_id), &seq) != 0)
        return 0;
    /* XADD * takes the next ID after the last one: the same ms, seq + 1,
     * then the next ms from seq 0. Only the last ms can run out. */
    return ms < UINT64_MAX || UINT64_MAX - seq >= need;
}

size_t kvsql_spread_run_key(char *out, size_t cap, const char *key, size_t len, uint32_t run) {
    size_t hlen;
    const char *h = kvsql_hashed_part(key, len, &hlen);
    char num[KVSQL_FIELD_MAX];
    size_t nlen = kvsql_field_name(num, run);
    size_t slen = strlen(KVSQL_SPREAD_RUN_SUFFIX);
    size_t n = 1 + hlen + 1 + nlen + 1 + len + slen;
    if (n + 1 > cap) return n;
    char *p = out;
    *p++ = '{';
    memcpy(p, h, hlen);
    p += hlen;
    *p++ = '/';
    memcpy(p, num, nlen);
    p += nlen;
    *p++ = '}';
    memcpy(p, key, len);
    p += len;
    memcpy(p, KVSQL_SPREAD_RUN_SUFFIX, slen + 1);
    return n;
}

size_t kvsql_spread_copy_field(char out[KVSQL_SPREAD_COPY_FIELD_MAX], uint32_t page, const char *copy_id) {
    size_t n = kvsql_field_name(out, page);
    out[n++] = ':';
    memcpy(out + n, copy_id, KVSQL_ID_HEX);
    n += KVSQL_ID_HEX;
    out[n] = 0;
    return n;
}

int kvsql_spread_copy_id_valid(const char *s, size_t len) {
    if (len != KVSQL_ID_HEX) return 0;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}
