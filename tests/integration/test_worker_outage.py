"""A turn cut off by a Redis crash is drained again once Redis answers (real redis-server
with AOF, killed with SIGKILL mid-turn and started again on its port)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.fakes.openai_server import FakeModelServer, Reply
from tests.fakes.redis_server import RedisServer
from tests.integration.test_worker_kit import (
    Transcript,
    bus_settings,
    running_workers,
    send,
    session_key,
    target_of,
)

pytestmark = pytest.mark.integration


async def test_a_chat_cut_off_by_a_redis_crash_is_answered_without_waiting_for_a_claim(
    tmp_path: Path, fake_model: FakeModelServer
) -> None:
    # Regression: the failed turn's lease outlived the restart (AOF) and its release was
    # lost, so the chat's next message was acked as "the holder drains" and both waited
    # for claim_idle_ms (here 10 minutes: the test times out long before).
    data = tmp_path / "redis"
    data.mkdir()
    server = RedisServer(data_dir=data, appendonly=True, appendfsync="always").start()
    settings = bus_settings(tmp_path, fake=fake_model, lease_ms=600_000, claim_idle_ms=600_000)
    redis = target_of(server.url).client()
    fake_model.script(Reply(text="slow " * 40, chunk_size=5, chunk_delay_s=0.05))
    try:
        async with running_workers(settings, redis):
            await send(redis, settings, "cut", "first")
            await asyncio.sleep(0.5)  # the turn is streaming; its lease is on disk
            server.kill()
            await asyncio.sleep(0.5)
            server.start()
            await send(redis, settings, "cut", "second")
            key = session_key("cut")
            transcript = Transcript(redis, [key])
            await transcript.until(lambda t: len(t.replies(key)) >= 2, seconds=60)
        assert len(transcript.replies(key)) == 2  # each message answered once
    finally:
        await redis.aclose()
        server.close()
