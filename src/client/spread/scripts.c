/* scripts.c - the Lua text of the spread layout's home-slot scripts
 * (scripts.h; docs/FORMAT.md, "The spread layout").
 *
 * Conventions as the one-hash scripts' (client/hash/scripts.c): identity
 * by IDENT_FN, every check before the first write, only the map K, T:v,
 * T:id and T:gc replicated (T:gc so that a promoted replica can still
 * collect what its master superseded). K holds "layout" = "spread",
 * "npages", "psize" and "<page>" -> copy id. */
#include "client/spread/scripts.h"
#include "client/hash/script_parts.h"
#include "format.h"

/* Oldest snapshot among the registered readers other than `token` (nil:
 * none). Needs lapsed members dropped first. */
#define OLDEST_FN                                                                \
    "local function oldest_reader(rk, token)\n"                                  \
    "  local oldest = nil\n"                                                     \
    "  for _, m in ipairs(redis.call('ZRANGE', rk, 0, -1)) do\n"                 \
    "    local sep = string.find(m, ':', 1, true)\n"                             \
    "    if sep and string.sub(m, sep + 1) ~= token then\n"                      \
    "      local snap = tonumber(string.sub(m, 1, sep - 1))\n"                   \
    "      if snap and (not oldest or snap < oldest) then oldest = snap end\n"   \
    "    end\n"                                                                  \
    "  end\n"                                                                    \
    "  return oldest\n"                                                          \
    "end\n"

/* The copies of T:gc (key gk) no registered reader can need: superseded
 * at a version at or below the oldest reader's snapshot (all when no one
 * reads), at most SPREAD_GC_BATCH. */
#define COLLECTABLE_FN                                                           \
    "local function collectable(gk, oldest)\n"                                   \
    "  return redis.call('ZRANGEBYSCORE', gk, '-inf', oldest or '+inf', 'LIMIT', 0, " STR(SPREAD_GC_BATCH) ")\n" \
    "end\n"

/* Begin's first half, shared with the warm begin: {'type', T} for a K of
 * another type, {'layout', what} for a hash that is not a spread map (a
 * one-hash database: what is ''), else v, id (IDENT_FN) and the answer's
 * head `out` = {'ok'|'capture', identity, npages, page size}, the first
 * word 'capture' while change capture is on (T:changes:cfg, KEYS[8],
 * exists), as the one-hash begin's. Reads only: HMGET under pcall (TYPE
 * only when it fails: a K of another type), EXISTS K only when the layout
 * field is not "spread". */
#define SP_BEGIN_HEAD                                                            \
    IDENT_FN BADTYPE_FN QUEUE_FUNCS                                              \
    "local meta = redis.pcall('HMGET', KEYS[1], '" KVSQL_SPREAD_LAYOUT_FIELD "', '" KVSQL_SPREAD_NPAGES_FIELD "', '" \
    KVSQL_SPREAD_PSIZE_FIELD "')\n"                                               \
    "if meta['err'] then return {'type', redis.call('TYPE', KEYS[1])['ok']} end\n" \
    "if meta[1] ~= '" KVSQL_SPREAD_LAYOUT "' and redis.call('EXISTS', KEYS[1]) == 1 then\n" \
    "  return {'layout', meta[1] or ''}\n"                                        \
    "end\n"                                                                      \
    "local v, id = ident(KEYS[2], KEYS[5])\n"                                    \
    "if not v then return id end\n"                                              \
    "local out = {redis.call('EXISTS', KEYS[8]) == 1 and 'capture' or 'ok', id, meta[2] or '0', meta[3] or '0'}\n"

/* Begin's second half: registers the reader as "<v>:<token>" (replacing
 * prev), keeps T:log alive (10 minutes; made with "from:<v>" when
 * missing), takes the lease on write intent (below) and appends to out,
 * when `cached` names an earlier identity "<c>:<hex>" at most
 * KVSQL_LOG_ENTRIES commits back, the first v - c entries of T:log (newest
 * first) for the client to follow. Every check comes before its first
 * write. */
