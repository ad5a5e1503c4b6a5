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
from typing import TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

T = TypeVar("T")


class BlockingReader:
    """Runs one blocking read at a time on its own connection; ``wake`` ends it early."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._conn: Redis = redis.client()
        """A single-connection client from the same pool: its ``CLIENT ID`` is known."""
        self._id: int | None = None
        self._following = False
        self.reading = False
        """True while a read runs (from before its id is known until its reply is read)."""

    async def read(self, call: Callable[[Redis], Awaitable[T]]) -> T:
        """``call(connection)``, on the dedicated connection."""
        self.reading = True
        try:
            if self._id is None:
                await self._follow_reconnects()
                self._id = int(await self._conn.client_id())
            return await call(self._conn)
        except BaseException:
            self._id = None  # a reconnect gives the connection a new id: ask again
            raise
        finally:
            self.reading = False

    async def _follow_reconnects(self) -> None:
        """Learn the id of every new connection: with ``redis.retries`` the client
        re-makes a dropped connection and re-sends the read inside the command, and an
        unblock of the old id would wake nobody (or, after a Redis restart, a stranger)."""
        await self._conn.initialize()
        conn = self._conn.connection
        if conn is not None and not self._following:
            conn.register_connect_callback(self._on_connect)  # type: ignore[no-untyped-call]
            self._following = True

    async def _on_connect(self, conn: AbstractConnection) -> None:
        await conn.send_command("CLIENT", "ID", check_health=False)
        self._id = int(cast(int, await conn.read_response()))

    async def wake(self) -> bool:
        """End the read blocked now, as if its block timed out; False if none was blocked
        (not started yet, already answered, or its connection's id is not known)."""
        if not self.reading or self._id is None:
            return False
        return bool(await self._redis.client_unblock(self._id))

    async def aclose(self) -> None:
        conn = self._conn.connection
        if conn is not None and self._following:  # it goes back to the pool: not ours
            conn.deregister_connect_callback(self._on_connect)  # type: ignore[no-untyped-call]
            self._following = False
        await self._conn.aclose()
