/* format.h - the rules of the kvsql storage format in code (docs/FORMAT.md
 * is the text): field names of pages, page 1's header, page sizes, the
 * lock-byte page, and the names of a database's auxiliary keys.
 *
 * Used by every store (memory, the module's keyspace store, the library's
 * redis store) and by the VFS, so each rule has exactly one owner. Calls no
 * Redis API. */
#ifndef KVSQL_FORMAT_H
#define KVSQL_FORMAT_H

#include <stddef.h>
#include <stdint.h>

/* ---- fields: page index <-> field name --------------------------------- */

/* The longest field name of a page index (uint32_t), with its NUL. */
#define KVSQL_FIELD_MAX 11

/* Writes the field name of page index `index` (decimal, no leading zeros)
 * into out and returns its length. */
size_t kvsql_field_name(char out[KVSQL_FIELD_MAX], uint32_t index);

/* Parses a field name back: returns 0 and sets *index when `name` (len
 * bytes) is exactly the field name of a page index, else -1 ("007", "-1",
 * "1x", "" and numbers beyond 32 bits are not). */
int kvsql_field_parse(const char *name, size_t len, uint32_t *index);

/* ---- page sizes and page 1 --------------------------------------------- */

/* SQLite's page sizes: a power of two from 512 to 65536. */
int kvsql_page_size_valid(uint64_t n);

/* The page size recorded in page 1's header (bytes 16-17; 1 means 65536). */
static inline uint32_t kvsql_header_page_size(const unsigned char *page1) {
    uint32_t v = (uint32_t)page1[16] << 8 | page1[17];
    return v == 1 ? 65536 : v;
}

/* Checks that page1 (len bytes, the value of field "0") is the first page
 * of a database in the kvsql format: the SQLite magic, a valid page size
 * equal to len, rollback-journal mode (not WAL). Returns 0, or -1 with the
 * reason in words in why (why_len bytes): a copy id there (field "0" of a
 * spread database's page map, below) is said to be the spread layout, so
 * that no one-hash reader (module or library) takes that map for pages. */
int kvsql_check_page1(const unsigned char *page1, size_t len, char *why, size_t why_len);

/* ---- the lock-byte page ------------------------------------------------ */

/* SQLite never writes the page holding file offset 1 GiB (its lock bytes),
 * so the format stores it as zeros: this is its index for a page size. */
uint32_t kvsql_lock_byte_index(uint32_t page_size);

/* The length in pages of a database stored in a hash of hlen fields:
 * hlen, plus one when the hash is one written before the lock-byte rule
 * (hlen above the lock-byte index and the lock-byte field missing, said by
 * lock_byte_missing): that page reads as zeros. */
uint32_t kvsql_hash_npages(uint32_t hlen, uint32_t page_size, int lock_byte_missing);

/* ---- auxiliary keys ---------------------------------------------------- */

/* Whether key (len bytes) has a Redis Cluster hash tag: a '{' and, later,
 * the first '}' after it, with at least one byte between them. */
int kvsql_has_hash_tag(const char *key, size_t len);

/* The part of key that Redis Cluster hashes: its hash tag's content, or
 * the whole key when it has none. Sets *part_len. */
const char *kvsql_hashed_part(const char *key, size_t len, size_t *part_len);

/* The suffixes of a database's auxiliary keys (T:v, T:lease, ...). */
#define KVSQL_AUX_VERSION ":v"
#define KVSQL_AUX_LEASE ":lease"
#define KVSQL_AUX_READERS ":readers"
#define KVSQL_AUX_UNDO ":undo"
#define KVSQL_AUX_UNDO_IDX ":undo:idx"
#define KVSQL_AUX_UNDO_VER ":undo:ver"
#define KVSQL_AUX_LOG ":log"
#define KVSQL_AUX_CHANGES ":changes"            /* the row changes stream (SQL.CHANGES) */
#define KVSQL_AUX_CHANGES_CONFIG ":changes:cfg" /* whether capture is on, and its MAXLEN */
#define KVSQL_AUX_STAGE ":stage"         /* a big library commit's new hash, while it is built */
#define KVSQL_AUX_STAGE_OLD ":stage:old" /* the hash it replaces, for a moment inside the publish */
#define KVSQL_AUX_WSTAGE ":wstage" /* a big write of the module's worker: its new hash while it is built */
#define KVSQL_AUX_QUEUE ":queue"   /* the writers waiting for the lease, in turn (docs/FORMAT.md, "Turns") */
/* A waiting writer's place in T:queue lapses this long after its last
 * attempt: a writer that stopped waiting falls out. */
