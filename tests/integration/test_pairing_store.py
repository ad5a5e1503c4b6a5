"""Pairing codes: format, reuse, the per-channel cap (also under concurrent senders:
one script), expiry, approval and revocation. Each test runs against the real
redis-server and against fakeredis (its Lua runtime runs the same scripts)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import fakeredis
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from gateway.channels.toolkit.pairing import ALPHABET, CODE_LENGTH, MAX_OPEN_CODES, PairingStore

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(params=["redis-server", "fakeredis"])
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    if request.param == "redis-server":
        url = request.getfixturevalue("redis_url")  # flushed before the test
        client: Redis = Redis.from_url(url, decode_responses=True)
    else:
        client = fakeredis.FakeAsyncRedis(decode_responses=True)
    yield client
    await client.aclose()


async def test_code_format_and_reuse(redis: Redis) -> None:
    store = PairingStore(redis, "fake")
    issued = await store.issue("u1", "Ann", "c1")
    assert issued is not None and issued.new
    assert len(issued.code) == CODE_LENGTH and set(issued.code) <= set(ALPHABET)
    again = await store.issue("u1", "Ann", "c1")
    assert again is not None and again.code == issued.code and not again.new
    (pending,) = await store.pending()
    assert (pending.code, pending.sender_id, pending.sender_name) == (issued.code, "u1", "Ann")


async def test_at_most_three_open_codes_per_channel_under_concurrency(redis: Redis) -> None:
    store = PairingStore(redis, "fake")
    issued = await asyncio.gather(*(store.issue(f"u{n}", "", f"c{n}") for n in range(20)))
    assert sum(1 for i in issued if i is not None) == MAX_OPEN_CODES
    assert len(await store.pending()) == MAX_OPEN_CODES
    # Another channel has its own codes.
    assert await PairingStore(redis, "other").issue("u1", "", "c1") is not None


async def test_expired_codes_cannot_be_approved_and_free_their_slot(redis: Redis) -> None:
    store = PairingStore(redis, "fake", ttl_s=1, max_open=1)
    first = await store.issue("u1", "", "c1")
    assert first is not None
    assert await store.issue("u2", "", "c2") is None  # the one slot is taken
    await asyncio.sleep(2.1)  # Redis TIME has whole seconds: 2 s past issue is past expiry
    assert await store.pending() == []
    assert await store.approve(first.code) is None
    assert await store.issue("u2", "", "c2") is not None


async def test_approve_then_revoke(redis: Redis) -> None:
    store = PairingStore(redis, "fake")
    issued = await store.issue("u1", "", "c1")
    assert issued is not None
    assert not await store.is_paired("u1")
    assert await store.approve(issued.code.lower()) == "u1"
    assert await store.is_paired("u1") and await store.approved() == ["u1"]
    assert await store.approve(issued.code) is None  # used up
    assert await store.pending() == []
    assert await store.revoke("u1") and not await store.revoke("u1")
    assert not await store.is_paired("u1")
