"""A turn's scripts: begin, the stored session, the fenced event publish and commit.

Used by ``workers.begin``, ``core.bus.session_writer`` and ``core.sessions.redis``.
"""

from __future__ import annotations

from typing import Final

from ._lua import LuaScript

# -- the stored session (core.sessions.redis): a head hash and a log list per session.
# The function below is part of every script that writes one (COMMIT_TURN,
# SAVE_SESSION): ``mode`` 'append' adds the turn's messages to the log, 'rewrite'
# replaces the log (a compaction, a session given its history, the first commit of
# a session stored in the old single-JSON form, which is deleted then).
_WRITE_SESSION = """
local function push_slices(key, first, last)
  -- RPUSH in slices: unpack() of thousands of values would overflow the Lua C stack.
  while first <= last do
    local upto = math.min(first + 499, last)
    redis.call('RPUSH', key, unpack(ARGV, first, upto))
    first = upto + 1
  end
end
-- head, log, old form: the session's keys; fields at ARGV[f..f+2h-1], messages at
-- ARGV[m..m+n-1]. Returns false, writing nothing, when an append would not continue
-- the log the caller read: the head's stamp is another write's (every write sets a
-- new one: a log rewritten to the same length is caught), or the length differs.
local function log_continues(mode, head, log, length, stamp)
  if mode ~= 'append' then
    return true
  end
  return (redis.call('HGET', head, 'stamp') or '') == stamp
    and redis.call('LLEN', log) == tonumber(length)
end
local function write_session(mode, head, log, old, f, h, m, n)
  if mode == 'rewrite' then
    redis.call('DEL', log, old)
  end
  push_slices(log, m, m + n - 1)
  if h > 0 then
    redis.call('HSET', head, unpack(ARGV, f, f + 2 * h - 1))
  end
  redis.call('HINCRBY', head, 'rev', 1)
end
"""

BEGIN_TURN: Final = LuaScript(
    """
-- KEYS: lease, cursor, inbound stream, attempts hash, session head, session log,
--       session (old form), ready stream
-- ARGV: token, lease ttl ms, count, which entry the turn is guessed to be run as
--       ('first' / 'last'), worker group, signal id ('' = none), ack when busy (1/0),
--       the stamp of the session the worker has cached ('' = none), the token prefix
--       of holders that run no turns (the compaction job's)
-- -> {0} the lease is held by another, which drains: the signal acked;
--    {3} the lease is held by another and the signal kept pending (not asked to ack,
--     or the holder runs no turns: if it dies, this signal is what brings the work back);
--    {1} nothing pending (the signal acked, the lease not taken);
--    {2, entries, guessed run id, its attempt count, head [field, value...], the log's
--     messages joined by ',', their number, old-form session or false}: the lease is
--     ours with ARGV token;
--    {2, entries, guessed run id, its attempt count}: the same, and the session is
--     the one the worker cached (the head's stamp is the one it sent).
-- The lease grant, the pending read, the attempt counter and the session load in one
-- step: what a worker needs to start a turn. The attempt is counted for the run id
-- the worker's busy policy most likely picks; it moves the count when it picks
-- another (MOVE_ATTEMPT).
local function ack()
  if ARGV[6] ~= '' then
    redis.call('XACK', KEYS[8], ARGV[5], ARGV[6])
    redis.call('XDEL', KEYS[8], ARGV[6])
  end
end
local holder = redis.call('GET', KEYS[1])
if holder then
  if ARGV[7] == '1' and string.sub(holder, 1, #ARGV[9]) ~= ARGV[9] then
    ack()
    return {0}
  end
  return {3}
end
local cursor = redis.call('GET', KEYS[2]) or '0-0'
local entries = redis.call('XRANGE', KEYS[3], '(' .. cursor, '+', 'COUNT', ARGV[3])
if #entries == 0 then
  ack()
  return {1}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local run_id = entries[1][1]
if ARGV[4] == 'last' then run_id = entries[#entries][1] end
local attempt = redis.call('HINCRBY', KEYS[4], run_id, 1)
if ARGV[8] ~= '' and redis.call('HGET', KEYS[5], 'stamp') == ARGV[8] then
  return {2, entries, run_id, attempt}
end
-- Joined here: one string to parse instead of one reply element per message.
local log = redis.call('LRANGE', KEYS[6], 0, -1)
return {2, entries, run_id, attempt, redis.call('HGETALL', KEYS[5]), table.concat(log, ','),
  #log, redis.call('GET', KEYS[7])}
""",
)

MOVE_ATTEMPT: Final = LuaScript(
    """
-- KEYS: lease, attempts hash   ARGV: token, counted id, run id
-- -> the run id's attempt count, or nil if the lease is not ours.
-- BEGIN_TURN counted the attempt for another entry than the run the worker planned.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return false
end
if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
end
return redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
""",
)

LOAD_SESSION: Final = LuaScript(
    """
-- KEYS: session head, session log, session (old form)
-- -> {head [field, value...], the log's messages joined by ',', their number,
--     old-form session or false}, read at one instant.
local log = redis.call('LRANGE', KEYS[2], 0, -1)
return {redis.call('HGETALL', KEYS[1]), table.concat(log, ','), #log,
  redis.call('GET', KEYS[3])}
""",
)

