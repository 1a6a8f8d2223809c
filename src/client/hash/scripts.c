/* scripts.c - the Lua text of the `redis` VFS protocol (scripts.h).
 *
 * Sent by client/hash/store_redis.c. Conventions shared by every script:
 *   - a snapshot is the identity of the state it saw (IDENT_FN): T:id,
 *     "<v>:<16 hex>", when it names the version T:v holds, else the
 *     decimal text of T:v ("0" when missing), compared as text;
 *   - a reader registration is the member "<version>:<token>" of
 *     T:readers, scored by the Redis TIME in ms at which it lapses;
 *   - an undo record is field "<page>:<version>" of T:undo (format.h:
 *     kvsql_undo_field; UNDO_NAME_FNS writes it in Lua), the
 *     page as it was just before commit <version>, indexed in T:undo:idx
 *     (score 0, by name) and T:undo:ver (score = version); the field
 *     "base:<version>" names the identity those records were taken
 *     from;
 *   - every check comes before the first write: a script never stops
 *     between two of its writes;
 *   - only the pages (K), the version (T:v) and its identity (T:id) are
 *     replicated: every other write comes after
 *     redis.set_repl(redis.REPL_NONE).
 * Replies are arrays whose first element says what happened. */
#include "client/hash/scripts.h"
#include "sqlite.h"

#include "client/hash/script_parts.h"
#include "format.h"

/* A script's first line: its keys (a *_KEYS list, scripts.h) as Lua
 * locals named as in the list, "local _, K, T_V = 0, unpack(KEYS)". */
#define KEY_LOCAL_(name) ", " #name
#define KEYS_AS_LOCALS(LIST) "local _" LIST(KEY_LOCAL_) " = 0, unpack(KEYS)\n"

/* Snapshot: {'ok', id, HLEN} when the client holds page 0 of this very
 * hash (ARGV[4] is "<id>/<HLEN>" as it last saw them, "" when it holds
 * nothing or its id named no commit; id is the identity, IDENT_FN: a
 * version number alone never vouches for a cache; HLEN too, so a hash
 * changed by hand is seen), else {'ok', id,
 * HLEN, page 0 (whole), whether field HLEN-1 exists, whether field HLEN
 * exists} (a field at HLEN means a field below it is missing: the
 * lock-byte gap of an older module, which the client judges with
 * format.c's rule), followed, when T:log covers every commit since the
 * client's version and its entries ("<v>:<pages>;<base id>;<new id>")
 * chain from the client's id to the current one, by the count k of pages those commits changed and k
 * pairs (page, its value now or nil): the first INLINE_PAGES values are
 * sent, the others only named. Registers the reader as <v>:<token>,
 * replacing the previous member ARGV[3], and, unless ARGV[5] is "",
 * keeps T:log alive for ARGV[5] ms (making it, with the marker
 * "from:<v>", when missing). The first element is 'capture' instead of
 * 'ok' while capture is on (T:changes:cfg exists). When
 * ARGV[6] is "1" (the client expects to write: a write-intent hint) and
 * the writer's lease T:lease is already the token's, or free
 * and no other writer waits longer for it (T:queue), it
 * also takes the lease, as the lock script would, and says so with
 * '+lease' after that first word: the lock then needs no round trip. A
 * held lease is left alone (the lock script waits for it as usual); the
 * first word then ends in '+next' when no other writer waits longer. Or
 * {'type', T} for a key of another type. */

/* Begin's text in two parts that both begin scripts share, on the
 * locals token, lease, prev, cached, log_ttl and intent (ARGV[1..6] of
 * the begin script, as said above). The head reads the snapshot; the tail
 * registers the reader and answers. */
#define BEGIN_HEAD                                                             \
    IDENT_FN BADTYPE_FN                                                        \
    "local n = redis.pcall('HLEN', K)\n"                                  \
    "if type(n) == 'table' then return {'type', redis.call('TYPE', K)['ok']} end\n" \
    "local v, id = ident(T_V, T_ID)\n"                                   \
    "if not v then return id end\n"                                            \
    "local out = {redis.call('EXISTS', T_CHANGES_CFG) == 1 and 'capture' or 'ok', id, n}\n"
