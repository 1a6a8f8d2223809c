/* scripts.c - the Lua text of the `redis` VFS protocol (scripts.h).
 *
 * Sent by client/store_redis.c. Conventions shared by every script:
 *   - a snapshot is the decimal text of T:v when it was taken ("0" when
 *     T:v is missing), compared as text;
 *   - a reader registration is the member "<snapshot>:<token>" of
 *     T:readers, scored by the Redis TIME in ms at which it lapses;
 *   - an undo record is field "<page %08x>:<version %016x>" of T:undo, the
 *     page as it was just before commit <version>, indexed in T:undo:idx
 *     (score 0, by name) and T:undo:ver (score = version);
 *   - only the pages (K) and the version (T:v) are replicated: every other
 *     write comes after redis.set_repl(redis.REPL_NONE).
 * Replies are arrays whose first element says what happened. */
#include "client/scripts.h"

#include "format.h"

#define STR_(x) #x
#define STR(x) STR_(x)

#define NOW_MS                                                                 \
    "local now = redis.call('TIME')\n"                                         \
    "local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)\n"

/* Snapshot: {'ok', v, HLEN} when the client holds page 0 of this very
 * hash (ARGV[4] is "<v>:<HLEN>" as it last saw them, "" when it holds
 * nothing; HLEN too, so a hash changed by hand is seen), else {'ok', v,
 * HLEN, page 0 (whole), whether field HLEN-1 exists, whether field HLEN
 * exists} (a field at HLEN means a field below it is missing: the
 * lock-byte gap of an older module, which the client judges with
 * format.c's rule), followed, when T:log covers every commit since the
 * client's version, by the count k of pages those commits changed and k
 * pairs (page, its value now or nil): the first INLINE_PAGES values are
 * sent, the others only named. Registers the reader as <v>:<token>,
 * replacing the previous member ARGV[3], and, unless ARGV[5] is "",
 * keeps T:log alive for ARGV[5] ms (making it, with the marker
 * "from:<v>", when missing). Or
 * {'type', T} for a key of another type. */
static const char begin_lua[] =
    "local n = redis.pcall('HLEN', KEYS[1])\n"
    "if type(n) == 'table' then return {'type', redis.call('TYPE', KEYS[1])['ok']} end\n"
    "local v = redis.call('GET', KEYS[2]) or '0'\n"
    "local out = {'ok', v, n}\n" NOW_MS
    "redis.set_repl(redis.REPL_NONE)\n"
    "local member = v .. ':' .. ARGV[1]\n"
    "if ARGV[3] ~= '' and ARGV[3] ~= member then redis.call('ZREM', KEYS[3], ARGV[3]) end\n"
    "redis.call('ZADD', KEYS[3], ms + tonumber(ARGV[2]), member)\n"
    "if ARGV[5] ~= '' and redis.call('PEXPIRE', KEYS[4], ARGV[5]) == 0 then\n"
    "  redis.call('LPUSH', KEYS[4], 'from:' .. v)\n"
    "  redis.call('PEXPIRE', KEYS[4], ARGV[5])\n"
    "end\n"
    "if n == 0 or v .. ':' .. n == ARGV[4] then return out end\n"
    "out[4] = redis.call('HGET', KEYS[1], '0')\n"
    "out[5] = redis.call('HEXISTS', KEYS[1], tostring(n - 1))\n"
    "out[6] = redis.call('HEXISTS', KEYS[1], tostring(n))\n"
    "local cv = tonumber(string.match(ARGV[4], '^(%d+):') or '')\n"
    "local d = cv and tonumber(v) - cv or 0\n"
    "if d < 1 or d > " STR(KVSQL_LOG_ENTRIES) " then return out end\n"
    "local log = redis.call('LRANGE', KEYS[4], 0, d - 1)\n"
    "if #log < d then return out end\n"
    "local seen, pages = {}, {}\n"
    "for j = 1, d do\n"
    "  local sep = string.find(log[j], ':', 1, true)\n"
    "  if not sep or string.sub(log[j], 1, sep - 1) ~= string.format('%d', tonumber(v) - j + 1) then return out end\n"
    "  local list = string.sub(log[j], sep + 1)\n"
    "  if list == '*' then return out end\n"
    "  for p in string.gmatch(list, '%d+') do\n"
    "    if not seen[p] then\n"
    "      seen[p] = true\n"
    "      pages[#pages + 1] = p\n"
    "      if #pages > " STR(CHANGED_PAGES_MAX) " then return out end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "out[7] = #pages\n"
    "for j, p in ipairs(pages) do\n"
    "  out[#out + 1] = p\n"
    "  out[#out + 1] = j <= " STR(INLINE_PAGES) " and p ~= '0' and redis.call('HGET', KEYS[1], p) or false\n"
    "end\n"
    "return out\n";

