"""The bus's Lua scripts, run by SHA with a one-time load on ``NOSCRIPT``.

Each script declares every key it touches in ``KEYS`` and all of them share one
session's ``{hash tag}``, so the scripts also run on Redis Cluster. Fenced scripts
begin by comparing the lease value with the caller's token and return nil/0 when it
differs: the caller raises ``LeaseLostError``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Sequence
from typing import Final, cast

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

ScriptArg = str | int | float


class LuaScript:
    """One script; the SHA is computed once so a call is a single ``EVALSHA``."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()

    async def run(self, redis: Redis, keys: Sequence[str], args: Sequence[ScriptArg]) -> object:
        try:
            return await self._evalsha(redis, keys, args)
        except NoScriptError:
            # A restarted or different server has an empty script cache: load and retry once.
            await cast(Awaitable[str], redis.script_load(self.source))
            return await self._evalsha(redis, keys, args)

    async def _evalsha(
        self, redis: Redis, keys: Sequence[str], args: Sequence[ScriptArg]
    ) -> object:
        # redis-py annotates the arguments as str but encodes ints and floats as well.
        reply = redis.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[arg-type]
        return await cast(Awaitable[object], reply)


PUBLISH_INBOUND: Final = LuaScript(
    """
-- KEYS: inbound stream, ready stream [, seen marker]
-- ARGV: payload, maxlen, session key, channel [, dedupe ttl seconds]
-- The work signal is written in the same script: a message is never stored unsignalled.
if #KEYS > 2 then
  if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[5]) then
    return false
  end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'd', ARGV[1])
redis.call('XADD', KEYS[2], '*', 's', ARGV[3], 'c', ARGV[4])  -- codec.SESSION_FIELD, CHANNEL_FIELD
return id
""",
)

PENDING_INBOUND: Final = LuaScript(
    """
-- KEYS: cursor, inbound stream   ARGV: count   -> entries after the committed cursor
local cursor = redis.call('GET', KEYS[1]) or '0-0'
return redis.call('XRANGE', KEYS[2], '(' .. cursor, '+', 'COUNT', ARGV[1])
""",
)

ACQUIRE_LEASE: Final = LuaScript(
    """
-- KEYS: lease, fence   ARGV: ttl ms, owner, random   -> {fence, token} or nil when held
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local fence = redis.call('INCR', KEYS[2])
local token = fence .. ':' .. ARGV[2] .. ':' .. ARGV[3]
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return {fence, token}
""",
)

RENEW_LEASE: Final = LuaScript(
    """
-- KEYS: lease   ARGV: token, ttl ms   -> 1 renewed, 0 not ours
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
""",
)

RELEASE_LEASE: Final = LuaScript(
    """
-- KEYS: lease   ARGV: token   -> 1 released, 0 not ours
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
""",
)

PUBLISH_EVENTS: Final = LuaScript(
    """
-- KEYS: lease, outbound stream   ARGV: token, maxlen, event json...   -> ids or nil
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return false
end
local ids = {}
for i = 3, #ARGV do
  ids[#ids + 1] = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'd', ARGV[i])
end
return ids
""",
)

COMMIT_TURN: Final = LuaScript(
    """
-- KEYS: lease, cursor, inbound stream, attempts hash, session, sessions index
-- ARGV: token, cursor, first id to keep, session json ('' = keep), updated_at,
--       session key, committed entry ids...
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[5], ARGV[4])
  redis.call('ZADD', KEYS[6], ARGV[5], ARGV[6])
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('XTRIM', KEYS[3], 'MINID', ARGV[3])
-- HDEL in slices: unpack() of thousands of values would overflow the Lua C stack.
local first = 7
while first <= #ARGV do
  local last = math.min(first + 499, #ARGV)
  redis.call('HDEL', KEYS[4], unpack(ARGV, first, last))
  first = last + 1
end
if redis.call('XLEN', KEYS[3]) == 0 then
  redis.call('DEL', KEYS[4])
end
return 1
""",
)

DISCARD_SESSION: Final = LuaScript(
    """
-- KEYS: cursor, inbound stream, outbound stream, session, attempts hash, api session, fence
-- -> 1 deleted, 0 a message is still waiting for its turn (nothing deleted)
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
redis.call('DEL', unpack(KEYS))
return 1
""",
)

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
