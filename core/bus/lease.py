"""A worker's exclusive, fenced hold on one session.

Each grant increments ``gw:fence:{s}`` and the token embeds it
(``"{fence}:{owner}:{random}"``), so every grant's token is unique. Writes that
must happen once (outbound events, the turn commit) run in Lua scripts that first
compare the lease value with the token: a holder whose lease expired and was taken
by another worker gets ``LeaseLostError`` and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.bus import keys
from core.bus.codec import encode, next_stream_id
from core.bus.scripts import (
    ACQUIRE_LEASE,
    COMMIT_TURN,
    PUBLISH_EVENTS,
    RELEASE_LEASE,
    RENEW_LEASE,
    ScriptArg,
)
from core.errors import LeaseLostError
from core.events import StreamEvent
from core.sessions.base import Session

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
    """One grant of ``gw:lease:{session_key}``; obtain it with ``Lease.acquire``."""

    __slots__ = ("fence", "redis", "session_key", "token", "ttl_ms")

    def __init__(self, redis: Redis, session_key: str, *, token: str, fence: int, ttl_ms: int):
        self.redis = redis
        self.session_key = session_key
        self.token = token
        self.fence = fence
        self.ttl_ms = ttl_ms

    def __repr__(self) -> str:
        return f"Lease(session_key={self.session_key!r}, fence={self.fence})"

    @classmethod
    async def acquire(
        cls, redis: Redis, session_key: str, *, ttl_ms: int, owner: str
    ) -> Lease | None:
        """The lease, or None while another holder has it."""
        granted = await ACQUIRE_LEASE.run(
            redis,
            [keys.lease(session_key), keys.fence(session_key)],
            [ttl_ms, owner, secrets.token_hex(8)],
        )
        if granted is None:
            return None
        fence, token = cast(list[object], granted)
        return cls(redis, session_key, token=str(token), fence=int(cast(int, fence)), ttl_ms=ttl_ms)

    async def renew(self) -> bool:
        """Extend the lease by its ttl; False when it is no longer ours."""
        renewed = await RENEW_LEASE.run(
            self.redis, [keys.lease(self.session_key)], [self.token, self.ttl_ms]
        )
        return renewed == 1

    async def release(self) -> bool:
        """Delete the lease if it is still ours; False when it had already gone."""
        released = await RELEASE_LEASE.run(self.redis, [keys.lease(self.session_key)], [self.token])
        return released == 1

    def keepalive(self, interval_s: float) -> AbstractAsyncContextManager[asyncio.Event]:
        """Renew every ``interval_s`` while the block runs; the yielded event is set if lost.

        Renewal stops the moment the block exits. A failed renewal (the lease is
        gone or has another holder) sets the event and ends the renewals; Redis
        errors are retried until a whole ttl passed without a successful renewal.
        """
        if interval_s <= 0 or interval_s * 1000 >= self.ttl_ms:
            raise ValueError(
                f"keepalive interval {interval_s}s must be in (0, ttl {self.ttl_ms}ms)"
            )
        what = f"lease of {self.session_key!r} (fence {self.fence})"
        return renewing(
            self.renew, ttl_ms=self.ttl_ms, interval_s=interval_s, lost=asyncio.Event(), what=what
        )

    async def publish_events(self, events: Sequence[StreamEvent], *, maxlen: int) -> list[str]:
        """XADD the events to ``gw:out:{s}`` in order, only while we hold the lease."""
        if not events:
            return []
        args: list[ScriptArg] = [self.token, maxlen]
        args.extend(encode(event) for event in events)
        ids = await PUBLISH_EVENTS.run(
            self.redis, [keys.lease(self.session_key), keys.outbound(self.session_key)], args
        )
        if ids is None:
            raise self._lost("publish events")
        return cast(list[str], ids)

    async def commit(
        self, *, session: Session | None, cursor: str, entry_ids: Sequence[str] = ()
    ) -> None:
        """Atomically store the session (if given, with its sessions-index score) and the
        cursor, trim inbound entries up to and including ``cursor``, and forget the
        attempt counts of ``entry_ids``. One round trip; the index is outside the
        session's hash slot (no Redis Cluster, see README).
        """
        s = self.session_key
        session_json = session.model_dump_json() if session is not None else ""
        updated_at = session.updated_at if session is not None else 0.0
        committed = await COMMIT_TURN.run(
            self.redis,
            [
                keys.lease(s),
                keys.cursor(s),
                keys.inbound(s),
                keys.attempts(s),
                keys.session(s),
                keys.SESSIONS_INDEX,
            ],
            [self.token, cursor, next_stream_id(cursor), session_json, updated_at, s, *entry_ids],
        )
        if committed != 1:
            raise self._lost(f"commit cursor {cursor}")

    def _lost(self, action: str) -> LeaseLostError:
        return LeaseLostError(
            f"cannot {action}: lease of {self.session_key!r} (fence {self.fence}) is no longer held"
        )