#define SP_BEGIN_TAIL                                                            \
    "local bad = badtype({KEYS[3], 'zset', KEYS[4], 'list', KEYS[6], 'string', KEYS[7], 'zset'})\n" \
    "if bad then return bad end\n" NOW_MS                                        \
    "redis.set_repl(redis.REPL_NONE)\n"                                          \
    "local member = v .. ':' .. token\n"                                         \
    "if prev ~= '' and prev ~= member then redis.call('ZREM', KEYS[3], prev) end\n" \
    "redis.call('ZADD', KEYS[3], ms + tonumber(lease), member)\n"                \
    "if redis.call('PEXPIRE', KEYS[4], 600000) == 0 then\n"                      \
    "  redis.call('LPUSH', KEYS[4], 'from:' .. v)\n"                             \
    "  redis.call('PEXPIRE', KEYS[4], 600000)\n"                                 \
    "end\n"                                                                      \
    "if intent == '1' then\n"                                                    \
    "  local holder = redis.call('GET', KEYS[6])\n"                              \
    "  if not holder then\n"                                                     \
    "    local turn, mine = queue_turn(KEYS[7], token, ms)\n"                    \
    "    if turn then\n"                                                         \
    "      if mine then redis.call('ZREM', KEYS[7], mine) end\n"                 \
    "      holder = token\n"                                                     \
    "    end\n"                                                                  \
    "  end\n"                                                                    \
    "  if holder == token then\n"                                                \
    "    redis.call('SET', KEYS[6], token, 'PX', lease)\n"                       \
    "    out[1] = out[1] .. '+lease'\n"                                          \
    "  end\n"                                                                    \
    "end\n"                                                                      \
    "local cv = tonumber(string.match(cached, '^(%d+):%x+$') or '')\n"           \
    "local d = cv and tonumber(v) - cv or 0\n"                                   \
    "if id ~= cached and d >= 1 and d <= " STR(KVSQL_LOG_ENTRIES) " then\n"      \
    "  for _, e in ipairs(redis.call('LRANGE', KEYS[4], 0, d - 1)) do out[#out + 1] = e end\n" \
    "end\n"                                                                      \
    "return out\n"

/* Begin: SP_BEGIN_HEAD then SP_BEGIN_TAIL, with prev ARGV[3] and cached
 * ARGV[4]. With write intent (ARGV[5] "1") it also takes the writer's
 * lease T:lease when it is the token's or free and no other writer waits
 * longer (T:queue, the one-hash begin's rule, docs/FORMAT.md "Turns"):
 * the first word is then 'ok+lease', and the lock needs no round trip. */
static const char begin_lua[] =
    "local token, lease, prev, cached, intent = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]\n"
    SP_BEGIN_HEAD SP_BEGIN_TAIL;

/* The warm begin (store_spread.c, "warm begins"): sent only while the
 * client's registration "<c>:<token>" at its cached identity ARGV[3]
 * ("<c>:<hex>") is fresh, with no write intent and no T:log renewal due.
 * When the identity is still ARGV[3] that registration already protects
 * the snapshot: the answer is SP_BEGIN_HEAD's `out`, and Redis ran reads
 * only (no TIME, no ZADD, no PEXPIRE). Else it goes on as begin, with
 * previous member "<c>:<token>" and no write intent: still one round
 * trip. */
static const char begin_warm_lua[] =
    "local token, lease, cached, intent = ARGV[1], ARGV[2], ARGV[3], ''\n"
    "local prev = (string.match(cached, '^(%d+):') or '') .. ':' .. token\n"
    SP_BEGIN_HEAD
    "if id ~= v and id == cached then return out end\n"
    SP_BEGIN_TAIL;

/* Publish: when the token holds the lease and the identity is still the
 * snapshot's, points the map's pages ARGV[8..] at copy ARGV[6], cuts the
 * map to ARGV[4] pages, records for the other registered readers the copy
 * ids the changed pages had (undo records, as the one-hash layout's:
 * "base:<v+1>" names the snapshot), adds every superseded copy to T:gc
 * scored by the new version, INCRs T:v, sets T:id "<v+1>:<copy>", logs
 * every page whose map field changed (written or cut off: a client's
 * cached map follows the log exactly), drops the intent ARGV[7], moves the committer's
 * registration to the new version. While capture is on (T:changes:cfg,
 * KEYS[12], exists) it appends the row changes the client captured
 * (ARGV[8] strings from ARGV[9] on, before the page indexes: each entry
 * its count of strings, then its field/value pairs but the version) to
 * T:changes (KEYS[13]) after INCR T:v, replicated, tagged with the new
 * version, one 'commit' entry when there are none: the one-hash commit
 * script's entries exactly (docs/FORMAT.md, "The changes stream").
 * {'ok', identity, collectable...}; {'lease'}, {'stale', v}, {'layout',
 * what}, {'capture', v} (capture is on but the client captured nothing:
 * ARGV[8] ""), {'changes', type} / {'cfg', field, value} (capture_head)
 * or a type refusal: nothing written. */
