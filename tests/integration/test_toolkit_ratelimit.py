"""The shared token buckets' script, on the real server and on fakeredis[lua]."""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from gateway.channels.toolkit.ratelimit import Bucket, RateLimiter, RateLimits
from tests.fakes.redis_server import redis, redis_server, redis_url  # noqa: F401

pytestmark = pytest.mark.integration

SLOW = RateLimits(bot=Bucket(3, 0.001), chat=Bucket(2, 0.001))
"""Refills one token in 1000 s: a test sees only the burst."""


@pytest_asyncio.fixture(params=["redis-server", "fakeredis"])
async def client(request: pytest.FixtureRequest, redis: Redis) -> AsyncIterator[Redis]:
    if request.param == "redis-server":
        yield redis
        return
    fake = fakeredis.FakeAsyncRedis(decode_responses=True)
    try:
        yield fake
    finally:
        await fake.aclose()


async def test_bot_and_chat_buckets_are_taken_together(client: Redis) -> None:
    limiter = RateLimiter(client, "fake", SLOW)
    assert [await limiter.try_take("a") for _ in range(2)] == [0.0, 0.0]
    assert await limiter.try_take("a") > 100  # chat a's burst is spent
    assert await limiter.try_take("b") == 0.0  # the bot still had a third token
    waits = [await limiter.try_take(chat) for chat in ("b", "c")]
    assert all(wait > 100 for wait in waits)  # the bot's burst is spent, for every chat


async def test_refused_take_takes_nothing(client: Redis) -> None:
    limiter = RateLimiter(client, "fake", RateLimits(bot=Bucket(1, 0.001), chat=Bucket(5, 0.001)))
    assert await limiter.try_take("a") == 0.0
    assert await limiter.try_take("a") > 0  # the bot is out: the chat keeps its tokens
    other = RateLimiter(client, "fake", RateLimits(bot=Bucket(9, 0.001), chat=Bucket(5, 0.001)))
    await client.delete("gw:rl:{fake}:bot")
    assert [await other.try_take("a") for _ in range(4)] == [0.0] * 4  # 5 - 1 taken before


async def test_pause_holds_a_chat_for_every_replica(client: Redis) -> None:
    fast = RateLimits(bot=Bucket(100, 100.0), chat=Bucket(100, 100.0))
    one, two = RateLimiter(client, "fake", fast), RateLimiter(client, "fake", fast)
    await one.pause(30, "a")
    assert 25 < await two.try_take("a") <= 30
    assert await two.try_take("b") == 0.0  # only chat a was paused
    await one.pause(30)  # the whole bot
    assert await two.try_take("b") > 25
