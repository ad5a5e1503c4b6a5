"""The SSE streams' shared outbound reader on a real Redis: one blocked read for all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from gateway.channels.http.outbound_reader import OutboundReader, ReaderClosed
from gateway.channels.http.sse import sse_frame
from gateway.channels.http.subscription import Entry, Subscription
from gateway.core.bus import keys
from gateway.core.bus.codec import encode
from gateway.core.events import TextDelta
from tests.fakes.redis_server import RedisServer, redis, redis_server, redis_url  # noqa: F401

pytestmark = pytest.mark.integration

HANG_GUARD_S = 30.0
"""Bounds a step that could hang (a guard, not a measurement)."""
FOREVER_S = 3600.0
"""A block or wait that the test must never sit out: only a wake-up ends it in time."""


async def publish(redis: Redis, session: str, *texts: str) -> list[str]:
    return [
        str(await redis.xadd(keys.outbound(session), {"d": encode(TextDelta(run_id="r", delta=t))}))
        for t in texts
    ]


async def take(sub: Subscription, n: int) -> list[Entry]:
    """The next ``n`` entries of ``sub`` (waiting as long as the guard allows)."""
    got: list[Entry] = []
    async with asyncio.timeout(HANG_GUARD_S):
        while len(got) < n:
            got += await sub.next(FOREVER_S)
    return got


def texts(entries: list[Entry]) -> list[str]:
    return [e.event.delta for e in entries if isinstance(e.event, TextDelta)]


async def blocked_clients(redis: Redis) -> int:
    return int((await redis.info("clients"))["blocked_clients"])


async def until_blocked(redis: Redis) -> None:
    async with asyncio.timeout(HANG_GUARD_S):
        while True:
            if await blocked_clients(redis) >= 1:
                return
            await asyncio.sleep(0.01)


@pytest.fixture
async def reader(redis: Redis) -> AsyncIterator[OutboundReader]:
    # A block no test may wait out: a join that did not wake the read would hang.
    outbound = OutboundReader(redis, sse_frame, block_ms=int(FOREVER_S * 1000), buffer_limit=4)
    outbound.start()
    yield outbound
    await outbound.close()


async def test_many_subscribers_share_one_blocked_read(
    reader: OutboundReader, redis: Redis
) -> None:
    sessions = [f"http:c{i}" for i in range(20)]
    subs = [reader.subscribe(s, "0-0") for s in sessions]
    second = reader.subscribe(sessions[0], "0-0")
    await until_blocked(redis)
    assert await blocked_clients(redis) == 1
    for s in sessions:
        await publish(redis, s, f"{s} a", f"{s} b")
    for s, sub in zip(sessions, subs, strict=True):
        got = await take(sub, 2)
        assert texts(got) == [f"{s} a", f"{s} b"]
        assert got[0].frame == sse_frame(got[0].id, got[0].event)
    assert texts(await take(second, 2)) == [f"{sessions[0]} a", f"{sessions[0]} b"]


async def test_a_join_while_the_read_blocks_is_served_without_waiting_it_out(
    reader: OutboundReader, redis: Redis
) -> None:
    ids = await publish(redis, "http:old", "one", "two")
    live = reader.subscribe("http:live", "0-0")
    await until_blocked(redis)
    # Another session, and the same session from further back: both join the read.
    late = reader.subscribe("http:old", "0-0")
    assert texts(await take(late, 2)) == ["one", "two"]
    await until_blocked(redis)
    behind = reader.subscribe("http:old", ids[0])
    assert texts(await take(behind, 1)) == ["two"]
    await publish(redis, "http:live", "now")
    assert texts(await take(live, 1)) == ["now"]


async def test_subscribers_resume_from_their_own_positions(
    reader: OutboundReader, redis: Redis
) -> None:
    ids = await publish(redis, "http:s", "a", "b", "c")
    from_start = reader.subscribe("http:s", "0-0")
    resumed = reader.subscribe("http:s", ids[1])  # Last-Event-ID: the second event
    await publish(redis, "http:s", "d")
    assert texts(await take(from_start, 4)) == ["a", "b", "c", "d"]
    assert texts(await take(resumed, 2)) == ["c", "d"]


async def test_a_slow_subscriber_pauses_bounded_and_loses_nothing(
    reader: OutboundReader, redis: Redis
) -> None:
    slow = reader.subscribe("http:s", "0-0")
    fast = reader.subscribe("http:s", "0-0")
    other = reader.subscribe("http:o", "0-0")
    sent = [f"e{i}" for i in range(10)]
    await publish(redis, "http:s", *sent)
    await publish(redis, "http:o", "x")
    assert texts(await take(fast, 10)) == sent  # not held back by the slow one
    assert texts(await take(other, 1)) == ["x"]
    assert slow.paused and slow.buffered == 4  # the buffer limit, nothing more
    got: list[Entry] = []
    while len(got) < 10:
        batch = await take(slow, 1)
        assert len(batch) <= 4
        got += batch
    assert texts(got) == sent
    assert not slow.paused


async def test_malformed_and_trimmed_entries_are_passed_over(
    reader: OutboundReader, redis: Redis
) -> None:
    ids = await publish(redis, "http:t", "gone", "kept")
    await redis.xtrim(keys.outbound("http:t"), maxlen=1, approximate=False)
    sub = reader.subscribe("http:t", "0-0")
    assert texts(await take(sub, 1)) == ["kept"]
    await redis.xadd(keys.outbound("http:t"), {"d": '{"type": "nope"}'})
    await publish(redis, "http:t", "after")
    got = await take(sub, 1)
    assert texts(got) == ["after"] and got[0].id > ids[1]


async def test_a_stream_of_the_wrong_type_ends_only_its_own_subscribers(
    reader: OutboundReader, redis: Redis
) -> None:
    await redis.set(keys.outbound("http:bad"), "not a stream")
    good = reader.subscribe("http:good", "0-0")
    bad = reader.subscribe("http:bad", "0-0")
    with pytest.raises(ResponseError):
        await take(bad, 1)
    await publish(redis, "http:good", "fine")
    assert texts(await take(good, 1)) == ["fine"]


async def test_idle_subscription_gets_an_empty_batch_for_a_heartbeat(
    reader: OutboundReader,
) -> None:
    sub = reader.subscribe("http:quiet", "0-0")
    assert await sub.next(0.01) == []


async def test_start_and_close_are_idempotent_and_close_ends_subscriptions(
    redis: Redis,
) -> None:
    reader = OutboundReader(redis, sse_frame)
    with pytest.raises(ReaderClosed):
        reader.subscribe("http:x", "0-0")
    reader.start()
    reader.start()
    sub = reader.subscribe("http:x", "0-0")
    await until_blocked(redis)
    await reader.close()
    await reader.close()
    with pytest.raises(ReaderClosed):
        await sub.next(FOREVER_S)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("SSE ")]
    assert reader.subscriptions == 0


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    data_dir = tmp_path / "redis"
    data_dir.mkdir()
    server = RedisServer(data_dir=data_dir).start()
    yield server
    server.close()


async def test_redis_restart_ends_the_streams_and_the_reader_recovers(
    own_redis: RedisServer,
) -> None:
    client = Redis.from_url(own_redis.url, decode_responses=True)
    reader = OutboundReader(client, sse_frame, block_ms=1000)
    reader.start()
    try:
        sub = reader.subscribe("http:r", "0-0")
        await publish(client, "http:r", "before")
        assert texts(await take(sub, 1)) == ["before"]
        own_redis.kill()
        with pytest.raises(RedisConnectionError):
            await take(sub, 1)  # ended as its own read would have: the client resumes
        assert reader.subscriptions == 0
        own_redis.start()
        again = reader.subscribe("http:r", "0-0")
        await publish(client, "http:r", "after")
        assert texts(await take(again, 1)) == ["after"]
        # Restarted while nobody follows: the reader's idle connection died unnoticed,
        # and the next subscriber must not pay for it with an ended stream.
        reader.unsubscribe(again)
        own_redis.kill()
        own_redis.start()
        await client.connection_pool.disconnect()  # the test's own connections died too
        idle_then = reader.subscribe("http:r", "0-0")
        await publish(client, "http:r", "later")
        assert texts(await take(idle_then, 1)) == ["later"]
    finally:
        await reader.close()
        await client.aclose()