#define BEGIN_TAIL                                                             \
    "local bad = badtype({T_READERS, 'zset', T_LOG, 'list', T_LEASE, 'string'})\n" \
    "if bad then return bad end\n"                                              \
    NOW_MS                                                                     \
    "redis.set_repl(redis.REPL_NONE)\n"                                         \
    "if intent == '1' then\n"                                                   \
    "  local holder = redis.call('GET', T_LEASE)\n"                             \
    "  if not holder then\n"                                                    \
    "    local turn, mine = queue_turn(T_QUEUE, token, ms)\n"                   \
    "    if turn then\n"                                                        \
    "      if mine then redis.call('ZREM', T_QUEUE, mine) end\n"                \
    "      holder = token\n"                                                    \
    "    end\n"                                                                 \
    "  end\n"                                                                   \
    "  if holder == token then\n"                                               \
    "    redis.call('SET', T_LEASE, token, 'PX', lease)\n"                      \
    "    out[1] = out[1] .. '+lease'\n"                                         \
    "  elseif holder and queue_turn(T_QUEUE, token, ms) then\n"                 \
    "    out[1] = out[1] .. '+next'\n"                                          \
    "  end\n"                                                                   \
    "end\n"                                                                     \
    "local member = v .. ':' .. token\n"                                        \
    "if prev ~= '' and prev ~= member then redis.call('ZREM', T_READERS, prev) end\n" \
    "redis.call('ZADD', T_READERS, ms + tonumber(lease), member)\n"               \
    "if log_ttl ~= '' and redis.call('PEXPIRE', T_LOG, log_ttl) == 0 then\n"  \
    "  redis.call('LPUSH', T_LOG, 'from:' .. v)\n"                            \
    "  redis.call('PEXPIRE', T_LOG, log_ttl)\n"                               \
    "end\n"                                                                     \
    "if n == 0 or (id ~= v and id .. '/' .. n == cached) then return out end\n" \
    "out[4] = redis.call('HGET', K, '0')\n"                               \
    "out[5] = redis.call('HEXISTS', K, tostring(n - 1))\n"                \
    "out[6] = redis.call('HEXISTS', K, tostring(n))\n"                    \
    "local cid = string.match(cached, '^(%d+:%x+)/')\n"                         \
    "local cv = cid and tonumber(string.match(cid, '^%d+'))\n"                  \
    "local d = cv and tonumber(v) - cv or 0\n"                                  \
    "if d < 1 or d > " STR(KVSQL_LOG_ENTRIES) " then return out end\n"         \
    "local log = redis.call('LRANGE', T_LOG, 0, d - 1)\n"                     \
    "if #log < d then return out end\n"                                         \
    "local seen, pages, want = {}, {}, id\n"                                    \
    "for j = 1, d do\n"                                                         \
    "  local ver, list, base, new = string.match(log[j], '^(%d+):([^;]*);([^;]*);([^;]*)$')\n" \
    "  if not ver or ver ~= string.format('%d', tonumber(v) - j + 1) or new ~= want then return out end\n" \
    "  if list == '*' then return out end\n"                                    \
    "  want = base\n"                                                           \
    "  for p in string.gmatch(list, '%d+') do\n"                                \
    "    if not seen[p] then\n"                                                 \
    "      seen[p] = true\n"                                                    \
    "      pages[#pages + 1] = p\n"                                             \
    "      if #pages > " STR(CHANGED_PAGES_MAX) " then return out end\n"       \
    "    end\n"                                                                 \
    "  end\n"                                                                   \
    "end\n"                                                                     \
    "if want ~= cid then return out end\n"                                      \
    "out[7] = #pages\n"                                                         \
    "for j, p in ipairs(pages) do\n"                                            \
    "  out[#out + 1] = p\n"                                                     \
    "  out[#out + 1] = j <= " STR(INLINE_PAGES) " and p ~= '0' and redis.call('HGET', K, p) or false\n" \
    "end\n"                                                                     \
    "return out\n"