static const char publish_lua[] =
    "local token, s, lease, n, psize, copy = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], ARGV[6]\n"
    IDENT_FN BADTYPE_FN OLDEST_FN COLLECTABLE_FN CAPTURE_CHECK_FN
    "if redis.call('GET', KEYS[3]) ~= token then return {'lease'} end\n"
    "local v, id = ident(KEYS[2], KEYS[9])\n"
    "if not v then return id end\n"
    "if id ~= s then return {'stale', v} end\n"
    "local bad = badtype({KEYS[1], 'hash', KEYS[4], 'zset', KEYS[5], 'hash', KEYS[6], 'zset', KEYS[7], 'zset',\n"
    "                     KEYS[8], 'list', KEYS[10], 'zset', KEYS[11], 'zset'})\n"
    "if bad then return bad end\n"
    "local first = ARGV[8] == '' and 9 or 9 + tonumber(ARGV[8])\n"
    "local capture = redis.call('EXISTS', KEYS[12]) == 1\n"
    "if capture and ARGV[8] == '' then return {'capture', v} end\n"
    "local head\n"
    "if capture then\n"
    "  local nentries, j = 0, 9\n"
    "  while j < first do nentries = nentries + 1; j = j + 1 + tonumber(ARGV[j]) end\n"
    "  head, bad = capture_head(KEYS[13], KEYS[12], math.max(nentries, 1))\n"
    "  if bad then return bad end\n"
    "end\n"
    "local meta = redis.call('HMGET', KEYS[1], '" KVSQL_SPREAD_LAYOUT_FIELD "', '" KVSQL_SPREAD_NPAGES_FIELD "')\n"
    "if redis.call('EXISTS', KEYS[1]) == 1 and meta[1] ~= '" KVSQL_SPREAD_LAYOUT "' then\n"
    "  return {'layout', meta[1] or ''}\n"
    "end\n" NOW_MS
    "local old = tonumber(meta[2] or '0') or 0\n"
    "local nv = tonumber(v) + 1\n"
    "local nvs = string.format('%d', nv)\n"
    "local nid = nvs .. ':' .. copy\n"
    "local gone, changed = {}, {}\n"
    "local function supersede(i)\n"
    "  local c = redis.call('HGET', KEYS[1], tostring(i))\n"
    "  if c then gone[#gone + 1] = {i, c} end\n"
    "  changed[#changed + 1] = tostring(i)\n"
    "end\n"
    "for j = first, #ARGV do\n"
    "  local i = tonumber(ARGV[j])\n"
    "  if i < old then supersede(i) else changed[#changed + 1] = ARGV[j] end\n"
    "end\n"
    "for i = n, old - 1 do supersede(i) end\n"
    "redis.set_repl(redis.REPL_NONE)\n" DROP_LAPSED("KEYS[4]")
    "local oldest = oldest_reader(KEYS[4], token)\n"
    "local function chunked(cmd, key, list)\n"
    "  for k = 1, #list, 1000 do redis.call(cmd, key, unpack(list, k, math.min(k + 999, #list))) end\n"
    "end\n"
    "if oldest then\n"
    "  local ver = string.format('%016x', nv)\n"
    "  local function keep(f, val)\n"
    "    redis.call('HSET', KEYS[5], f, val)\n"
    "    redis.call('ZADD', KEYS[6], 0, f)\n"
    "    redis.call('ZADD', KEYS[7], nv, f)\n"
    "  end\n"
    "  keep('base:' .. ver, s)\n"
    "  for _, g in ipairs(gone) do keep(string.format('%08x', g[1]) .. ':' .. ver, g[2]) end\n"
    UNDO_TRIM("KEYS[5]", "KEYS[6]", "KEYS[7]")
    "else\n"
    "  redis.call('DEL', KEYS[5], KEYS[6], KEYS[7])\n"
    "end\n"
    "redis.set_repl(redis.REPL_ALL)\n"
    "for _, g in ipairs(gone) do redis.call('ZADD', KEYS[10], nv, g[1] .. ':' .. g[2]) end\n"
    "local map = {'" KVSQL_SPREAD_LAYOUT_FIELD "', '" KVSQL_SPREAD_LAYOUT "', '" KVSQL_SPREAD_NPAGES_FIELD "', tostring(n),\n"
    "             '" KVSQL_SPREAD_PSIZE_FIELD "', psize}\n"
    "for j = first, #ARGV do map[#map + 1] = ARGV[j]; map[#map + 1] = copy end\n"
    "chunked('HSET', KEYS[1], map)\n"
    "local cut = {}\n"
    "for i = n, old - 1 do cut[#cut + 1] = tostring(i) end\n"
    "chunked('HDEL', KEYS[1], cut)\n"
    "redis.call('INCR', KEYS[2])\n"
    "redis.call('SET', KEYS[9], nid)\n"
    CAPTURE_XADD("9")
    "redis.set_repl(redis.REPL_NONE)\n"
    "redis.call('ZREM', KEYS[11], ARGV[7])\n"
    "if redis.call('EXISTS', KEYS[8]) == 1 then\n"
    "  local pages = #changed > " STR(KVSQL_LOG_ENTRY_PAGES) " and '*' or table.concat(changed, ',')\n"
    "  redis.call('LPUSH', KEYS[8], nvs .. ':' .. pages .. ';' .. s .. ';' .. nid)\n"
    "  redis.call('LTRIM', KEYS[8], 0, " STR(KVSQL_LOG_ENTRIES) " - 1)\n"
    "end\n"
    "redis.call('ZREM', KEYS[4], string.match(s, '^%d+') .. ':' .. token)\n"
    "redis.call('ZADD', KEYS[4], ms + lease, nvs .. ':' .. token)\n"
    "redis.call('PEXPIRE', KEYS[3], lease)\n"
    "local out = {'ok', nid}\n"
    "for _, m in ipairs(collectable(KEYS[10], oldest_reader(KEYS[4], ''))) do out[#out + 1] = m end\n"
    "return out\n";

