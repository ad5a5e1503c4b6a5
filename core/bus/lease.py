"""One exclusive, fenced lease primitive, generic over its key.

Used for a worker's hold on a session (``gw:lease:{s}``, see
``core.bus.session_writer``) and a deliverer's hold on a chat (``gw:dlease:{s}``,
see ``channels.delivery_lease``). A grant is ``SET key token NX PX ttl`` with a
token unique to the grant (``"{owner}:{random}"``); renewal and release compare the
token in Lua. Writes that must happen only while the lease is held run in Lua
scripts (``core.bus.scripts``) that first compare the lease value with the token:
a holder whose lease expired and was taken by another gets ``LeaseLostError`` and
changes nothing.

That comparison is the whole fence. Redis runs a script atomically, so "the lease
holds my token" is checked in the same step as the write; a unique token therefore
fences as well as a monotonic counter would. (An earlier ``gw:fence:{s}`` counter
was only embedded in the token, never compared, and never expired: it is gone.)
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.core.bus.scripts import RELEASE_LEASE, RENEW_LEASE
from gateway.core.errors import LeaseLostError

log = logging.getLogger(__name__)


@asynccontextmanager
async def renewing(
    renew: Callable[[], Awaitable[bool]],
    *,
    ttl_ms: int,
    interval_s: float,
    lost: asyncio.Event,
    what: str,
) -> AsyncIterator[asyncio.Event]:
    """Call ``renew`` every ``interval_s`` while the block runs; set ``lost`` on failure.

    A renewal that finds the lease gone sets ``lost`` and stops. Redis errors are
    retried until a whole ttl passed without a successful renewal; no renewal waits
    past that point, so ``lost`` is set within the ttl even when Redis stops
    answering. Renewal stops the moment the block exits. Shared by worker leases and
    delivery leases.
    """
    renewer = asyncio.create_task(
        _renew_until_lost(renew, ttl_ms, interval_s, lost, what), name=f"keepalive {what}"
    )
    try:
        yield lost
    finally:
        renewer.cancel()
        # wait() neither raises the renewer's CancelledError nor hides our own.
        await asyncio.wait([renewer])
        if not renewer.cancelled() and renewer.exception() is not None:
            log.error("keepalive of %s crashed", what, exc_info=renewer.exception())


async def _renew_until_lost(
    renew: Callable[[], Awaitable[bool]],
    ttl_ms: int,
    interval_s: float,
    lost: asyncio.Event,
    what: str,
) -> None:
    loop = asyncio.get_running_loop()
    valid_until = loop.time() + ttl_ms / 1000
    while True:
        await asyncio.sleep(interval_s)
        try:
            renewed, sent_at = await _renew_within(renew, valid_until, interval_s)
        except (RedisError, OSError, TimeoutError) as exc:
            if loop.time() < valid_until:
                log.warning("renewal of %s failed, retrying: %r", what, exc)
                continue
            log.error("%s expired while Redis was failing: %r", what, exc)
            lost.set()
            return
        if not renewed:
            log.warning("%s was lost", what)
            lost.set()
            return
        valid_until = sent_at + ttl_ms / 1000


STALL_TOLERANCE_S = 0.05
"""A renewal timeout that fires this late says our own event loop stalled, not Redis."""


async def _renew_within(
    renew: Callable[[], Awaitable[bool]], valid_until: float, retry_s: float
) -> tuple[bool, float]:
    """``renew()`` bounded by what is left of the lease; (renewed, when it was sent).

    Without the bound, a renewal on a half-open connection would wait for its reply
    past the expiry and the holder would never learn that it lost the lease. A
    timeout that fired well after ``valid_until`` means this event loop itself was
    stalled (a reply may be sitting unread): one prompt retry, bounded by
    ``retry_s``, lets Redis say whether the lease is still ours.
    """
    loop = asyncio.get_running_loop()
    sent_at = loop.time()
    try:
        async with asyncio.timeout_at(valid_until):
            return await renew(), sent_at
    except TimeoutError:
        if loop.time() - valid_until < STALL_TOLERANCE_S:
            raise
    sent_at = loop.time()
    async with asyncio.timeout(retry_s):
        return await renew(), sent_at


class Lease:
    """One grant of an exclusive lease key; obtain it with ``Lease.acquire``."""

    __slots__ = ("key", "redis", "token", "ttl_ms", "what")

    def __init__(self, redis: Redis, key: str, *, token: str, ttl_ms: int, what: str = "") -> None:
        self.redis = redis
        self.key = key
        self.token = token
        self.ttl_ms = ttl_ms
        self.what = what or f"lease {key!r}"
        """How logs and errors name it, e.g. ``lease of 'telegram:42'``."""

    def __repr__(self) -> str:
        return f"Lease(key={self.key!r})"

    @classmethod
    async def acquire(
        cls, redis: Redis, key: str, *, ttl_ms: int, owner: str, what: str = ""
    ) -> Lease | None:
        """The lease, or None while another holder has it."""
        token = f"{owner}:{secrets.token_hex(8)}"
        if not await redis.set(key, token, nx=True, px=ttl_ms):
            return None
        return cls(redis, key, token=token, ttl_ms=ttl_ms, what=what)

    async def renew(self) -> bool:
        """Extend the lease by its ttl; False when it is no longer ours."""
        return await RENEW_LEASE.run(self.redis, [self.key], [self.token, self.ttl_ms]) == 1

    async def release(self) -> bool:
        """Delete the lease if it is still ours; False when it had already gone."""
        return await RELEASE_LEASE.run(self.redis, [self.key], [self.token]) == 1

    def keepalive(
        self, interval_s: float, *, lost: asyncio.Event | None = None
    ) -> AbstractAsyncContextManager[asyncio.Event]:
        """Renew every ``interval_s`` while the block runs; the yielded event (``lost``
        when given) is set if the lease is lost.

        Renewal stops the moment the block exits. A failed renewal (the lease is
        gone or has another holder) sets the event and ends the renewals; Redis
        errors are retried until a whole ttl passed without a successful renewal.
        """
        if interval_s <= 0 or interval_s * 1000 >= self.ttl_ms:
            raise ValueError(
                f"keepalive interval {interval_s}s must be in (0, ttl {self.ttl_ms}ms)"
            )
        return renewing(
            self.renew,
            ttl_ms=self.ttl_ms,
            interval_s=interval_s,
            lost=lost if lost is not None else asyncio.Event(),
            what=self.what,
        )

    def lost_error(self, action: str) -> LeaseLostError:
        return LeaseLostError(f"cannot {action}: {self.what} is no longer held")