static const char begin_lua[] =
    KEYS_AS_LOCALS(BEGIN_KEYS)
    "local token, lease, prev, cached, log_ttl, intent = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]\n"
    QUEUE_FUNCS BEGIN_HEAD BEGIN_TAIL;

/* The pages ARGV[4..] (indices, any order) as of the snapshot ARGV[2]
 * (an identity, IDENT_FN): from K while the identity is still the
 * snapshot's, else each from its first undo record after the snapshot, or
 * from K when it has none. {'old'} when the history since the snapshot
 * cannot be vouched for: the reader's registration is gone (a commit
 * dropped it as lapsed, or Redis restarted: its undo may have been
 * trimmed), T:v is not past the snapshot's version, the record
 * 'base:<s+1>' does not name the snapshot (the database was replaced,
 * restored, flushed) or the three undo keys disagree on their count (one
 * was deleted). Renews the registration, and the writer's lease when it
 * is ours. */
static const char read_lua[] =
    KEYS_AS_LOCALS(READ_KEYS)
    "local token, s, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])\n" IDENT_FN BADTYPE_FN UNDO_NAME_FNS
    "local v, id = ident(T_V, T_ID)\n"
    "if not v then return id end\n"
    "local bad = badtype({T_READERS, 'zset', T_UNDO, 'hash', T_UNDO_IDX, 'zset', T_LEASE, 'string', T_UNDO_VER, 'zset'})\n"
    "if bad then return bad end\n"
    "local sv = tonumber(string.match(s, '^%d+'))\n"
    "local member = string.match(s, '^%d+') .. ':' .. token\n"
    "if id ~= s then\n"
    "  if tonumber(v) <= sv or not redis.call('ZSCORE', T_READERS, member) then return {'old', v} end\n"
    "  if redis.call('HGET', T_UNDO, " UNDO_BASE " .. undo_version(sv + 1)) ~= s then return {'old', v} end\n"
    "  local nrec = redis.call('HLEN', T_UNDO)\n"
    "  if redis.call('ZCARD', T_UNDO_IDX) ~= nrec or redis.call('ZCARD', T_UNDO_VER) ~= nrec then return {'old', v} end\n"
    "end\n" NOW_MS
    "redis.set_repl(redis.REPL_NONE)\n"
    "redis.call('ZADD', T_READERS, ms + lease, member)\n"
    "if redis.call('GET', T_LEASE) == token then redis.call('PEXPIRE', T_LEASE, lease) end\n"
    "local out = {'ok'}\n"
    "if id == s then\n"
    "  for j = 4, #ARGV, 1000 do\n"
    "    local pages = redis.call('HMGET', K, unpack(ARGV, j, math.min(j + 999, #ARGV)))\n"
    "    for k = 1, #pages do out[#out + 1] = pages[k] end\n"
    "  end\n"
    "  return out\n"
    "end\n"
    "local after = undo_version(sv + 1)\n"
    "for j = 4, #ARGV do\n"
    "  local p = undo_page(tonumber(ARGV[j]))\n"
    "  local u = redis.call('ZRANGEBYLEX', T_UNDO_IDX, '[' .. p .. ':' .. after, '(' .. p .. ';', 'LIMIT', 0, 1)\n"
    "  if u[1] then out[#out + 1] = redis.call('HGET', T_UNDO, u[1])\n"
    "  else out[#out + 1] = redis.call('HGET', K, ARGV[j]) end\n"
    "end\n"
    "return out\n";

/* Makes the token the writer: {'stale'} when the identity is no longer
 * the snapshot's (a commit came, or the database was replaced); {'busy', holder} when another token holds the lease (unless
 * that token is ARGV[4]: its connection is gone, the client asked CLIENT
 * LIST ID, store_redis.c, and its lease is taken over), and {'busy', ''}
 * when the lease is free but another writer waited longer (T:queue,
 * T:queue): either way the token waits in T:queue when ARGV[5] is "1"
 * (it was refused just before: it is retrying, store_redis.c), as it
 * keeps its place when answered stale (a commit landed between its
 * begin and this lock: it begins again at once, SQLite's busy handler). */