#define KVSQL_QUEUE_LAPSE_MS 250
/* T:queue's members: "<arrival ms, KVSQL_QUEUE_ARRIVAL digits>:<waiter>". */
#define KVSQL_QUEUE_ARRIVAL 15
#define KVSQL_AUX_ID ":id" /* the identity of the version T:v holds: "<v>:<KVSQL_ID_HEX hex digits>" */
#define KVSQL_AUX_GC ":gc"           /* spread layout: page copies superseded, to collect (below) */
#define KVSQL_AUX_PENDING ":pending" /* spread layout: copies written but not yet published */
/* Every suffix above, for code that must name all of a database's keys
 * (deleting, copying or listing databases: kvsql_aux_all below). */
#define KVSQL_AUX_ALL                                                                                          \
    KVSQL_AUX_VERSION, KVSQL_AUX_LEASE, KVSQL_AUX_READERS, KVSQL_AUX_UNDO, KVSQL_AUX_UNDO_IDX, KVSQL_AUX_UNDO_VER, \
        KVSQL_AUX_LOG, KVSQL_AUX_CHANGES, KVSQL_AUX_CHANGES_CONFIG, KVSQL_AUX_STAGE, KVSQL_AUX_STAGE_OLD, \
        KVSQL_AUX_WSTAGE, KVSQL_AUX_QUEUE, KVSQL_AUX_ID, KVSQL_AUX_GC, KVSQL_AUX_PENDING

/* The list above as an array, its one owner for code that handles a
 * database as a whole: `kvsql rm/cp/mv/ls` (tools/kvsql_keys.c), SQL.DROP
 * (src/module/commands/drop.c), tools/slt_sqlite.c. */
#define KVSQL_AUX_COUNT 16
extern const char *const kvsql_aux_all[KVSQL_AUX_COUNT];

/* Whether name (len bytes) is the name of an auxiliary key of some
 * database: T + one of the suffixes, with T a key that has a hash tag
 * ({K} or a tagged K). Sets *db_len to the length of T (so that the
 * database's key is T, or T without its braces when it was "{K}"). */
int kvsql_is_aux_key(const char *name, size_t len, size_t *db_len);

/* ---- change capture's configuration and stream -------------------------- */

/* T:changes:cfg's field maxlen (len bytes): valid when it is empty (or the
 * field missing: pass ""), "0" (both: no limit) or a count of 1 to
 * KVSQL_CHANGES_MAXLEN_DIGITS decimal digits without a leading zero, which
 * is what XADD MAXLEN takes. Field trim: empty, "~" (the default) or "=".
 * Anything else is not a configuration: a write whose entries would use it
 * is refused with nothing written (docs/FORMAT.md, "The changes stream").
 * The module checks with these (src/module/store/changes.c); the library's
 * commit script states the same rule in Lua (`^[1-9]%d*$`, at most
 * KVSQL_CHANGES_MAXLEN_DIGITS digits, or "" or "0"). */
#define KVSQL_CHANGES_MAXLEN_DIGITS 18
int kvsql_changes_maxlen_valid(const char *s, size_t len);
int kvsql_changes_trim_valid(const char *s, size_t len);

/* Whether a stream whose last generated ID is `last_id` (len bytes,
 * "<ms>-<seq>" as XINFO STREAM gives it) has room for `need` more entries
 * of XADD's automatic IDs: the IDs end at 18446744073709551615-
 * 18446744073709551615. 0 when it has not, or when last_id is not an ID. */
int kvsql_stream_has_room(const char *last_id, size_t len, uint64_t need);

/* The changelog T:log (docs/FORMAT.md): a list, newest first, of entries
 * "<version>:<page>,<page>,..." (the pages below the old length that
 * commit <version> overwrote or cut off, decimal) or "<version>:*" when
 * there were more than KVSQL_LOG_ENTRY_PAGES; at most KVSQL_LOG_ENTRIES
 * entries are kept. Written by every commit while the key exists. */
#define KVSQL_LOG_ENTRIES 64
#define KVSQL_LOG_ENTRY_PAGES 256

/* A commit's identity (docs/FORMAT.md, "Identity"): T:id is set by every
 * commit, in the same atomic step as T:v, to "<new version>:<id>", id
 * KVSQL_ID_HEX random lower-case hex digits. */
