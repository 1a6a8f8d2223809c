/* script_parts.h - Lua pieces shared by the scripts of both library
 * layouts: the one-hash store's (client/hash/scripts.c) and the spread
 * store's (client/spread/scripts.c). Each is a C string macro pasted into
 * a script's text; what each does is said above it. One owner for the
 * identity rule, the type checks, reader lapsing, the clock and turns. */
#ifndef KVSQL_CLIENT_SCRIPT_PARTS_H
#define KVSQL_CLIENT_SCRIPT_PARTS_H

#include "format.h"

#define STR_(x) #x
#define STR(x) STR_(x)

/* The snapshot's identity (docs/FORMAT.md, "Identity"): T:id when it
 * names the version T:v holds ("<v>:<16 hex>", set by every commit), else
 * the bare version (a database last written by older code, or whose T:id
 * went missing: no identity, so no cache is trusted across begins). Or
 * nil and the refusal, before anything is written: {'version', T:v} when
 * T:v is not a version number, {'aux', ...} when T:v or T:id is not a
 * string. */
#define IDENT_FN                                                               \
    "local function ident(vk, ik)\n"                                           \
    "  local v, id = redis.pcall('GET', vk), redis.pcall('GET', ik)\n"         \
    "  if type(v) == 'table' then return nil, {'aux', vk, redis.call('TYPE', vk)['ok'], 'string'} end\n" \
    "  if type(id) == 'table' then return nil, {'aux', ik, redis.call('TYPE', ik)['ok'], 'string'} end\n" \
    "  v = v or '0'\n"                                                         \
    "  if not string.match(v, '^%d+$') or #v > 15 then return nil, {'version', v} end\n" \
    "  if id and string.sub(id, 1, #v + 1) == v .. ':' then return v, id end\n" \
    "  return v, v\n"                                                          \
    "end\n"
/* Every check before the first write: {'aux', key, its type, the type it
 * must have} for the first of the (key, type) pairs whose key holds
 * another type ('none' always fits). */
#define BADTYPE_FN                                                             \
    "local function badtype(list)\n"                                           \
    "  for i = 1, #list, 2 do\n"                                               \
    "    local t = redis.call('TYPE', list[i])['ok']\n"                        \
    "    if t ~= 'none' and t ~= list[i + 1] then return {'aux', list[i], t, list[i + 1]} end\n" \
    "  end\n"                                                                  \
    "end\n"
/* Drops the registrations of T:readers (key rk) that lapsed, and those
 * that claim to lapse more than KVSQL_LEASE_MAX_MS from now (no client
 * registers so far ahead: such a member was forged, and would keep undo
 * records forever). Needs `ms` (NOW_MS). */
#define DROP_LAPSED(rk)                                                        \
    "redis.call('ZREMRANGEBYSCORE', " rk ", '-inf', '(' .. ms)\n"              \
    "redis.call('ZREMRANGEBYSCORE', " rk ", '(' .. (ms + " STR(KVSQL_LEASE_MAX_MS) "), '+inf')\n"

/* Drops the undo records (hash u, with its sorted sets idx and ver) of
 * commits no registered reader needs: those scored up to `oldest` in ver.
 * Needs `chunked` (the commit scripts' bounded unpacking). */
#define UNDO_TRIM(u, idx, ver)                                                 \
    "  local dead = redis.call('ZRANGEBYSCORE', " ver ", '-inf', oldest)\n"   \
    "  chunked('HDEL', " u ", dead)\n"                                         \
    "  chunked('ZREM', " idx ", dead)\n"                                       \
    "  redis.call('ZREMRANGEBYSCORE', " ver ", '-inf', oldest)\n"

/* The names of undo records (format.h, whose constants they are made
 * from): undo_page(i) is page i's part, undo_version(nv) version nv's,
 * undo_field(i, ver) page i's record of the version part ver, and
 * UNDO_BASE the prefix of the record naming the snapshot they were taken
 * from ("base:" .. ver). */
#define UNDO_NAME_FNS                                                          \
    "local function undo_page(i) return string.format('%0" STR(KVSQL_UNDO_PAGE_HEX) "x', i) end\n" \
    "local function undo_version(nv) return string.format('%0" STR(KVSQL_UNDO_VERSION_HEX) "x', nv) end\n" \
    "local function undo_field(i, ver) return undo_page(i) .. ':' .. ver end\n"
#define UNDO_BASE "'" KVSQL_UNDO_BASE "'"
/* The commit's row changes into T:changes, when `capture` (the begin's
 * CAPTURE_CHECK_FN said so): `head` holds XADD's key and trimming, `nvs`
 * the new version; ARGV from `first_arg` up to `first` holds the entries,
 * each its field count then its fields (none: one {'op', 'commit'}
 * marker, a commit that changed pages and no row). */
#define CAPTURE_XADD(first_arg)                                                \
    "if capture then\n"                                                       \
    "  head[#head + 1] = '*'\n"                                               \
    "  head[#head + 1] = 'version'\n"                                         \
    "  head[#head + 1] = nvs\n"                                               \
    "  local function xadd(fields)\n"                                         \
    "    local a = {unpack(head)}\n"                                          \
    "    for _, f in ipairs(fields) do a[#a + 1] = f end\n"                   \
    "    redis.call('XADD', unpack(a))\n"                                     \
    "  end\n"                                                                 \
    "  if first == " first_arg " then xadd({'op', 'commit'}) end\n"           \
    "  local j = " first_arg "\n"                                             \
    "  while j < first do\n"                                                  \
    "    local n = tonumber(ARGV[j])\n"                                       \
    "    xadd({unpack(ARGV, j + 1, j + n)})\n"                                \
    "    j = j + 1 + n\n"                                                     \
    "  end\n"                                                                 \
    "end\n"