/* Pages first..first+count-1 as of the snapshot: from K while no commit
 * came since, else each from its first undo record after the snapshot, or
 * from K when it has none. {'old'} when commits came and the reader's
 * registration is gone (a commit dropped it as lapsed, or Redis
 * restarted): its undo may have been trimmed. Renews the registration, and
 * the writer's lease when it is ours. */
static const char read_lua[] =
    "local token, s, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])\n"
    "local first, count = tonumber(ARGV[4]), tonumber(ARGV[5])\n"
    "local v = redis.call('GET', KEYS[2]) or '0'\n"
    "local member = s .. ':' .. token\n"
    "if v ~= s and not redis.call('ZSCORE', KEYS[3], member) then return {'old', v} end\n" NOW_MS
    "redis.set_repl(redis.REPL_NONE)\n"
    "redis.call('ZADD', KEYS[3], ms + lease, member)\n"
    "if redis.call('GET', KEYS[6]) == token then redis.call('PEXPIRE', KEYS[6], lease) end\n"
    "local out = {'ok'}\n"
    "if v == s then\n"
    "  local i = first\n"
    "  while i < first + count do\n"
    "    local fields = {}\n"
    "    local j = i\n"
    "    while j < first + count and j < i + 1000 do fields[#fields + 1] = tostring(j); j = j + 1 end\n"
    "    local pages = redis.call('HMGET', KEYS[1], unpack(fields))\n"
    "    for k = 1, #fields do out[#out + 1] = pages[k] end\n"
    "    i = j\n"
    "  end\n"
    "  return out\n"
    "end\n"
    "local after = string.format('%016x', tonumber(s) + 1)\n"
    "for i = first, first + count - 1 do\n"
    "  local p = string.format('%08x', i)\n"
    "  local u = redis.call('ZRANGEBYLEX', KEYS[5], '[' .. p .. ':' .. after, '(' .. p .. ';', 'LIMIT', 0, 1)\n"
    "  if u[1] then out[#out + 1] = redis.call('HGET', KEYS[4], u[1])\n"
    "  else out[#out + 1] = redis.call('HGET', KEYS[1], tostring(i)) end\n"
    "end\n"
    "return out\n";

/* Makes the token the writer: {'stale'} when a commit came after the
 * snapshot, {'busy'} when another token holds the lease. */
static const char lock_lua[] =
    "local v = redis.call('GET', KEYS[1]) or '0'\n"
    "if v ~= ARGV[2] then return {'stale', v} end\n"
    "local cur = redis.call('GET', KEYS[2])\n"
    "if cur and cur ~= ARGV[1] then return {'busy'} end\n"
    "redis.set_repl(redis.REPL_NONE)\n"
    "redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])\n"
    "return {'ok'}\n";

/* Applies a batch if the token still holds the lease and no commit came
 * after the snapshot; saves undo for the other live readers first. Logs
 * the pages below the old length it overwrote or cut off in T:log when
 * that exists. The committer's own registration moves to the new version. */