/* End: drops the lease if it is still the token's, and the registration
 * ARGV[2]. */
static const char end_lua[] =
    BADTYPE_FN
    "if badtype({KEYS[1], 'string', KEYS[2], 'zset'}) then return 0 end\n"
    "redis.set_repl(redis.REPL_NONE)\n"
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end\n"
    "if ARGV[2] ~= '' then redis.call('ZREM', KEYS[2], ARGV[2]) end\n"
    "return 1\n";

/* A GC step's choice: {'ok', k, k collectable copies (COLLECTABLE_FN), at
 * most ARGV[1], then the intents (T:pending, KEYS[3]) whose score is past:
 * their writer can no longer publish them}, after dropping lapsed
 * registrations. */
static const char gc_pick_lua[] =
    BADTYPE_FN OLDEST_FN
    "local bad = badtype({KEYS[1], 'zset', KEYS[2], 'zset', KEYS[3], 'zset'})\n"
    "if bad then return bad end\n" NOW_MS
    "redis.set_repl(redis.REPL_NONE)\n" DROP_LAPSED("KEYS[2]")
    "local oldest = oldest_reader(KEYS[2], '')\n"
    "local gc = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', oldest or '+inf', 'LIMIT', 0, tonumber(ARGV[1]))\n"
    "local out = {'ok', #gc}\n"
    "for _, m in ipairs(gc) do out[#out + 1] = m end\n"
    "for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ms, 'LIMIT', 0, 16)) do\n"
    "  out[#out + 1] = m\n"
    "end\n"
    "return out\n";

const char *const kvsql_spread_scripts[SP_COUNT] = {begin_lua, publish_lua, end_lua, gc_pick_lua, begin_warm_lua};