#define NOW_MS                                                                 \
    "local now = redis.call('TIME')\n"                                         \
    "local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)\n"

/* Turns (docs/FORMAT.md, "Turns"): a writer that finds the lease taken
 * queues in T:queue, and a free lease goes to the oldest waiter. Two Lua
 * functions on the sorted set q, member "<arrival ms, 15 digits>:<me>"
 * scored by when it lapses: queue_turn drops lapsed members and says
 * whether it is me's turn (no one waits, or me waited longest), with me's
 * member when me waits; queue_wait puts me in the queue (arriving now) or
 * keeps its place a while longer, and the queue itself (it lapses when no
 * one waits any more). */
#define QUEUE_FUNCS                                                            \
    "local function queue_turn(q, me, ms)\n"                                   \
    "  redis.call('ZREMRANGEBYSCORE', q, '-inf', '(' .. ms)\n"                 \
    "  local head, mine\n"                                                     \
    "  for _, m in ipairs(redis.call('ZRANGE', q, 0, -1)) do\n"                \
    "    if not head or m < head then head = m end\n"                          \
    "    if string.sub(m, " STR(KVSQL_QUEUE_ARRIVAL) " + 2) == me then mine = m end\n" \
    "  end\n"                                                                  \
    "  return not head or head == mine, mine\n"                                \
    "end\n"                                                                    \
    "local function queue_wait(q, me, ms, mine)\n"                             \
    "  redis.call('ZADD', q, ms + " STR(KVSQL_QUEUE_LAPSE_MS) ", mine or string.format('%0" STR(KVSQL_QUEUE_ARRIVAL) "d', ms) .. ':' .. me)\n" \
    "  redis.call('PEXPIRE', q, " STR(KVSQL_QUEUE_LAPSE_MS) ")\n"             \
    "end\n"

/* Shared by the one-hash commit script (client/hash/scripts.c) and the
 * spread publish (client/spread/scripts.c): the changes stream is one
 * format. Needs format.h (KVSQL_CHANGES_MAXLEN_DIGITS) where expanded. */
/* capture_head(stream key, cfg key, k): the head of the XADD of a commit
 * that adds k entries to T:changes, checked before anything is written:
 * nil and {'changes', type} when T:changes is not a stream, {'changes',
 * 'exhausted'} when its IDs cannot take k more entries, {'cfg', field,
 * value} when T:changes:cfg holds a maxlen that is not "0" (or missing:
 * no limit) or a decimal integer of 1 to KVSQL_CHANGES_MAXLEN_DIGITS digits
 * (format.h: kvsql_changes_maxlen_valid, the module's rule), or
 * a trim other than "~" or "=" (or missing). */
#define CAPTURE_CHECK_FN                                                       \
    "local function capture_head(sk, ck, k)\n"                                 \
    "  local t = redis.call('TYPE', sk)['ok']\n"                               \
    "  if t ~= 'none' and t ~= 'stream' then return nil, {'changes', t} end\n" \
    "  local ct = redis.call('TYPE', ck)['ok']\n"                              \
    "  if ct ~= 'hash' then return nil, {'aux', ck, ct, 'hash'} end\n"        \
    "  local cfg = redis.call('HMGET', ck, 'maxlen', 'trim')\n"                \
    "  local maxlen, trim = cfg[1] or '', cfg[2] or ''\n"                      \
    "  if trim ~= '' and trim ~= '~' and trim ~= '=' then return nil, {'cfg', 'trim', trim} end\n" \
    "  local head = {sk}\n"                                                    \
    "  if maxlen ~= '' and maxlen ~= '0' then\n"                               \
    "    if not string.match(maxlen, '^[1-9]%d*$') or #maxlen > " STR(KVSQL_CHANGES_MAXLEN_DIGITS) " then\n" \
    "      return nil, {'cfg', 'maxlen', maxlen}\n"                            \
    "    end\n"                                                                \
    "    head = {sk, 'MAXLEN', trim == '=' and '=' or '~', maxlen}\n"         \
    "  end\n"                                                                  \
    "  if t == 'stream' then\n"                                                \
    "    local info, last = redis.call('XINFO', 'STREAM', sk), ''\n"          \
    "    for i = 1, #info - 1, 2 do\n"                                         \
    "      if info[i] == 'last-generated-id' then last = info[i + 1] end\n"    \
    "    end\n"                                                                \
    "    local ms, seq = string.match(last, '^(%d+)-(%d+)$')\n"               \
    "    if ms == '18446744073709551615' and #seq == 20 and string.sub(seq, 1, 10) == '1844674407'\n" \
    "       and 3709551615 - tonumber(string.sub(seq, 11)) < k then return nil, {'changes', 'exhausted'} end\n" \
    "  end\n"                                                                  \
    "  return head\n"                                                          \
    "end\n"

#endif
