"""The delivery lease ``gw:dlease:{s}`` and the delivery writes it fences.

One ``DeliveryLease`` is one grant of the chat's lease. While it is held, the
deliverer records each platform message it sends (``sent[{run_id}:{part}]``) and
advances the delivery cursor; the Lua scripts below make each of those writes
conditional on the lease still carrying this grant's token, so a holder that lost
the lease cannot overwrite its successor's records. Lease, records and cursor share
the session's hash tag (Redis Cluster safe).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

from redis.asyncio import Redis

from core.bus import keys
from core.bus.codec import pairs_to_dict
from core.bus.lease import renewing
from core.bus.scripts import RELEASE_LEASE, RENEW_LEASE, LuaScript
from core.errors import LeaseLostError

log = logging.getLogger(__name__)

SENT_RECORDS_TTL_S = 7 * 86_400

_BEGIN_RUN = LuaScript(
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

_RECORD_PART = LuaScript(
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

_ADVANCE = LuaScript(
    """
-- KEYS: delivery lease, delivery cursor   ARGV: token, entry id
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
""",
)


class DeliveryLease:
    """One grant of ``gw:dlease:{s}``, and the writes fenced by it."""

    __slots__ = ("lost", "redis", "session_key", "token", "ttl_ms")

    def __init__(self, redis: Redis, session_key: str, token: str, ttl_ms: int) -> None:
        self.redis = redis
        self.session_key = session_key
        self.token = token
        self.ttl_ms = ttl_ms
        self.lost = asyncio.Event()

    @classmethod
    async def acquire(
        cls, redis: Redis, session_key: str, *, ttl_ms: int, owner: str
    ) -> DeliveryLease | None:
        token = f"{owner}:{secrets.token_hex(8)}"
        granted = await redis.set(keys.deliver_lease(session_key), token, nx=True, px=ttl_ms)
        return cls(redis, session_key, token, ttl_ms) if granted else None

    async def release(self) -> None:
        await RELEASE_LEASE.run(self.redis, [keys.deliver_lease(self.session_key)], [self.token])

    @asynccontextmanager
    async def kept_alive(self) -> AsyncIterator[None]:
        """Renew at a third of the ttl while the block runs; ``lost`` is set on failure."""
        what = f"delivery lease of {self.session_key!r}"
        interval_s = self.ttl_ms / 3000
        async with renewing(
            self._renew, ttl_ms=self.ttl_ms, interval_s=interval_s, lost=self.lost, what=what
        ):
            yield

    async def _renew(self) -> bool:
        key = [keys.deliver_lease(self.session_key)]
        return await RENEW_LEASE.run(self.redis, key, [self.token, self.ttl_ms]) == 1

    async def begin_run(self, run_id: str) -> dict[int, str]:
        """The messages already sent for ``run_id``: part -> platform message id."""
        s = self.session_key
        reply = await _BEGIN_RUN.run(
            self.redis, [keys.deliver_lease(s), keys.sent_parts(s)], [self.token, run_id]
        )
        if reply is None:
            raise self.lost_error("begin run")
        records = pairs_to_dict(cast(list[str], reply))
        return {int(f.rpartition(":")[2]): mid for f, mid in records.items()}

    async def record_part(self, run_id: str, part: int, message_id: str) -> None:
        s = self.session_key
        recorded = await _RECORD_PART.run(
            self.redis,
            [keys.deliver_lease(s), keys.sent_parts(s)],
            [self.token, f"{run_id}:{part}", message_id, SENT_RECORDS_TTL_S],
        )
        if recorded != 1:
            raise self.lost_error(f"record part {part} of run {run_id}")

    async def advance(self, entry_id: str) -> None:
        s = self.session_key
        moved = await _ADVANCE.run(
            self.redis, [keys.deliver_lease(s), keys.deliver_cursor(s)], [self.token, entry_id]
        )
        if moved != 1:
            raise self.lost_error(f"advance cursor to {entry_id}")

    def check(self) -> None:
        if self.lost.is_set():
            raise self.lost_error("send")

    def lost_error(self, action: str) -> LeaseLostError:
        return LeaseLostError(f"cannot {action}: delivery lease of {self.session_key!r} lost")