static const char lock_lua[] =
    KEYS_AS_LOCALS(LOCK_KEYS) IDENT_FN
    "local v, id = ident(T_V, T_ID)\n"
    "if not v then return id end\n"
    "local cur = redis.call('GET', T_LEASE)\n" NOW_MS QUEUE_FUNCS
    "redis.set_repl(redis.REPL_NONE)\n"
    "if id ~= ARGV[2] then\n"
    "  if ARGV[5] == '1' and cur ~= ARGV[1] then\n"
    "    local _, mine = queue_turn(T_QUEUE, ARGV[1], ms)\n"
    "    queue_wait(T_QUEUE, ARGV[1], ms, mine)\n"
    "  end\n"
    "  return {'stale', v}\n"
    "end\n"
    "if cur ~= ARGV[1] then\n"
    "  local turn, mine = queue_turn(T_QUEUE, ARGV[1], ms)\n"
    "  if (cur and cur ~= ARGV[4]) or not turn then\n"
    "    if ARGV[5] == '1' then queue_wait(T_QUEUE, ARGV[1], ms, mine) end\n"
    "    return {'busy', cur or ''}\n"
    "  end\n"
    "  if mine then redis.call('ZREM', T_QUEUE, mine) end\n"
    "end\n"
    "redis.call('SET', T_LEASE, ARGV[1], 'PX', ARGV[3])\n"
    "return {'ok'}\n";

/* The undo-saving step both commit paths share (the commit script, and
 * each upload of a staged commit): for commit nv (a number) of the
 * snapshot s, names the snapshot in the record 'base:<nv>', and defines
 * keep_page(i, page), which keeps page (nil or false: nothing to keep) as
 * page i's value before commit nv, in T:undo, T:undo:idx and T:undo:ver.
 * Needs UNDO_NAME_FNS. */
#define UNDO_SAVER                                                             \
    "local ver = undo_version(nv)\n"                                           \
    "local function keep(f, page)\n"                                           \
    "  redis.call('HSET', T_UNDO, f, page)\n"                                  \
    "  redis.call('ZADD', T_UNDO_IDX, 0, f)\n"                                 \
    "  redis.call('ZADD', T_UNDO_VER, nv, f)\n"                                \
    "end\n"                                                                    \
    "local function keep_page(i, page) if page then keep(undo_field(i, ver), page) end end\n" \
    "keep(" UNDO_BASE " .. ver, s)\n"


/* The end of a commit, one-step or staged: the writer's reader
 * registration moves to the new version `nvs` (its snapshot `s` was the
 * old one), its lease is renewed, and the reply names the new identity. */
#define COMMITTED                                                              \
    "redis.call('ZREM', T_READERS, string.match(s, '^%d+') .. ':' .. token)\n" \
    "redis.call('ZADD', T_READERS, ms + lease, nvs .. ':' .. token)\n"       \
    "redis.call('PEXPIRE', T_LEASE, lease)\n"                                 \
    "return {'ok', nid}\n"

/* Applies a batch if the token still holds the lease and the identity is
 * still the snapshot's, after checking every key it touches (BADTYPE_FN,
 * IDENT_FN, capture_head) so that nothing is written unless all of it is;
 * saves undo for the other live readers first, with 'base:<v+1>' naming
 * the snapshot; drops lapsed and forged registrations (DROP_LAPSED). Sets
 * T:id to "<v+1>:<ARGV[6]>" with INCR T:v. Logs the pages below the old
 * length it overwrote or cut off in T:log when that exists, with the
 * identities it went from and to. The committer's own registration moves
 * to the new version. Answers {'ok', new identity}.
 * While capture is on (T:changes:cfg exists) it appends the row changes
 * the client captured (ARGV[7] strings from ARGV[8] on: each entry its
 * string count, then its field/value pairs but the version) to T:changes
 * after INCR T:v, replicated with the pages, tagged with the new version;
 * one 'commit' entry when there are none (docs/FORMAT.md, "The changes
 * stream"). {'capture', v} when capture is on but the client captured
 * nothing (ARGV[7] ""; capture was turned on after its begin), {'changes',
 * type} when T:changes is not a stream: nothing written. */
