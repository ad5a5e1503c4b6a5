"""One inbound platform connection per bot token across gateway replicas.

Telegram allows one ``getUpdates`` poller per token and Discord duplicates events
per gateway connection, so the replica that holds ``connection_lease_name`` runs
the connection and the others wait to take over. The lease is the bus's fenced lease
(``core.bus.lease``); this module is the one place that calls it, so a change of
that API is a change here only.
"""

from __future__ import annotations

import asyncio
import hashlib
from contextlib import AbstractAsyncContextManager

from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.lease import Lease


def token_digest(token: str | None, channel: str) -> str:
    """Identifies the bot without revealing its token (a channel with no token: its name)."""
    material = token if token else f"channel:{channel}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:16]


class ConnectionLease:
    """Acquire, hold and release the connection of one bot token."""

    def __init__(
        self, redis: Redis, channel: str, token: str | None, *, ttl_ms: int, owner: str
    ) -> None:
        self.redis = redis
        self.name = keys.connection_lease_name(channel, token_digest(token, channel))
        self.ttl_ms = ttl_ms
        self.owner = owner
        self._lease: Lease | None = None

    @property
    def held(self) -> bool:
        return self._lease is not None

    async def try_acquire(self) -> bool:
        """Take the connection if nobody holds it; True when it is ours now."""
        lease = await Lease.acquire(
            self.redis,
            self.name,
            ttl_ms=self.ttl_ms,
            owner=self.owner,
            what=f"inbound connection {self.name!r}",
        )
        self._lease = lease
        return lease is not None

    def keepalive(self) -> AbstractAsyncContextManager[asyncio.Event]:
        """Renew while the block runs (three times per ttl); the event is set if lost."""
        if self._lease is None:
            raise RuntimeError("keepalive of a connection lease that is not held")
        return self._lease.keepalive(self.ttl_ms / 3000)

    async def release(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            await lease.release()
