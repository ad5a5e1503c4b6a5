"""The bus's Lua scripts, run by SHA with a one-time load on ``NOSCRIPT``.

Each script declares every key it touches in ``KEYS`` and all of them share one
session's ``{hash tag}``, so the scripts also run on Redis Cluster. Fenced scripts
begin by comparing the lease value with the caller's token and return nil/0 when it
differs: the caller raises ``LeaseLostError``. (The ready, delivery-signal,
dead-letter streams and the sessions index are outside that slot: see README on
Redis Cluster.)
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
-- the log the caller read (expected length).
local function log_continues(mode, log, expected)
  return mode ~= 'append' or redis.call('LLEN', log) == tonumber(expected)
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
--       the stamp of the session the worker has cached ('' = none)
-- -> {0} the lease is held by another (the signal acked when asked);
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
if redis.call('EXISTS', KEYS[1]) == 1 then
  if ARGV[7] == '1' then ack() end
  return {0}
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

# -- leases: acquired with SET NX PX (one command, no script); renewed and released
# only by the holder of the token. Every fenced script below starts with the same
# token comparison, which is the whole fence: a token is unique per grant.

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
--       E, 19 number of head fields H, 20 number of messages N, then E event json, H
--       field/value pairs, N message json, then the committed entry ids.
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
if not log_continues(mode, KEYS[6], ARGV[5]) then
  return {0}
end
local e, h, n = tonumber(ARGV[18]), tonumber(ARGV[19]), tonumber(ARGV[20])
local ids = {}
for i = 21, 20 + e do
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
  write_session(mode, KEYS[5], KEYS[6], KEYS[7], 21 + e, h, 21 + e + 2 * h, n)
  redis.call('ZADD', KEYS[8], ARGV[6], ARGV[7])
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('XTRIM', KEYS[3], 'MINID', ARGV[3])
-- HDEL in slices: unpack() of thousands of values would overflow the Lua C stack.
local first = 21 + e + 2 * h + n
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
local ids = {}
for i = 4, #ARGV do
  ids[#ids + 1] = ARGV[i]
end
redis.call('HDEL', KEYS[2], unpack(ids))
redis.call('SADD', KEYS[3], unpack(ids))
redis.call('EXPIRE', KEYS[3], ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]), ARGV[1])
else
  redis.call('ZREM', KEYS[4], ARGV[1])
end
return 1
""",
)
