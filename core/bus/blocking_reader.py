"""A dedicated connection for one loop's blocking reads, which a stop wakes instead of
cancelling the command in flight.

Cancelling an ``XREADGROUP`` whose reply Redis has already sent loses that reply, yet
Redis counts its entries as delivered to the consumer: they stay pending until a peer
claims them (``claim_idle_ms``, a minute by default), so a message that arrived as a
worker stopped gracefully waited that long. ``CLIENT UNBLOCK`` instead ends the block
as a timeout would, and whatever the read returns is still handled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis

T = TypeVar("T")


class BlockingReader:
    """Runs one blocking read at a time on its own connection; ``wake`` ends it early."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._conn: Redis = redis.client()
        """A single-connection client from the same pool: its ``CLIENT ID`` is known."""
        self._id: int | None = None
        self.reading = False
        """True while a read runs (from before its id is known until its reply is read)."""

    async def read(self, call: Callable[[Redis], Awaitable[T]]) -> T:
        """``call(connection)``, on the dedicated connection."""
        self.reading = True
        try:
            if self._id is None:
                self._id = int(await self._conn.client_id())
            return await call(self._conn)
        except BaseException:
            self._id = None  # a reconnect gives the connection a new id: ask again
            raise
        finally:
            self.reading = False

    async def wake(self) -> bool:
        """End the read blocked now, as if its block timed out; False if none was blocked
        (not started yet, already answered, or its connection's id is not known)."""
        if not self.reading or self._id is None:
            return False
        return bool(await self._redis.client_unblock(self._id))

    async def aclose(self) -> None:
        await self._conn.aclose()
