"""Telegram albums (``channels.telegram.albums``); the server's clock throughout."""

from __future__ import annotations

from typing import Final

from ._lua import LuaScript

# -- Telegram albums (channels.telegram.albums) ----------------------------------------
# The server's clock throughout, so every replica agrees when an album is due.

STASH_ALBUM_PART: Final = LuaScript(
    """
-- KEYS: parts hash, batch hash, done set, due zset
-- ARGV: album, update id, update JSON, window ms, ttl s
-- -> 1 stored, 0 a redelivery of a part already claimed or published (nothing written)
if redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 1
    or redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
-- GT: a part never pulls the due time earlier (a flusher's claim keeps its expiry).
redis.call('ZADD', KEYS[4], 'GT', now + tonumber(ARGV[4]), ARGV[1])
-- The due set lives as long as the newest part could: an album nobody flushes (its
-- channel gone from the config) leaves no member behind for good.
redis.call('EXPIRE', KEYS[4], ARGV[5])
return 1
""",
)

DUE_ALBUMS: Final = LuaScript(
    """
-- KEYS: due zset   ARGV: most albums
-- -> {albums due now, ms until the next one is due (-1: none)}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[1])
local later = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local wait = -1
if later[2] then
  wait = tonumber(later[2]) - now
end
return {due, wait}
""",
)

CLAIM_ALBUM: Final = LuaScript(
    """
-- KEYS: parts hash, batch hash, due zset   ARGV: album, claim ms
-- -> the batch as {update id, update JSON, ...}, or false when the album is not due
-- (another flusher claimed it, or it was finished).
-- The parts become the batch (RENAME) unless a batch is left from a flush that did not
-- finish: then that same batch again, so its publish repeats with the same event id.
-- The due time moves past the claim: a flusher that dies is replaced after claim ms.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not score or tonumber(score) > now then
  return false
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('ZREM', KEYS[3], ARGV[1])  -- its parts expired: nothing left to publish
    return false
  end
  redis.call('RENAME', KEYS[1], KEYS[2])
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
return redis.call('HGETALL', KEYS[2])
""",
)

FINISH_ALBUM: Final = LuaScript(
    """
-- KEYS: parts hash, batch hash, done set, due zset
-- ARGV: album, window ms, done ttl s, update id...
-- The published parts leave the batch and are remembered as done (a redelivery is
-- dropped). Parts that came in meanwhile keep the album due, one window from now.
-- A batch left after the HDEL is not ours (a batch is frozen, and ours is now empty):
-- a flusher that outlived its claim finishes after another one claimed the next
-- batch, and that claim's due time stays (else a third flusher would claim it too).
local ids = {}
for i = 4, #ARGV do
  ids[#ids + 1] = ARGV[i]
end
redis.call('HDEL', KEYS[2], unpack(ids))
redis.call('SADD', KEYS[3], unpack(ids))
redis.call('EXPIRE', KEYS[3], ARGV[3])
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 1
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('EXPIRE', KEYS[4], ARGV[3])
else
  redis.call('ZREM', KEYS[4], ARGV[1])
end
return 1
""",
)
