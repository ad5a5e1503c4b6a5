"""Reading outbound events and signalling deliverers (real Redis)."""

# The fixtures are imported by name, so test parameters "redefine" them.

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.outbound import read_events, signal_delivery
from gateway.core.bus.session_writer import SessionWriter
from gateway.core.events import RunCompleted, RunResult, RunStarted, StreamEvent, TextDelta
from tests.fakes.redis_server import redis, redis_server, redis_url  # noqa: F401

SESSION = "web:abc"


async def holder(redis: Redis) -> SessionWriter:
    lease = await SessionWriter.acquire(redis, SESSION, ttl_ms=5000, owner="w")
    assert lease is not None
    return lease


async def test_read_after_an_id(redis: Redis) -> None:
    lease = await holder(redis)
    events: list[StreamEvent] = [
        RunStarted(run_id="r", session_key=SESSION),
        TextDelta(run_id="r", seq=1, delta="he"),
        TextDelta(run_id="r", seq=2, delta="llo"),
    ]
    ids = await lease.publish(events, maxlen=1000)

    everything = await read_events(redis, SESSION, after="0-0", block_ms=None)
    assert everything == list(zip(ids, events, strict=True))
    rest = await read_events(redis, SESSION, after=ids[0], block_ms=None, count=1)
    assert rest == [(ids[1], events[1])]
    assert await read_events(redis, SESSION, after=ids[-1], block_ms=None) == []


async def test_blocking_read_returns_when_an_event_arrives(redis: Redis, redis_url: str) -> None:
    lease = await holder(redis)
    [first] = await lease.publish([RunStarted(run_id="r")], maxlen=1000)
    reader = Redis.from_url(redis_url, decode_responses=True)
    try:
        waiting = asyncio.create_task(read_events(reader, SESSION, after=first, block_ms=5000))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        final = RunCompleted(run_id="r", seq=1, result=RunResult(content="done"), content="done")
        [second] = await lease.publish([final], maxlen=1000)
        got = await asyncio.wait_for(waiting, timeout=2)
    finally:
        await reader.aclose()
    assert got == [(second, final)]


async def test_blocking_read_times_out_empty(redis: Redis) -> None:
    assert await read_events(redis, SESSION, after="0-0", block_ms=30) == []


async def test_malformed_events_are_skipped(redis: Redis) -> None:
    stream = keys.outbound(SESSION)
    for _ in range(3):
        await redis.xadd(stream, {"d": '{"type": "nope"}'})
    lease = await holder(redis)
    [good] = await lease.publish([TextDelta(run_id="r", delta="x")], maxlen=1000)

    got = await read_events(redis, SESSION, after="0-0", block_ms=None, count=2)

    assert [entry_id for entry_id, _ in got] == [good]


async def test_signal_delivery_goes_to_the_channel_partition(redis: Redis) -> None:
    entry_id = await signal_delivery(redis, "telegram", SESSION, partitions=8)

    stream = keys.deliver("telegram", keys.partition(SESSION, 8))
    assert await redis.xrange(stream) == [(entry_id, {"s": SESSION, "c": "telegram"})]
