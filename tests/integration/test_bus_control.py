"""The stop watcher beside every turn: it must end when its turn cancels it (real Redis)."""

# The fixtures are imported by name, so test parameters "redefine" them.

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from gateway.core.bus.control import wait_for_stop
from tests.fakes.redis_server import redis, redis_server, redis_url  # noqa: F401


class _SwallowsOneCancel(Redis):
    """A client whose ``XRANGE`` swallows a cancellation landing inside it, as redis-py
    did in make chaos: a turn waited for ever on its cancelled stop watcher."""

    entered: asyncio.Event
    swallowed = False

    async def xrange(self, *args: Any, **kwargs: Any) -> Any:
        if self.swallowed:
            return await super().xrange(*args, **kwargs)
        self.entered.set()
        try:
            await asyncio.Event().wait()  # the command in flight when the turn ends
        except asyncio.CancelledError:
            self.swallowed = True  # as the library did
        return await super().xrange(*args, **kwargs)


async def test_a_stop_watcher_ends_even_when_a_command_swallowed_its_cancel(
    redis_url: str,
) -> None:
    client = _SwallowsOneCancel.from_url(redis_url, decode_responses=True)
    client.entered = asyncio.Event()
    watcher = asyncio.create_task(wait_for_stop(client, "t:1", "1-0", poll_s=0))
    try:
        async with asyncio.timeout(10):
            await client.entered.wait()
        watcher.cancel()
        async with asyncio.timeout(10):  # a guard: without the fix it polls for ever
            await asyncio.wait([watcher])
        assert watcher.cancelled()
    finally:
        watcher.cancel()  # a second cancel is not swallowed
        await asyncio.wait([watcher])
        await client.aclose()
