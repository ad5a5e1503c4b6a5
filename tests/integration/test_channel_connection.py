"""One inbound connection per bot token: two processes run the same channel against
one fake platform; one polls, each message is published once, and when the holder is
killed the other takes over."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.codec import decode_inbound
from tests.fakes.fake_platform import FakePlatform

pytestmark = pytest.mark.integration

TAKEOVER_BOUND_S = 15.0
"""Generous bound for a takeover (lease ttl 2 s + a poll): a hang fails, slowness does not."""


@pytest_asyncio.fixture
async def platform() -> AsyncIterator[FakePlatform]:
    fake = await FakePlatform().start()
    yield fake
    await fake.stop()


async def spawn(redis_url: str, platform: FakePlatform) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fakes.fake_channel_process", redis_url, platform.url,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    assert (await process.stdout.readline()).strip() == b"ready"
    return process


async def wait_published(redis: Redis, count: int) -> list[str]:
    """The texts on the chat's inbound stream once it holds ``count`` entries."""
    stream, texts, last = keys.inbound("fake:c1"), [], "0-0"
    async with asyncio.timeout(TAKEOVER_BOUND_S):
        while len(texts) < count:
            for _, entries in await redis.xread({stream: last}, block=1000) or []:
                for entry_id, fields in entries:
                    last = entry_id
                    texts.append(decode_inbound(fields).text)
    return texts


def receiving_pids(platform: FakePlatform, update_ids: range) -> set[int]:
    """The processes whose connections received these updates."""
    return {int(conn.split(":")[0]) for i in update_ids for conn in platform.receivers[i]}


async def test_one_connection_and_takeover(
    redis_url: str, redis: Redis, platform: FakePlatform
) -> None:
    first = await spawn(redis_url, platform)
    await platform.wait_for(lambda: bool(platform.pollers))
    second = await spawn(redis_url, platform)
    try:
        for n in range(10):
            await platform.push(f"m{n}")
        await wait_published(redis, 10)
        assert receiving_pids(platform, range(1, 11)) == {first.pid}
        first.send_signal(signal.SIGKILL)
        await first.wait()
        for n in range(10, 20):
            await platform.push(f"m{n}")
        texts = await wait_published(redis, 20)
        assert receiving_pids(platform, range(11, 21)) == {second.pid}
        assert sorted(texts) == sorted(f"m{n}" for n in range(20))  # each once
        assert platform.conflicts == 0  # never two pollers at once
    finally:
        for process in (first, second):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await process.wait()