#define KVSQL_ID_HEX 16

/* The longest a reader registration or lease may claim to live
 * (lease_ms's upper bound): a registration scored further ahead than
 * this is dropped as forged wherever the readers are read. */
#define KVSQL_LEASE_MAX_MS 3600000


/* Writes the name of the auxiliary key `suffix` (a KVSQL_AUX_*) of key
 * (len bytes) into out: T + suffix, where T is key itself when it has a
 * hash tag and "{key}" otherwise. Returns the name's length; the name is
 * written (and NUL-terminated) only when it fits in cap bytes, so call
 * with cap = 0 to learn the length. */
size_t kvsql_aux_key(char *out, size_t cap, const char *key, size_t len, const char *suffix);

/* Undo record field names: "<page>:<version>", KVSQL_UNDO_PAGE_HEX and
 * KVSQL_UNDO_VERSION_HEX lower-case hex digits, and the record
 * "<KVSQL_UNDO_BASE><version>" naming the identity the records of that
 * version were taken from. kvsql_undo_field writes a name in C; the
 * library's scripts write them with the Lua that client/hash/script_parts.h
 * (UNDO_NAME_FNS) makes from these same constants.
 * KVSQL_UNDO_FIELD_LEN is the length without the NUL. */
#define KVSQL_UNDO_PAGE_HEX 8
#define KVSQL_UNDO_VERSION_HEX 16
#define KVSQL_UNDO_BASE "base:"
#define KVSQL_UNDO_FIELD_LEN 25 /* KVSQL_UNDO_PAGE_HEX + 1 + KVSQL_UNDO_VERSION_HEX */
void kvsql_undo_field(char out[KVSQL_UNDO_FIELD_LEN + 1], uint32_t index, uint64_t version);

/* ---- the spread layout (docs/FORMAT.md, "The spread layout") ------------
 *
 * K is the page map: field KVSQL_SPREAD_LAYOUT_FIELD holds
 * KVSQL_SPREAD_LAYOUT (present only in a spread database: a one-hash K has
 * only decimal fields), fields KVSQL_SPREAD_NPAGES_FIELD and
 * KVSQL_SPREAD_PSIZE_FIELD the length in pages and the page size, field
 * "<page index>" (kvsql_field_name) the copy id of that page's current
 * copy: KVSQL_ID_HEX lower-case hex digits, the random part of the
 * identity of the commit that wrote it. The copies live in run keys
 * (kvsql_spread_run_key), KVSQL_SPREAD_RUN consecutive pages per key,
 * field "<page index>:<copy id>" (kvsql_spread_copy_field) -> the page. */
#define KVSQL_SPREAD_LAYOUT_FIELD "layout"
#define KVSQL_SPREAD_LAYOUT "spread"
#define KVSQL_SPREAD_NPAGES_FIELD "npages"
#define KVSQL_SPREAD_PSIZE_FIELD "psize"
#define KVSQL_SPREAD_RUN 16
/* A run key's suffix, after its hash tag and the database's key. */
#define KVSQL_SPREAD_RUN_SUFFIX ":p"

/* The run that holds page index `page`. */
static inline uint32_t kvsql_spread_run(uint32_t page) {
    return page / KVSQL_SPREAD_RUN;
}

/* Writes the name of run `run` of the database at key (len bytes) into
 * out: "{<H>/<run>}<key>:p", where H is the part of key Redis Cluster
 * hashes (kvsql_hashed_part: its tag's content, or the whole key). The tag
 * differs per (H, run), so the runs of one database spread over the
 * slots; the key itself follows, so two databases sharing a tag never
 * share a run key. Returns the name's length; writes it (NUL-terminated)
 * only when it fits in cap bytes (cap = 0: just the length). */
size_t kvsql_spread_run_key(char *out, size_t cap, const char *key, size_t len, uint32_t run);

/* A copy's field name in its run key: "<page index>:<copy id>". */
#define KVSQL_SPREAD_COPY_FIELD_MAX (KVSQL_FIELD_MAX + 1 + KVSQL_ID_HEX)
size_t kvsql_spread_copy_field(char out[KVSQL_SPREAD_COPY_FIELD_MAX], uint32_t page, const char *copy_id);

/* Whether s (len bytes) is a copy id: exactly KVSQL_ID_HEX lower-case hex
 * digits. */
int kvsql_spread_copy_id_valid(const char *s, size_t len);

#endif
