"""A session cut off by a Redis outage is drained again as soon as Redis answers.

Without this, a turn that failed because Redis went away left its lease behind (the
release failed too, and with AOF the lease outlives a restart), so the chat's next
message found the session "held", its signal was acked for a holder that was no longer
draining, and the chat waited for ``claim_idle_ms`` until the failed turn's signal was
claimed as stale. Nothing was lost; every chat whose turn the outage cut waited a minute.

Now the worker remembers the grants it could not release, waits for Redis to answer
(backing off), lets those grants go and drains the session again itself: the re-run is
what a claim of the stale signal would have started, with the same ``run_id``.

Only a lost connection is an outage (``OUTAGE_ERRORS``): a Redis that answers with an
error (a script error, OOM, READONLY, a wrong type) answers a PING too, so retrying it
would spin; such a drain is left pending for ``claim_stale``, as before. Re-runs of one
signal are bounded (``MAX_RERUNS``) for a connection that fails on every try even though
PING works (a client output buffer limit, a proxy cutting long replies).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.core.bus import keys
from gateway.core.bus.backoff import Outage
from gateway.core.bus.scripts import RELEASE_LEASE
from gateway.core.bus.signals import Signal, ack
from gateway.core.settings import Settings
from gateway.workers.busy import hand_off

log = logging.getLogger(__name__)

MAX_RERUNS = 3
"""Re-runs of one signal's drain after outages; past that ``claim_stale`` takes over."""

OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
"""Redis did not answer (``BusyLoadingError`` is a ``ConnectionError``): worth waiting for.
Not ``ResponseError`` and its kin: Redis answered, and would answer the same again."""


class UnreleasedGrants:
    """The lease grants of one session whose release an outage swallowed.

    One per handled signal: a grant matters only to the drain that took it, and what
    is left when that handling ends lapses by its ttl (nothing accumulates per worker).
    """

    def __init__(self, session_key: str) -> None:
        self.session_key = session_key
        self._tokens: list[str] = []

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def remember(self, token: str) -> None:
        if token not in self._tokens:
            self._tokens.append(token)

    async def let_go(self, redis: Redis) -> None:
        """Release the remembered grants (a no-op for one that lapsed or that another
        holder replaced: the release compares the token); raises ``OUTAGE_ERRORS`` with
        the grants not yet released kept for the next try."""
        while self._tokens:
            try:
                await RELEASE_LEASE.run(redis, [keys.lease(self.session_key)], [self._tokens[0]])
            except OUTAGE_ERRORS:
                raise
            except RedisError as exc:
                # Redis answered with an error: retrying would get it again.
                log.warning("lease of %r left to lapse: %r", self.session_key, exc)
            self._tokens.pop(0)

    async def try_let_go(self, redis: Redis) -> None:
        """``let_go`` now if Redis answers, else keep the grants for ``recovered``."""
        try:
            await self.let_go(redis)
        except OUTAGE_ERRORS as exc:
            log.warning(
                "lease of %r not released yet (%r): again once Redis answers",
                self.session_key,
                exc,
            )


async def recovered(redis: Redis, grants: UnreleasedGrants, stopping: Callable[[], bool]) -> bool:
    """Wait until Redis answers a PING and ``grants`` are let go (True), or the worker
    stops while Redis does not answer (False). Polled with the consumer's backoff:
    nothing notifies a client that a server came back."""
    outage = Outage(f"drain of {grants.session_key}")
    while True:
        # Tried once even when stopping: a stopping worker that reaches Redis can still
        # let its grants go and hand the session off, rather than leave it for a claim.
        try:
            await redis.ping()
            await grants.let_go(redis)
            outage.recovered()
            return True
        except OUTAGE_ERRORS as exc:
            if stopping():
                return False
            await outage.failed(exc)


async def after_outage(
    redis: Redis,
    settings: Settings,
    sig: Signal,
    grants: UnreleasedGrants,
    exc: BaseException,
    rerun: int,
    stopping: Callable[[], bool],
) -> Signal | None:
    """The signal to drain again, once Redis answers and ``grants`` are let go, after
    the ``rerun``-th drain of ``sig`` was cut off by ``exc``; None to drain it no more
    (its signal left pending for a claim, or handed off by a stopping worker)."""
    s = sig.session_key
    if rerun >= MAX_RERUNS:
        log.warning("%s cut off by Redis again (%r): pending for claim_stale", s, exc)
        return None
    log.warning("%s cut off by Redis (%r): drained again once Redis answers", s, exc)
    if not await recovered(redis, grants, stopping):
        return None  # stopping: the signal stays pending for a peer
    if stopping():
        # As a drain that stopped (a BEGIN_TURN now would count an attempt this worker
        # does not run): acked once another signal stands for the session's work.
        if await hand_off(redis, settings, s, sig.channel):
            await ack(redis, sig, keys.WORKER_GROUP)
        return None
    # A redelivery, as a claim would be: if the session is held now (a grant the outage
    # lost, a peer's), BEGIN_TURN must keep the signal pending, not ack it for a holder
    # that may not be draining.
    return replace(sig, times_delivered=max(2, sig.times_delivered))
