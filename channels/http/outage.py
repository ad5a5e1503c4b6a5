"""Redis outages as the HTTP API reports them: 503 + ``Retry-After``, one log line each.

While Redis cannot be reached, every request that needs it answers 503 with the
error shape and ``Retry-After`` (no traceback: the outage is not a bug). The first
failure logs one warning and starts a probe that PINGs Redis until it answers, then
logs one line that it is back; failures in between log nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Final

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

UNAVAILABLE_ERRORS: Final = (RedisConnectionError, RedisTimeoutError)
"""What redis-py raises when the server cannot be reached (refused, reset, timed out, loading)."""

RETRY_AFTER_S: Final = 2


class BusOutage:
    """Tracks one Redis client's outages so that each is logged once."""

    def __init__(self, redis: Redis, *, probe_interval_s: float = 1.0) -> None:
        self._redis = redis
        self._probe_interval_s = probe_interval_s
        self._probe: asyncio.Task[None] | None = None
        self._since = 0.0

    @property
    def down(self) -> bool:
        return self._probe is not None and not self._probe.done()

    def failed(self, exc: BaseException) -> None:
        """Record a failed Redis call: the first of an outage logs and starts the probe."""
        if self.down:
            return
        self._since = time.monotonic()
        log.warning(
            "Redis is unreachable (%s); requests that need it answer 503 until it is back", exc
        )
        self._probe = asyncio.create_task(self._wait_until_back(), name="redis outage probe")

    async def _wait_until_back(self) -> None:
        while True:
            await asyncio.sleep(self._probe_interval_s)
            try:
                async with asyncio.timeout(self._probe_interval_s * 5):
                    await self._redis.ping()
            except (RedisError, OSError, TimeoutError):
                continue
            log.warning("Redis is reachable again after %.1f s", time.monotonic() - self._since)
            return

    async def close(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe


BUS_OUTAGE: Final = web.AppKey("bus_outage", BusOutage)


def report_unavailable(request: web.Request, exc: BaseException) -> None:
    """Hand a Redis failure to the app's ``BusOutage`` (or log it when the app has none)."""
    outage = request.config_dict.get(BUS_OUTAGE)
    if outage is not None:
        outage.failed(exc)
    else:
        log.warning("Redis is unreachable (%s) in %s %s", exc, request.method, request.path)