static const char commit_lua[] =
    KEYS_AS_LOCALS(COMMIT_KEYS)
    "local token, s, lease, n, newid = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[6]\n"
    IDENT_FN BADTYPE_FN CAPTURE_CHECK_FN UNDO_NAME_FNS
    "if redis.call('GET', T_LEASE) ~= token then return {'lease'} end\n"
    "local v, id = ident(T_V, T_ID)\n"
    "if not v then return id end\n"
    "if id ~= s then return {'stale', v} end\n"
    "local first = ARGV[7] == '' and 8 or 8 + tonumber(ARGV[7])\n"
    "local bad = badtype({K, 'hash', T_READERS, 'zset', T_UNDO, 'hash', T_UNDO_IDX, 'zset', T_UNDO_VER, 'zset',\n"
    "                     T_LOG, 'list', T_ID, 'string'})\n"
    "if bad then return bad end\n"
    "local capture = redis.call('EXISTS', T_CHANGES_CFG) == 1\n"
    "if capture and ARGV[7] == '' then return {'capture', v} end\n"
    "local head\n"
    "if capture then\n"
    "  local nentries = 0\n"
    "  local j = 8\n"
    "  while j < first do nentries = nentries + 1; j = j + 1 + tonumber(ARGV[j]) end\n"
    "  head, bad = capture_head(T_CHANGES, T_CHANGES_CFG, math.max(nentries, 1))\n"
    "  if bad then return bad end\n"
    "end\n" NOW_MS
    "local old = redis.call('HLEN', K)\n"
    "if ARGV[5] ~= '' and redis.call('HEXISTS', K, ARGV[5]) == 0 then old = old + 1 end\n"
    "local nv = tonumber(v) + 1\n"
    "local nvs = string.format('%d', nv)\n"
    "local nid = nvs .. ':' .. newid\n"
    "redis.set_repl(redis.REPL_NONE)\n"
    DROP_LAPSED("T_READERS")
    "local oldest = nil\n"
    "for _, m in ipairs(redis.call('ZRANGE', T_READERS, 0, -1)) do\n"
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
    "if oldest then\n" UNDO_SAVER
    "  local function save(i) keep_page(i, redis.call('HGET', K, tostring(i))) end\n"
    "  for j = first, #ARGV, 2 do\n"
    "    local i = tonumber(ARGV[j])\n"
    "    if i < old then save(i) end\n"
    "  end\n"
    "  for i = n, old - 1 do save(i) end\n"
    UNDO_TRIM("T_UNDO", "T_UNDO_IDX", "T_UNDO_VER")
    "else\n"
    "  redis.call('DEL', T_UNDO, T_UNDO_IDX, T_UNDO_VER)\n"
    "end\n"
    "redis.set_repl(redis.REPL_ALL)\n"
    "local pairs_ = {}\n"
    "for j = first, #ARGV do pairs_[#pairs_ + 1] = ARGV[j] end\n"
    "chunked('HSET', K, pairs_)\n"
    "local cut = {}\n"
    "for i = n, old - 1 do cut[#cut + 1] = tostring(i) end\n"
    "chunked('HDEL', K, cut)\n"
    "redis.call('INCR', T_V)\n"
    "redis.call('SET', T_ID, nid)\n"
    CAPTURE_XADD("8")
    "redis.set_repl(redis.REPL_NONE)\n"
    "if redis.call('EXISTS', T_LOG) == 1 then\n"
    "  local changed = {}\n"
    "  for j = first, #ARGV, 2 do\n"
    "    if tonumber(ARGV[j]) < old then changed[#changed + 1] = ARGV[j] end\n"
    "  end\n"
    "  for i = n, old - 1 do changed[#changed + 1] = tostring(i) end\n"
    "  local list = #changed > " STR(KVSQL_LOG_ENTRY_PAGES) " and '*' or table.concat(changed, ',')\n"
    "  redis.call('LPUSH', T_LOG, nvs .. ':' .. list .. ';' .. s .. ';' .. nid)\n"
    "  redis.call('LTRIM', T_LOG, 0, " STR(KVSQL_LOG_ENTRIES) " - 1)\n"
    "end\n"
    COMMITTED;

