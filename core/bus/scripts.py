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
