"""The deliverer's fenced writes and discarding a session (``channels.delivery_lease``,
the API's session delete)."""

from __future__ import annotations

from typing import Final

from ._lua import LuaScript

# -- the delivery lease's writes (channels.delivery_lease) ---------------------------

BEGIN_DELIVERY_RUN: Final = LuaScript(
    """
-- KEYS: delivery lease, sent-parts hash   ARGV: token, run id
-- Returns this run's records [field, id, ...] and forgets those of older runs:
-- a run starts only after the one before it committed, so those never re-run.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return false
end
local prefix = ARGV[2] .. ':'
local kept = {}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  if string.sub(all[i], 1, #prefix) == prefix then
    kept[#kept + 1] = all[i]
    kept[#kept + 1] = all[i + 1]
  else
    redis.call('HDEL', KEYS[2], all[i])
  end
end
return kept
""",
)

RECORD_SENT_PART: Final = LuaScript(
    """
-- KEYS: delivery lease, sent-parts hash   ARGV: token, field, platform id, ttl s
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
""",
)

ADVANCE_DELIVERY: Final = LuaScript(
    """
-- KEYS: delivery lease, delivery cursor   ARGV: token, entry id
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
""",
)

DISCARD_SESSION: Final = LuaScript(
    """
-- KEYS: cursor, inbound stream, outbound stream, session (old form), attempts hash,
--       api session, session lease, session head, session log
-- -> 1 deleted, 0 a message is still waiting for its turn or a worker holds the
--    session (nothing deleted): a holder (a turn, the compaction job) would write the
--    session back after the delete.
if redis.call('EXISTS', KEYS[7]) == 1 then
  return 0
end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #last > 0 then
  local cursor = redis.call('GET', KEYS[1]) or '0-0'
  local a_ms, a_seq = string.match(last[1][1], '(%d+)-(%d+)')
  local c_ms, c_seq = string.match(cursor, '(%d+)-(%d+)')
  a_ms, a_seq, c_ms, c_seq = tonumber(a_ms), tonumber(a_seq), tonumber(c_ms), tonumber(c_seq)
  if a_ms > c_ms or (a_ms == c_ms and a_seq > c_seq) then
    return 0
  end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[8], KEYS[9])
return 1
""",
)