/* Ends a transaction: drops the lease if it is still ours, and the
 * reader registration when one is named; the last reader out deletes the
 * undo records, which nobody can need any more. */
static const char end_lua[] =
    KEYS_AS_LOCALS(END_KEYS) BADTYPE_FN
    "if badtype({T_LEASE, 'string', T_READERS, 'zset'}) then return 0 end\n"
    "redis.set_repl(redis.REPL_NONE)\n"
    "if redis.call('GET', T_LEASE) == ARGV[1] then redis.call('DEL', T_LEASE) end\n"
    "if ARGV[2] ~= '' then\n"
    "  redis.call('ZREM', T_READERS, ARGV[2])\n"
    "  if redis.call('ZCARD', T_READERS) == 0 then redis.call('DEL', T_UNDO, T_UNDO_IDX, T_UNDO_VER) end\n"
    "end\n"
    "return 1\n";

/* ---- a big commit, staged: upload, copy, publish ---------------------------
 * Each script is short (at most STAGE_CHUNK pages, or STAGE_COPY copied),
 * so other clients never wait long; nothing is visible before the publish,
 * which swaps the whole new hash in at once. Each checks that the token
 * still holds the lease and renews it, and keeps T:stage alive. */

/* Adds pages to T:stage (the first call of a commit first drops a stale
 * one a crashed writer left), after saving, for the readers, the current
 * value of each page it overwrites below the old length as an undo record
 * of the coming version (as the commit script does). */
static const char stage_put_lua[] =
    KEYS_AS_LOCALS(STAGE_PUT_KEYS)
    "local token, s, lease, old, have = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[5]), tonumber(ARGV[7])\n"
    IDENT_FN BADTYPE_FN UNDO_NAME_FNS
    "if redis.call('GET', T_LEASE) ~= token then return {'lease'} end\n"
    "local v, id = ident(T_V, T_ID)\n"
    "if not v then return id end\n"
    "if id ~= s then return {'stale', v} end\n"
    "local bad = badtype({K, 'hash', T_UNDO, 'hash', T_UNDO_IDX, 'zset', T_UNDO_VER, 'zset'})\n"
    "if bad then return bad end\n"
    "if ARGV[4] ~= '1' and redis.call('HLEN', T_STAGE) ~= have then return {'gone'} end\n"
    "redis.set_repl(redis.REPL_NONE)\n"
    "redis.call('PEXPIRE', T_LEASE, lease)\n"
    "local nv = tonumber(v) + 1\n" UNDO_SAVER
    "for j = 8, #ARGV, 2 do\n"
    "  local i = tonumber(ARGV[j])\n"
    "  keep_page(i, i < old and redis.call('HGET', K, ARGV[j]))\n"
    "end\n"
    "redis.set_repl(redis.REPL_ALL)\n"
    "if ARGV[4] == '1' then redis.call('UNLINK', T_STAGE) end\n"
    "redis.call('HSET', T_STAGE, unpack(ARGV, 8))\n"
    "redis.call('PEXPIRE', T_STAGE, ARGV[6])\n"
    "return {'ok', redis.call('HLEN', T_STAGE)}\n";

/* Copies into T:stage the pages from..to-1 of K it lacks (those the
 * commit does not write), when T:stage still holds the `have` fields the
 * steps before left (else {'gone'}: it was deleted or evicted, and a copy
 * would refill it from the old pages). */
