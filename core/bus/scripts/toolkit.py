"""The channel toolkit's scripts: token buckets, pairing codes, shared rate limits."""

from __future__ import annotations

from typing import Final

from ._lua import LuaScript

TOKEN_BUCKET: Final = LuaScript(
    """
-- KEYS: bucket   ARGV: capacity, refill per ms
-- -> {1, 0} allowed, or {0, ms until a token is back}
-- The server's clock, so every replica meters one bucket the same way.
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local capacity, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]) or capacity, tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local allowed, wait = 0, 0
if tokens >= 1 then
  tokens, allowed = tokens - 1, 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate) + 1000)
return {allowed, wait}
""",
)


# -- channel toolkit: pairing codes (channels.toolkit.pairing) -------------------------

ISSUE_PAIRING_CODE: Final = LuaScript(
    """
-- KEYS: codes hash, expiry zset, senders hash
-- ARGV: candidate code, sender id, payload JSON, ttl seconds, most open codes
-- Prune, reuse, cap and store in one script: concurrent senders cannot exceed the cap.
-- Returns {code, 1} for a new code, {code, 0} for the sender's open one, {'', 2} when
-- the candidate collides, false when the channel already has the most open codes.
local now = tonumber(redis.call('TIME')[1])
for _, code in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  local payload = redis.call('HGET', KEYS[1], code)
  if payload then
    local sender = cjson.decode(payload)['sender_id']
    if redis.call('HGET', KEYS[3], sender) == code then redis.call('HDEL', KEYS[3], sender) end
    redis.call('HDEL', KEYS[1], code)
  end
  redis.call('ZREM', KEYS[2], code)
end
local open = redis.call('HGET', KEYS[3], ARGV[2])
if open then return {open, 0} end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return false end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {'', 2} end
local ttl = tonumber(ARGV[4])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ttl + 1) end
return {ARGV[1], 1}
""",
)

APPROVE_PAIRING_CODE: Final = LuaScript(
    """
-- KEYS: codes hash, expiry zset, senders hash, approved set
-- ARGV: code
-- Returns the code's payload JSON (the sender is now approved), or false when the
-- code is unknown or expired.
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) <= tonumber(redis.call('TIME')[1]) then return false end
local payload = redis.call('HGET', KEYS[1], ARGV[1])
if not payload then return false end
local sender = cjson.decode(payload)['sender_id']
redis.call('SADD', KEYS[4], sender)
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HGET', KEYS[3], sender) == ARGV[1] then redis.call('HDEL', KEYS[3], sender) end
return payload
""",
)


# -- channel toolkit: shared rate limits (channels.toolkit.ratelimit) ------------------

RATE_LIMIT: Final = LuaScript(
    """
-- Shared token buckets of a channel's deliverers (channels.toolkit.ratelimit).
-- KEYS: bucket...
-- ARGV 'take', then capacity and refill per ms for each key
--   -> 0 when one token was taken from every bucket, else ms until all could give one
--      (nothing is taken then: all or none)
-- ARGV 'pause', ms: no bucket gives a token for ms (a platform's 429 retry-after) -> 0
-- The server's clock, so every replica meters one bucket the same way.
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
if ARGV[1] == 'pause' then
  local till = now + tonumber(ARGV[2])
  for i = 1, #KEYS do
    local paused = tonumber(redis.call('HGET', KEYS[i], 'paused')) or 0
    if paused < till then
      redis.call('HSET', KEYS[i], 'paused', till)
    end
    if redis.call('PTTL', KEYS[i]) < till - now + 1000 then
      redis.call('PEXPIRE', KEYS[i], till - now + 1000)
    end
  end
  return 0
end
local wait, tokens = 0, {}
for i = 1, #KEYS do
  local capacity, rate = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local state = redis.call('HMGET', KEYS[i], 'tokens', 'at', 'paused')
  local have, at = tonumber(state[1]) or capacity, tonumber(state[2]) or now
  have = math.min(capacity, have + math.max(0, now - at) * rate)
  tokens[i] = have
  local paused = tonumber(state[3]) or 0
  if paused > now then
    wait = math.max(wait, paused - now)
  end
  if have < 1 then
    wait = math.max(wait, math.ceil((1 - have) / rate))
  end
end
for i = 1, #KEYS do
  local capacity, rate = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local have = tokens[i]
  if wait == 0 then
    have = have - 1
  end
  redis.call('HSET', KEYS[i], 'tokens', tostring(have), 'at', now)
  local ttl = math.ceil(capacity / rate) + 1000
  if redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return wait
""",
)
