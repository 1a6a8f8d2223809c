/* stage.h - a big write of a worker's call (offload.c) published without a
 * long step on Redis's main thread (docs/FORMAT.md, "Big writes of the
 * module").
 *
 * When the pages a worker's call wrote come to more than STAGE_MIN_BYTES,
 * the worker, once the SQL ran, builds the database's new hash in the
 * staging key T:wstage, STAGE_STEP_PAGES pages per step, each step holding
 * Redis's lock and propagating its HSET (so replicas and the AOF get the
 * pages step by step too). Every step first checks that the database is
 * as the call's snapshot saw it. The worker then publishes, holding the
 * lock while Redis does not pause writes, in one short atomic step: undo records and INCR T:v as any module write, then
 * RENAME K T:stage:old, RENAME T:wstage K, PERSIST K (or K's own expiry
 * back), UNLINK T:stage:old (Redis frees the old hash in the background).
 * A write that is refused, stopped or abandoned leaves nothing: its
 * staging key is unlinked, and a leftover one (a crash) lapses by its TTL
 * or is unlinked by the next staged write. offload.c calls all of this. */
#ifndef KVSQL_STAGE_H
#define KVSQL_STAGE_H

#include "module/redis_api.h"
#include "pagemap.h"
#include "module/store/snapshot.h"

/* Writes with more bytes of new pages than this are staged... */
#define STAGE_MIN_BYTES (4 * 1024 * 1024)
/* ...unless the staging key would copy more than this many times as many
 * unchanged pages of the hash (a small write to a big database: staging
 * would double the database's memory for a while). */
#define STAGE_MAX_KEPT_RATIO 4
/* Pages copied into the staging key per step (per hold of Redis's lock). */
#define STAGE_STEP_PAGES 256
/* The staging key's TTL, renewed by each step. */
#define STAGE_TTL_MS 60000

/* stage_build's return when the database changed under the write. */
#define STAGE_CONFLICT (-2)
/* The replies of a write refused because of a change (offload.c too). */
#define STAGE_CONFLICT_ERROR                                                                                  \
    "SQLITE_BUSY kvsql: the database changed while the write ran on a worker thread: nothing was written (retry)"
#define STAGE_GONE_ERROR                                                                                      \
    "SQLITE_ABORT kvsql: the database's key was deleted, replaced or moved while the SQL ran on a worker thread: " \
    "nothing was written"
#define STAGE_CAPTURE_ERROR                                                                                   \
    "SQLITE_BUSY kvsql: change capture was turned on or off while the write ran on a worker thread: nothing "   \
    "was written (retry)"

/* One staged write: filled by offload.c, which owns every pointer. */
typedef struct stage_write {
    int dbid;
    RedisModuleString *keyname;  /* the database's key */
    snapshot *snap;              /* the write's snapshot: the database must stay as it saw it */
    pending_pages *pages;        /* the pages the call wrote */
    RedisModuleString **values;  /* per slot of pages->map: the page as a string, or NULL;
                                  * each is freed (set to NULL) once staged */
    const volatile int *killed;  /* SQL.KILL and shutdown */
    long long started_ms;        /* the call's start: kvsql.query-timeout-ms counts from it */
    int built;                   /* the staging key holds the whole new hash: the pages were freed */
    uint32_t *overwritten;       /* then: the indexes of the hash's pages it overwrites or cuts off */
    size_t noverwritten;
    int dirty;                   /* the staging key may exist: unlink it unless published */
    int captures;                /* change capture was on during the run: its entries go with the publish */
    long long *replica_waits;    /* or NULL: counts each 1 ms pause for a replica's full output
                                  * buffer (atomically: INFO reads it while the worker runs) */
    long long *pause_waits;      /* or NULL: the same, for each 1 ms wait while Redis pauses writes */
} stage_write;

/* Whether a writing call's pages, over a database of old_npages pages,
 * are worth staging. */
int stage_wanted(const pending_pages *pages, uint32_t old_npages);

/* On the worker, after the SQL ran, without Redis's lock: builds the new
 * hash in the staging key, in steps, then frees the pages (keeping their
 * count, length and the list of pages they overwrite). Returns 0, or -1 (STAGE_CONFLICT when
 * the database changed) with an error reply text in err (the staging key is then unlinked, nothing published). */
int stage_build(stage_write *w, RedisModuleCtx *tsctx, char *err, size_t errlen);

/* On the worker holding Redis's lock, the key's db selected, at a moment
 * when Redis does not pause writes (offload.c), after the caller checked
 * the snapshot (write unchanged) and change capture (changes_land_begin):
 * publishes the staging key as the database in one atomic step,
 * propagated as one MULTI/EXEC, with the call's change entries after the
 * version's INCR when capture is on (changes.h; checked before anything is
 * written, as the pages are). Returns 0, or -1 with an error reply text
 * in err (nothing published; call stage_abandon). */
int stage_publish(RedisModuleCtx *ctx, stage_write *w, char *err, size_t errlen);

/* On the main thread (any callback context, also one whose client is
 * gone): unlinks the staging key unless it was published (replicated).
 * While Redis pauses writes the key is left to lapse by its TTL. */
void stage_abandon(RedisModuleCtx *ctx, stage_write *w);
/* The same on a worker holding Redis's lock, the key's db selected. */
void stage_abandon_locked(RedisModuleCtx *ctx, stage_write *w);

/* Frees what stage_build kept (the job's end). */
void stage_free(stage_write *w);

#endif