static const char stage_copy_lua[] =
    KEYS_AS_LOCALS(STAGE_COPY_KEYS) BADTYPE_FN
    "if redis.call('GET', T_LEASE) ~= ARGV[1] then return {'lease'} end\n"
    "local bad = badtype({T_STAGE, 'hash', K, 'hash'})\n"
    "if bad then return bad end\n"
    "if redis.call('HLEN', T_STAGE) ~= tonumber(ARGV[6]) then return {'gone'} end\n"
    "redis.set_repl(redis.REPL_NONE)\n"
    "redis.call('PEXPIRE', T_LEASE, ARGV[2])\n"
    "redis.set_repl(redis.REPL_ALL)\n"
    "for i = tonumber(ARGV[3]), tonumber(ARGV[4]) - 1 do\n"
    "  local f = tostring(i)\n"
    "  if redis.call('HEXISTS', T_STAGE, f) == 0 then\n"
    "    local p = redis.call('HGET', K, f)\n"
    "    if p then redis.call('HSET', T_STAGE, f, p) end\n"
    "  end\n"
    "end\n"
    "redis.call('PEXPIRE', T_STAGE, ARGV[5])\n"
    "return {'ok', redis.call('HLEN', T_STAGE)}\n";

/* The commit itself, when the lease is still ours, no commit came after
 * the snapshot, capture is off and T:stage holds exactly the fields the
 * steps left (ARGV[6]: every one uploaded or copied, none lost since) and
 * the new length: K becomes T:stage (RENAME K T:stage:old, RENAME T:stage
 * K, UNLINK T:stage:old: the old hash is freed in the background; K keeps
 * its TTL, or has none), T:v grows by one, T:id names the new version and
 * T:log says '*'. The undo records were saved by the uploads; with no
 * other reader left they all go (UNLINK). {'gone'} when T:stage lacks
 * pages (deleted, evicted, lapsed): nothing written. Replies as the
 * commit script. */
static const char stage_publish_lua[] =
    KEYS_AS_LOCALS(STAGE_PUBLISH_KEYS)
    "local token, s, lease, newid = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[5]\n"
    IDENT_FN BADTYPE_FN
    "if redis.call('GET', T_LEASE) ~= token then return {'lease'} end\n"
    "local v, id = ident(T_V, T_ID)\n"
    "if not v then return id end\n"
    "if id ~= s then return {'stale', v} end\n"
    "if redis.call('EXISTS', T_CHANGES_CFG) == 1 then return {'capture', v} end\n"
    "local bad = badtype({K, 'hash', T_STAGE, 'hash', T_READERS, 'zset', T_UNDO, 'hash', T_UNDO_IDX, 'zset',\n"
    "                     T_UNDO_VER, 'zset', T_LOG, 'list', T_ID, 'string'})\n"
    "if bad then return bad end\n"
    "local have = redis.call('HLEN', T_STAGE)\n"
    "if have ~= tonumber(ARGV[4]) or have ~= tonumber(ARGV[6]) then return {'gone'} end\n"
    NOW_MS
    "local nvs = string.format('%d', tonumber(v) + 1)\n"
    "local nid = nvs .. ':' .. newid\n"
    "redis.set_repl(redis.REPL_NONE)\n"
    DROP_LAPSED("T_READERS")
    "local others = false\n"
    "for _, m in ipairs(redis.call('ZRANGE', T_READERS, 0, -1)) do\n"
    "  local sep = string.find(m, ':', 1, true)\n"
    "  if sep and string.sub(m, sep + 1) ~= token then others = true end\n"
    "end\n"
    "if not others then redis.call('UNLINK', T_UNDO, T_UNDO_IDX, T_UNDO_VER) end\n"
    "redis.set_repl(redis.REPL_ALL)\n"
    "local ttl = redis.call('PTTL', K)\n"
    "if redis.call('EXISTS', K) == 1 then redis.call('RENAME', K, T_STAGE_OLD) end\n"
    "redis.call('RENAME', T_STAGE, K)\n"
    "if ttl > 0 then redis.call('PEXPIRE', K, ttl) else redis.call('PERSIST', K) end\n"
    "redis.call('UNLINK', T_STAGE_OLD)\n"
    "redis.call('INCR', T_V)\n"
    "redis.call('SET', T_ID, nid)\n"
    "redis.set_repl(redis.REPL_NONE)\n"
    "if redis.call('EXISTS', T_LOG) == 1 then\n"
    "  redis.call('LPUSH', T_LOG, nvs .. ':*;' .. s .. ';' .. nid)\n"
    "  redis.call('LTRIM', T_LOG, 0, " STR(KVSQL_LOG_ENTRIES) " - 1)\n"
    "end\n"
    COMMITTED;

