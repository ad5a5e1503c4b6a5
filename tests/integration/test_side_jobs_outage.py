"""The arq side jobs outlive a Redis outage (real redis-server killed and restarted)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.workers.assemble import assemble_worker
from gateway.workers.jobs import REMINDER_PREFIX, create_job_pool, schedule_tool
from tests.fakes.redis_server import RedisServer
from tests.integration.test_worker_jobs import tool_context
from tests.integration.test_worker_kit import Transcript, bus_settings, session_key, target_of

pytestmark = pytest.mark.integration


async def test_reminders_run_again_after_redis_came_back(tmp_path: Path) -> None:
    # Regression: arq's worker ended with the outage's connection error and never
    # polled again, so reminders and turn retries waited for a worker restart.
    (tmp_path / "redis").mkdir()
    server = RedisServer(data_dir=tmp_path / "redis").start()
    target = target_of(server.url)
    settings = bus_settings(tmp_path)
    redis = target.client()
    try:
        async with assemble_worker(settings, redis, target=target) as assembly, assembly.running():
            await asyncio.sleep(0.5)  # arq is polling
            server.kill()
            await asyncio.sleep(2.0)  # its next polls fail: arq's run ends
            server.start()
            pool = await create_job_pool(target)
            try:
                ctx = tool_context(tmp_path, "after-outage")
                schedule = schedule_tool(pool)
                await schedule.invoke({"message": "still here", "in_seconds": 1}, ctx)
                key = session_key("after-outage")
                transcript = Transcript(redis, [key])
                await transcript.runs_ended(1, seconds=40)
            finally:
                await pool.aclose()
        assert transcript.replies(key) == [REMINDER_PREFIX + "still here"]
    finally:
        await redis.aclose()
        server.close()
