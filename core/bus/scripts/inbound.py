"""Accepting messages: the inbound publish and the pending read (``core.bus.inbound``)."""

from __future__ import annotations

from typing import Final

from ._lua import LuaScript

PUBLISH_INBOUND: Final = LuaScript(
    """
-- KEYS: inbound stream, ready stream, outbound stream [, marker hash]
-- ARGV: payload, maxlen, session key, channel, message id [, marker ttl seconds]
-- -> {1 published / 0 duplicate, inbound entry id, outbound tail id, message id,
--     session key}
-- The marker (a platform event's dedupe key, or an HTTP Idempotency-Key) is claimed
-- here, with the message and its work signal: all of it is written, or none of it.
-- A duplicate gets what the first publish stored, so every retry of one request
-- answers the same ids. The outbound tail is read here too: the message's reply
-- can only come after it.
if #KEYS > 3 and redis.call('EXISTS', KEYS[4]) == 1 then
  if redis.call('TYPE', KEYS[4]).ok ~= 'hash' then
    return {0, '', '', '', ''}  -- a marker written before markers were hashes
  end
  local stored = redis.call('HMGET', KEYS[4], 'e', 'a', 'm', 's')
  return {0, stored[1], stored[2], stored[3], stored[4]}
end
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
local tail = '0-0'
if last[1] then
  tail = last[1][1]
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'd', ARGV[1])
redis.call('XADD', KEYS[2], '*', 's', ARGV[3], 'c', ARGV[4])  -- codec.SESSION_FIELD, CHANNEL_FIELD
if #KEYS > 3 then
  redis.call('HSET', KEYS[4], 'e', id, 'a', tail, 'm', ARGV[5], 's', ARGV[3])
  redis.call('EXPIRE', KEYS[4], ARGV[6])
end
return {1, id, tail, ARGV[5], ARGV[3]}
""",
)

PENDING_INBOUND: Final = LuaScript(
    """
-- KEYS: cursor, inbound stream   ARGV: count   -> entries after the committed cursor
local cursor = redis.call('GET', KEYS[1]) or '0-0'
return redis.call('XRANGE', KEYS[2], '(' .. cursor, '+', 'COUNT', ARGV[1])
""",
)