static const char commit_lua[] =
    "local token, s, lease, n = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "if redis.call('GET', KEYS[3]) ~= token then return {'lease'} end\n"
    "local v = redis.call('GET', KEYS[2]) or '0'\n"
    "if v ~= s then return {'stale', v} end\n" NOW_MS
    "local old = redis.call('HLEN', KEYS[1])\n"
    "if ARGV[5] ~= '' and redis.call('HEXISTS', KEYS[1], ARGV[5]) == 0 then old = old + 1 end\n"
    "local nv = tonumber(s) + 1\n"
    "redis.set_repl(redis.REPL_NONE)\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ms)\n"
    "local oldest = nil\n"
    "for _, m in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do\n"
    "  local sep = string.find(m, ':', 1, true)\n"
    "  if sep and string.sub(m, sep + 1) ~= token then\n"
    "    local snap = tonumber(string.sub(m, 1, sep - 1))\n"
    "    if snap and (not oldest or snap < oldest) then oldest = snap end\n"
    "  end\n"
    "end\n"
    "local function chunked(cmd, key, list)\n"
    "  for k = 1, #list, 1000 do\n"
    "    redis.call(cmd, key, unpack(list, k, math.min(k + 999, #list)))\n"
    "  end\n"
    "end\n"
    "if oldest then\n"
    "  local ver = string.format('%016x', nv)\n"
    "  local function save(i)\n"
    "    local page = redis.call('HGET', KEYS[1], tostring(i))\n"
    "    if not page then return end\n"
    "    local f = string.format('%08x', i) .. ':' .. ver\n"
    "    redis.call('HSET', KEYS[5], f, page)\n"
    "    redis.call('ZADD', KEYS[6], 0, f)\n"
    "    redis.call('ZADD', KEYS[7], nv, f)\n"
    "  end\n"
    "  for j = 6, #ARGV, 2 do\n"
    "    local i = tonumber(ARGV[j])\n"
    "    if i < old then save(i) end\n"
    "  end\n"
    "  for i = n, old - 1 do save(i) end\n"
    "  local dead = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', oldest)\n"
    "  chunked('HDEL', KEYS[5], dead)\n"
    "  chunked('ZREM', KEYS[6], dead)\n"
    "  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', oldest)\n"
    "else\n"
    "  redis.call('DEL', KEYS[5], KEYS[6], KEYS[7])\n"
    "end\n"
    "redis.set_repl(redis.REPL_ALL)\n"
    "local pairs_ = {}\n"
    "for j = 6, #ARGV do pairs_[#pairs_ + 1] = ARGV[j] end\n"
    "chunked('HSET', KEYS[1], pairs_)\n"
    "local cut = {}\n"
    "for i = n, old - 1 do cut[#cut + 1] = tostring(i) end\n"
    "chunked('HDEL', KEYS[1], cut)\n"
    "local nvs = tostring(redis.call('INCR', KEYS[2]))\n"
    "redis.set_repl(redis.REPL_NONE)\n"
    "if redis.call('EXISTS', KEYS[8]) == 1 then\n"
    "  local changed = {}\n"
    "  for j = 6, #ARGV, 2 do\n"
    "    if tonumber(ARGV[j]) < old then changed[#changed + 1] = ARGV[j] end\n"
    "  end\n"
    "  for i = n, old - 1 do changed[#changed + 1] = tostring(i) end\n"
    "  local list = #changed > " STR(KVSQL_LOG_ENTRY_PAGES) " and '*' or table.concat(changed, ',')\n"
    "  redis.call('LPUSH', KEYS[8], nvs .. ':' .. list)\n"
    "  redis.call('LTRIM', KEYS[8], 0, " STR(KVSQL_LOG_ENTRIES) " - 1)\n"
    "end\n"
    "redis.call('ZREM', KEYS[4], s .. ':' .. token)\n"
    "redis.call('ZADD', KEYS[4], ms + lease, nvs .. ':' .. token)\n"
    "redis.call('PEXPIRE', KEYS[3], lease)\n"
    "return {'ok', nvs}\n";

/* Ends a transaction: drops the lease if it is still ours, and the
 * reader registration when one is named; the last reader out deletes the
 * undo records, which nobody can need any more. */
static const char end_lua[] =
    "redis.set_repl(redis.REPL_NONE)\n"
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end\n"
    "if ARGV[2] ~= '' then\n"
    "  redis.call('ZREM', KEYS[2], ARGV[2])\n"
    "  if redis.call('ZCARD', KEYS[2]) == 0 then redis.call('DEL', KEYS[3], KEYS[4], KEYS[5]) end\n"
    "end\n"
    "return 1\n";

const char *const kvsql_scripts[SCRIPT_COUNT] = {begin_lua, read_lua, lock_lua, commit_lua, end_lua};
