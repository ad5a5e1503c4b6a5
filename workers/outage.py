"""A session cut off by a Redis outage is drained again as soon as Redis answers.

Without this, a turn that failed because Redis went away left its lease behind (the
release failed too, and with AOF the lease outlives a restart), so the chat's next
message found the session "held", its signal was acked for a holder that was no longer
draining, and the chat waited for ``claim_idle_ms`` until the failed turn's signal was
claimed as stale. Nothing was lost; every chat whose turn the outage cut waited a minute.

Now the worker remembers the grants it could not release, waits for Redis to answer
(backing off), lets those grants go and drains the session again itself: the re-run is
what a claim of the stale signal would have started, with the same ``run_id``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.core.bus import keys
from gateway.core.bus.scripts import RELEASE_LEASE

log = logging.getLogger(__name__)

PING_BACKOFF_S = 0.1
PING_BACKOFF_MAX_S = 5.0


class UnreleasedGrants:
    """Lease grants (session key -> token) whose release an outage swallowed."""

    def __init__(self) -> None:
        self._tokens: dict[str, str] = {}

    def remember(self, session_key: str, token: str) -> None:
        self._tokens[session_key] = token

    async def let_go(self, redis: Redis, session_key: str) -> None:
        """Release the remembered grant of ``session_key`` (a no-op once it lapsed or
        another holder took the session: the release compares the token); kept for
        the next try while Redis does not answer."""
        token = self._tokens.get(session_key)
        if token is None:
            return
        try:
            await RELEASE_LEASE.run(redis, [keys.lease(session_key)], [token])
        except (RedisError, OSError) as exc:
            log.warning(
                "lease of %r not released yet (%r): again once Redis answers", session_key, exc
            )
            return
        self._tokens.pop(session_key, None)


async def redis_answers(redis: Redis, stopping: Callable[[], bool]) -> bool:
    """Wait until Redis answers a PING (True), or the worker stops (False).

    Polled with backoff: nothing notifies a client that a server came back.
    """
    delay = PING_BACKOFF_S
    while not stopping():
        try:
            await redis.ping()
            return True
        except (RedisError, OSError):
            await asyncio.sleep(delay)
            delay = min(delay * 2, PING_BACKOFF_MAX_S)
    return False
