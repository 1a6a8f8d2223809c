/* scripts.h - the Lua scripts of the spread layout's home slot
 * (docs/FORMAT.md, "The spread layout").
 *
 * Each runs atomically on the node that serves the database's key K (its
 * home slot) and declares every key it touches; all are in that slot.
 * Reading the ids of pages as of a snapshot and taking the writer's lease
 * are the one-hash layout's read and lock scripts unchanged
 * (client/hash/scripts.h: SCRIPT_READ answers the map's copy ids, since a
 * spread K maps "<page>" to a copy id and its undo records hold copy ids).
 * Run by client/spread/store_spread.c through client/spread/io.c. */
#ifndef KVSQL_CLIENT_SPREAD_SCRIPTS_H
#define KVSQL_CLIENT_SPREAD_SCRIPTS_H

/* The page copies one publish hands back for collection, at most. */
#define SPREAD_GC_BATCH 256

enum {
    SP_BEGIN,   /* KEYS: K T:v T:readers T:log T:id T:lease T:queue T:changes:cfg
                   ARGV: token lease_ms previous-member cached-identity-or-"" write-intent-"1"-or-""
                   -> {'ok'|'capture'[+lease], identity, npages, page size, log entries...} */
    SP_PUBLISH, /* KEYS: K T:v T:lease T:readers T:undo T:undo:idx T:undo:ver T:log T:id
                         T:gc T:pending T:changes:cfg T:changes
                   ARGV: token snapshot lease_ms npages page-size copy intent
                         change-strings-count-or-"" change-strings... page-index...
                   -> {'ok', identity, collectable "<page>:<copy>"...} */
    SP_END,     /* KEYS: T:lease T:readers    ARGV: token member-or-"" */
    SP_GC_PICK, /* KEYS: T:gc T:readers T:pending    ARGV: max
                   -> {'ok', k, k collectable "<page>:<copy>", lapsed intents...} */
    SP_BEGIN_WARM, /* KEYS: as SP_BEGIN's    ARGV: token lease_ms cached-identity
                      -> as SP_BEGIN's; writes nothing when the identity is still
                      the cached one (store_spread.c, "warm begins") */
    SP_COUNT
};

extern const char *const kvsql_spread_scripts[SP_COUNT];

#endif
