"""A worker is listed by ``gateway status`` only while its heartbeat key lives."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.health import collect_status, live_workers
from gateway.workers.worker import HEARTBEAT_TTL_MS, Worker
from tests.integration.test_worker_kit import bus_settings, runtime_for

pytestmark = pytest.mark.integration


async def test_a_crashed_worker_drops_out_of_status_when_its_heartbeat_expires(
    redis: Redis, tmp_path: Path
) -> None:
    # Regression: gw:workers was a hash with no expiry, so dead workers stayed forever.
    settings = bus_settings(tmp_path)
    runtime = runtime_for(settings, redis)
    live = Worker(settings, redis, runtime, worker_id="live")
    ghost = Worker(settings, redis, runtime, worker_id="ghost")
    try:
        await live.start()
        await ghost.start()
        assert await live_workers(redis) == ["ghost", "live"]
        await ghost.abort()  # as kill -9 would: nothing is cleaned up
        key = keys.worker_heartbeat("ghost")
        assert 0 < await redis.pttl(key) <= HEARTBEAT_TTL_MS
        await redis.delete(key)  # what the ttl does (without waiting 20 s for it)
        status = await collect_status(redis, partitions=settings.worker.ready_partitions)
        assert status["workers_alive"] == ["live"]
    finally:
        await live.stop()
        await live.shutdown()
        await runtime.aclose()
    assert await live_workers(redis) == []