SAVE_SESSION: Final = LuaScript(
    _WRITE_SESSION
    + """
-- KEYS: session head, session log, session (old form), sessions index
-- ARGV: session key, updated_at, number of head fields H, number of messages N,
--       H field/value pairs, N message json...
-- The whole session, replaced at once (a save outside a turn: no lease, no fence).
local h, n = tonumber(ARGV[3]), tonumber(ARGV[4])
write_session('rewrite', KEYS[1], KEYS[2], KEYS[3], 5, h, 5 + 2 * h, n)
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
return 1
""",
)

# -- the fenced session writer (core.bus.session_writer) -----------------------------

PUBLISH_EVENTS: Final = LuaScript(
    """
-- KEYS: lease, outbound stream [, delivery signal stream]
-- ARGV: token, maxlen, session key, channel, event json...   -> ids, or nil if not ours
-- The delivery signal is written with the events it announces.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return false
end
local ids = {}
for i = 5, #ARGV do
  ids[#ids + 1] = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'd', ARGV[i])
end
if #KEYS > 2 then
  redis.call('XADD', KEYS[3], '*', 's', ARGV[3], 'c', ARGV[4])
end
return ids
""",
)

COMMIT_TURN: Final = LuaScript(
    _WRITE_SESSION
    + """
-- KEYS: lease, cursor, inbound stream, attempts hash, session head, session log,
--       session (old form), sessions index, outbound stream, dead-letter stream
--       [, delivery signal stream if ARGV[8] ~= ''] [, ready stream if ARGV[16] ~= '']
-- ARGV: 1 token, 2 cursor, 3 first id to keep, 4 session write ('' none, 'append',
--       'rewrite'), 5 log length the append continues, 6 updated_at, 7 session key,
--       8 channel, 9 maxlen, 10 dead-letter ids ('' = none), 11 dead-letter reason,
--       12 dead-letter payload, 13 dead-letter maxlen, 14 entries to read after the
--       commit (0: do not look), 15 worker group, 16 signal id, 17 which pending
--       entry to count an attempt for ('' none, 'first', 'last'), 18 number of events
--       E, 19 number of head fields H, 20 number of messages N, 21 the stamp of the
--       session the append continues, then E event json, H field/value pairs, N
--       message json, then the committed entry ids.
-- -> nil if the lease is not ours; {0} if the log is not the one the append
--    continues; else {1, event ids, entries pending after the cursor, the entry id
--    whose attempt was counted or '', its count} (the lease is kept: the next turn's
--    start, as BEGIN_TURN) or {2, event ids} (nothing was pending: the lease released
--    and the signal acked). Nothing is written unless the reply starts with 1 or 2.
-- A turn's last events (its terminal event), the dead-letter record, the session and
-- the cursor are written together: a turn is either not answered and re-runs, or
-- answered once and never re-runs. The look for more work, the release and the ack
-- come with them, so no message can arrive between the look and the release unseen.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return false
end
local mode = ARGV[4]
if not log_continues(mode, KEYS[5], KEYS[6], ARGV[5], ARGV[21]) then
  return {0}
end
local e, h, n = tonumber(ARGV[18]), tonumber(ARGV[19]), tonumber(ARGV[20])
local v = 22  -- where the events, head fields, messages and entry ids start
local ids = {}
for i = v, v + e - 1 do
  ids[#ids + 1] = redis.call('XADD', KEYS[9], 'MAXLEN', '~', ARGV[9], '*', 'd', ARGV[i])
end
local k = 11
if ARGV[8] ~= '' then
  redis.call('XADD', KEYS[k], '*', 's', ARGV[7], 'c', ARGV[8])
  k = k + 1
end
if ARGV[10] ~= '' then
  redis.call('XADD', KEYS[10], 'MAXLEN', '~', ARGV[13], '*',
    's', ARGV[7], 'ids', ARGV[10], 'reason', ARGV[11], 'payload', ARGV[12])
end
-- The session write: the one place that stores a turn's history.
if mode ~= '' then
  write_session(mode, KEYS[5], KEYS[6], KEYS[7], v + e, h, v + e + 2 * h, n)
  redis.call('ZADD', KEYS[8], ARGV[6], ARGV[7])
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('XTRIM', KEYS[3], 'MINID', ARGV[3])
-- HDEL in slices: unpack() of thousands of values would overflow the Lua C stack.
local first = v + e + 2 * h + n
while first <= #ARGV do
  local last = math.min(first + 499, #ARGV)
  redis.call('HDEL', KEYS[4], unpack(ARGV, first, last))
  first = last + 1
end
if redis.call('XLEN', KEYS[3]) == 0 then
  redis.call('DEL', KEYS[4])
end
if tonumber(ARGV[14]) == 0 then
  return {1, ids, {}, '', 0}
end
local pending = redis.call('XRANGE', KEYS[3], '(' .. ARGV[2], '+', 'COUNT', ARGV[14])
if #pending > 0 then
  if ARGV[17] == '' then
    return {1, ids, pending, '', 0}
  end
  local run_id = pending[1][1]
  if ARGV[17] == 'last' then run_id = pending[#pending][1] end
  return {1, ids, pending, run_id, redis.call('HINCRBY', KEYS[4], run_id, 1)}
end
redis.call('DEL', KEYS[1])
if ARGV[16] ~= '' then
  redis.call('XACK', KEYS[k], ARGV[15], ARGV[16])
  redis.call('XDEL', KEYS[k], ARGV[16])
end
return {2, ids}
""",
)
