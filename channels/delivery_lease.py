"""The delivery lease ``gw:dlease:{s}`` and the delivery writes it fences.

One ``DeliveryLease`` is one grant of the chat's delivery lease: the bus's one lease
primitive (``core.bus.lease.Lease``) on ``gw:dlease:{s}``. While it is held, the
deliverer records each platform message it sends (``sent[{run_id}:{part}]``) and
advances the delivery cursor; the Lua scripts (``core.bus.scripts``) make each of
those writes conditional on the lease still carrying this grant's token, so a
holder that lost the lease cannot overwrite its successor's records. Lease, records
and cursor share the session's hash tag (Redis Cluster safe).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.codec import pairs_to_dict
from gateway.core.bus.lease import Lease
from gateway.core.bus.scripts import ADVANCE_DELIVERY, BEGIN_DELIVERY_RUN, RECORD_SENT_PART
from gateway.core.errors import LeaseLostError

SENT_RECORDS_TTL_S = 7 * 86_400


class DeliveryLease:
    """One grant of ``gw:dlease:{s}``, and the writes fenced by it."""

    __slots__ = ("lease", "lost", "session_key")

    def __init__(self, lease: Lease, session_key: str) -> None:
        self.lease = lease
        self.session_key = session_key
        self.lost = asyncio.Event()

    @property
    def redis(self) -> Redis:
        return self.lease.redis

    @property
    def token(self) -> str:
        return self.lease.token

    @property
    def ttl_ms(self) -> int:
        return self.lease.ttl_ms

    @classmethod
    async def acquire(
        cls, redis: Redis, session_key: str, *, ttl_ms: int, owner: str
    ) -> DeliveryLease | None:
        what = f"delivery lease of {session_key!r}"
        key = keys.deliver_lease(session_key)
        lease = await Lease.acquire(redis, key, ttl_ms=ttl_ms, owner=owner, what=what)
        return None if lease is None else cls(lease, session_key)

    async def release(self) -> None:
        await self.lease.release()

    @asynccontextmanager
    async def kept_alive(self) -> AsyncIterator[None]:
        """Renew at a third of the ttl while the block runs; ``lost`` is set on failure."""
        async with self.lease.keepalive(self.ttl_ms / 3000, lost=self.lost):
            yield

    async def begin_run(self, run_id: str) -> dict[int, str]:
        """The messages already sent for ``run_id``: part -> platform message id."""
        s = self.session_key
        reply = await BEGIN_DELIVERY_RUN.run(
            self.redis, [self.lease.key, keys.sent_parts(s)], [self.token, run_id]
        )
        if reply is None:
            raise self.lost_error("begin run")
        records = pairs_to_dict(cast(list[str], reply))
        return {int(f.rpartition(":")[2]): mid for f, mid in records.items()}

    async def record_part(self, run_id: str, part: int, message_id: str) -> None:
        s = self.session_key
        recorded = await RECORD_SENT_PART.run(
            self.redis,
            [self.lease.key, keys.sent_parts(s)],
            [self.token, f"{run_id}:{part}", message_id, SENT_RECORDS_TTL_S],
        )
        if recorded != 1:
            raise self.lost_error(f"record part {part} of run {run_id}")

    async def advance(self, entry_id: str) -> None:
        s = self.session_key
        moved = await ADVANCE_DELIVERY.run(
            self.redis, [self.lease.key, keys.deliver_cursor(s)], [self.token, entry_id]
        )
        if moved != 1:
            raise self.lost_error(f"advance cursor to {entry_id}")

    def check(self) -> None:
        if self.lost.is_set():
            raise self.lost_error("send")

    def lost_error(self, action: str) -> LeaseLostError:
        return self.lease.lost_error(action)