/* The warm begin: begin's work with fewer arguments, and none of its
 * writes when nothing changed. The client sends it only while its reader
 * registration <cached v>:<token> is fresh (renewed less than lease_ms/4
 * ago on this connection, so it outlives a transaction that reads no more
 * than that long) and it needs neither the changelog's renewal nor the
 * write-intent lease. Then, when the identity and HLEN are still ARGV[3]
 * ("<T:id>/<HLEN>"), that registration already protects the snapshot: the
 * reply is begin's {'ok', T:id, HLEN} (or 'capture'), and Redis ran four
 * reads and no write. Else it goes on as begin, with previous member
 * "<cached v>:<token>", no changelog renewal, no write intent. */
static const char begin_warm_lua[] =
    KEYS_AS_LOCALS(BEGIN_WARM_KEYS)
    "local token, lease, cached, log_ttl, intent = ARGV[1], ARGV[2], ARGV[3], '', ''\n"
    "local prev = (string.match(cached, '^(%d+):') or '') .. ':' .. token\n"
    QUEUE_FUNCS BEGIN_HEAD
    "if id ~= v and id .. '/' .. n == cached then return out end\n"
    BEGIN_TAIL;

const char *const kvsql_scripts[SCRIPT_COUNT] = {begin_lua,     read_lua,       lock_lua,         commit_lua,
                                                 end_lua,       stage_put_lua,  stage_copy_lua,   stage_publish_lua,
                                                 begin_warm_lua};

/* Each script's keys, from the same *_KEYS list as its KEYS_AS_LOCALS. */
#define KEY_WHICH_(name) SKEY_##name,
#define KEYS_OF(var, LIST) static const unsigned char var[] = {LIST(KEY_WHICH_)};
KEYS_OF(begin_keys, BEGIN_KEYS)
KEYS_OF(read_keys, READ_KEYS)
KEYS_OF(lock_keys, LOCK_KEYS)
KEYS_OF(commit_keys, COMMIT_KEYS)
KEYS_OF(end_keys, END_KEYS)
KEYS_OF(stage_put_keys, STAGE_PUT_KEYS)
KEYS_OF(stage_copy_keys, STAGE_COPY_KEYS)
KEYS_OF(stage_publish_keys, STAGE_PUBLISH_KEYS)
KEYS_OF(begin_warm_keys, BEGIN_WARM_KEYS)
#define KEYS_ENTRY(var) {var, (int)sizeof(var)}
const kvsql_script_keys_t kvsql_script_keys[SCRIPT_COUNT] = {
    KEYS_ENTRY(begin_keys),      KEYS_ENTRY(read_keys),       KEYS_ENTRY(lock_keys),
    KEYS_ENTRY(commit_keys),     KEYS_ENTRY(end_keys),        KEYS_ENTRY(stage_put_keys),
    KEYS_ENTRY(stage_copy_keys), KEYS_ENTRY(stage_publish_keys), KEYS_ENTRY(begin_warm_keys)};
_Static_assert(sizeof(commit_keys) <= SCRIPT_KEYS_MAX && sizeof(stage_publish_keys) <= SCRIPT_KEYS_MAX,
               "SCRIPT_KEYS_MAX is the most keys a script takes");
