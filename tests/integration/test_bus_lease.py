"""The lease primitive, keepalive, and the session writer's fenced publish and commit."""

# The fixtures are imported by name, so test parameters "redefine" them.

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import cast

import pytest
from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.attempts import record_attempt
from gateway.core.bus.inbound import pending_inbound, publish_inbound, read_cursor
from gateway.core.bus.lease import Lease
from gateway.core.bus.session_writer import DeliverySignal, SessionWriter
from gateway.core.errors import LeaseLostError
from gateway.core.events import RunCompleted, RunResult, RunStarted, StreamEvent, TextDelta
from gateway.core.messages import InboundMessage
from gateway.core.sessions.base import Session
from tests.fakes.redis_server import (  # noqa: F401
    RedisServer,
    aof_redis_server,
    redis,
    redis_server,
    redis_url,
)

SESSION = "slack:C1"


def message(text: str) -> InboundMessage:
    return InboundMessage(channel="slack", chat_id="C1", sender_id="U1", text=text)


async def acquire(redis: Redis, *, ttl_ms: int = 5000, owner: str = "w1") -> SessionWriter:
    writer = await SessionWriter.acquire(redis, SESSION, ttl_ms=ttl_ms, owner=owner)
    assert writer is not None
    return writer


async def publish(redis: Redis, *texts: str) -> list[str]:
    ids = []
    for text in texts:
        published = await publish_inbound(redis, message(text), partitions=2, maxlen=1000)
        assert published.entry_id is not None
        ids.append(published.entry_id)
    return ids


async def attempts(redis: Redis) -> dict[str, str]:
    return await cast(Awaitable[dict[str, str]], redis.hgetall(keys.attempts(SESSION)))


async def test_acquire_grants_a_token_unique_to_the_grant(redis: Redis) -> None:
    lease = (await acquire(redis, owner="worker-a")).lease

    assert lease.token.startswith("worker-a:")
    assert await redis.get(keys.lease(SESSION)) == lease.token
    assert 0 < await redis.pttl(keys.lease(SESSION)) <= 5000
    # No fence counter is kept: the token comparison in the scripts is the fence.
    assert await redis.keys("gw:fence:*") == []


async def test_second_acquirer_is_refused_until_release(redis: Redis) -> None:
    first = (await acquire(redis, owner="a")).lease
    assert await Lease.acquire(redis, keys.lease(SESSION), ttl_ms=5000, owner="a") is None

    assert await first.release()
    assert not await first.release()  # already gone
    second = (await acquire(redis, owner="a")).lease
    assert second.token != first.token


async def test_renew_extends_only_our_lease(redis: Redis) -> None:
    lease = (await acquire(redis, ttl_ms=1000)).lease
    await redis.pexpire(keys.lease(SESSION), 100)
    assert await lease.renew()
    assert await redis.pttl(keys.lease(SESSION)) > 500

    await redis.set(keys.lease(SESSION), "9:someone-else:x")
    assert not await lease.renew()
    assert not await lease.release()
    assert await redis.get(keys.lease(SESSION)) == "9:someone-else:x"


async def test_expired_lease_can_be_taken_and_old_holder_cannot_renew(redis: Redis) -> None:
    old = (await acquire(redis, ttl_ms=50, owner="old")).lease
    await asyncio.sleep(0.12)
    new = (await acquire(redis, owner="new")).lease

    assert not await old.renew()
    assert not await old.release()
    assert await redis.get(keys.lease(SESSION)) == new.token


async def test_keepalive_holds_the_lease_past_its_ttl(redis: Redis) -> None:
    lease = await acquire(redis, ttl_ms=200)
    async with lease.keepalive(0.04) as lost:
        await asyncio.sleep(0.5)
        assert not lost.is_set()
        assert await redis.get(keys.lease(SESSION)) == lease.lease.token


async def test_keepalive_stops_renewing_on_exit(redis: Redis) -> None:
    lease = await acquire(redis, ttl_ms=200)
    async with lease.keepalive(0.02):
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    assert await redis.get(keys.lease(SESSION)) is None
    assert await Lease.acquire(redis, keys.lease(SESSION), ttl_ms=200, owner="next") is not None


async def test_keepalive_sets_lost_when_the_lease_disappears(redis: Redis) -> None:
    lease = await acquire(redis, ttl_ms=5000)
    async with lease.keepalive(0.02) as lost:
        await redis.delete(keys.lease(SESSION))
        await asyncio.wait_for(lost.wait(), timeout=2)


async def test_keepalive_sets_lost_when_redis_is_gone_for_a_ttl(
    aof_redis_server: RedisServer,
) -> None:
    client = Redis.from_url(aof_redis_server.url, decode_responses=True)
    try:
        lease = await Lease.acquire(client, keys.lease(SESSION), ttl_ms=300, owner="w")
        assert lease is not None
        async with lease.keepalive(0.05) as lost:
            aof_redis_server.kill()
            await asyncio.wait_for(lost.wait(), timeout=3)
    finally:
        await client.aclose()


def test_keepalive_interval_must_be_shorter_than_ttl(redis: Redis) -> None:
    lease = Lease(redis, keys.lease(SESSION), token="w:x", ttl_ms=1000)
    with pytest.raises(ValueError):
        lease.keepalive(1.0)
    with pytest.raises(ValueError):
        lease.keepalive(0)


async def test_publish_events_in_order(redis: Redis) -> None:
    lease = await acquire(redis)
    events: list[StreamEvent] = [
        RunStarted(run_id="r", seq=0),
        TextDelta(run_id="r", seq=1, delta="hi"),
    ]

    ids = await lease.publish(events, maxlen=1000)

    stored = await redis.xrange(keys.outbound(SESSION))
    assert [entry_id for entry_id, _ in stored] == ids
    assert [json.loads(fields["d"])["type"] for _, fields in stored] == [
        "run.started",
        "text.delta",
    ]
    assert await lease.publish([], maxlen=1000) == []


async def test_commit_stores_session_cursor_and_trims(redis: Redis) -> None:
    ids = await publish(redis, "a", "b", "c")
    lease = await acquire(redis)
    for entry_id in ids[:2]:
        await record_attempt(redis, SESSION, entry_id)
    await record_attempt(redis, SESSION, ids[2])
    session = Session(key=SESSION, messages=[{"role": "user", "content": "a"}], updated_at=123.5)

    await lease.commit(session=session, cursor=ids[1], entry_ids=ids[:2])

    assert await read_cursor(redis, SESSION) == ids[1]
    stored = Session.model_validate_json(await redis.get(keys.session(SESSION)))
    assert stored == session
    assert await redis.zscore(keys.SESSIONS_INDEX, SESSION) == 123.5
    assert [entry_id for entry_id, _ in await redis.xrange(keys.inbound(SESSION))] == [ids[2]]
    assert await attempts(redis) == {ids[2]: "1"}
    assert [m.text for _, m in await pending_inbound(redis, SESSION)] == ["c"]


async def test_commit_without_session_keeps_stored_session(redis: Redis) -> None:
    ids = await publish(redis, "a", "b")
    lease = await acquire(redis)
    session = Session(key=SESSION)
    await lease.commit(session=session, cursor=ids[0])

    await record_attempt(redis, SESSION, "0-1")  # stale count for an id not passed in
    await lease.commit(session=None, cursor=ids[1])

    assert Session.model_validate_json(await redis.get(keys.session(SESSION))) == session
    assert await read_cursor(redis, SESSION) == ids[1]
    assert await redis.xlen(keys.inbound(SESSION)) == 0
    # Nothing left to retry: the attempts hash goes with the last entry.
    assert await attempts(redis) == {}


async def test_commit_trims_an_id_sharing_the_cursor_millisecond(redis: Redis) -> None:
    stream = keys.inbound(SESSION)
    for seq in range(1, 4):
        await redis.xadd(stream, {"d": message(f"m{seq}").model_dump_json()}, id=f"5-{seq}")
    lease = await acquire(redis)

    await lease.commit(session=None, cursor="5-2")

    assert [entry_id for entry_id, _ in await redis.xrange(stream)] == ["5-3"]


async def test_stale_holder_cannot_publish_or_commit(redis: Redis) -> None:
    ids = await publish(redis, "a", "b")
    stale = await acquire(redis, ttl_ms=50, owner="stale")
    await asyncio.sleep(0.12)
    current = await acquire(redis, owner="current")
    await current.commit(session=Session(key=SESSION, summary="current"), cursor=ids[0])

    with pytest.raises(LeaseLostError):
        await stale.publish([RunStarted(run_id=ids[1])], maxlen=1000)
    with pytest.raises(LeaseLostError):
        await stale.commit(session=Session(key=SESSION, summary="stale"), cursor=ids[1])

    assert await redis.xlen(keys.outbound(SESSION)) == 0
    assert await read_cursor(redis, SESSION) == ids[0]
    stored = Session.model_validate_json(await redis.get(keys.session(SESSION)))
    assert stored.summary == "current"
    assert await redis.xlen(keys.inbound(SESSION)) == 1


async def test_released_holder_cannot_commit(redis: Redis) -> None:
    ids = await publish(redis, "a")
    lease = await acquire(redis)
    await lease.release()
    with pytest.raises(LeaseLostError):
        await lease.commit(session=None, cursor=ids[0])
    assert await read_cursor(redis, SESSION) == "0-0"


async def test_scripts_reload_after_script_flush(redis: Redis) -> None:
    lease = await acquire(redis)
    await redis.script_flush()
    assert await lease.lease.renew()


async def test_commit_publishes_the_final_events_with_the_cursor(redis: Redis) -> None:
    ids = await publish(redis, "a")
    writer = await acquire(redis)
    done = RunCompleted(run_id=ids[0], seq=3, result=RunResult(content="A"), message_ids=ids)
    session = Session(key=SESSION, summary="s")

    published = await writer.commit(
        session=session, cursor=ids[0], entry_ids=ids, events=[done], maxlen=1000
    )

    [(entry_id, fields)] = await redis.xrange(keys.outbound(SESSION))
    assert published == [entry_id]
    assert json.loads(fields["d"])["message_ids"] == ids
    assert await read_cursor(redis, SESSION) == ids[0]
    assert Session.model_validate_json(await redis.get(keys.session(SESSION))) == session


async def test_a_stale_commit_publishes_no_final_event(redis: Redis) -> None:
    ids = await publish(redis, "a")
    stale = await acquire(redis, ttl_ms=50, owner="stale")
    await asyncio.sleep(0.12)
    await acquire(redis, owner="current")
    done = RunCompleted(run_id=ids[0], result=RunResult(content="A"))

    with pytest.raises(LeaseLostError):
        await stale.commit(cursor=ids[0], events=[done], signal=DeliverySignal("slack", 2))

    assert await redis.xlen(keys.outbound(SESSION)) == 0
    assert await redis.xlen(keys.deliver("slack", keys.partition(SESSION, 2))) == 0
    assert await read_cursor(redis, SESSION) == "0-0"


async def test_publish_and_commit_signal_the_deliverers_with_the_events(redis: Redis) -> None:
    ids = await publish(redis, "a")
    writer = await acquire(redis)
    signal = DeliverySignal("slack", 2)
    stream = keys.deliver("slack", keys.partition(SESSION, 2))

    await writer.publish([RunStarted(run_id=ids[0])], maxlen=1000, signal=signal)
    await writer.commit(cursor=ids[0], events=[RunStarted(run_id="x")], signal=signal)

    signals = [fields for _, fields in await redis.xrange(stream)]
    assert signals == [{"s": SESSION, "c": "slack"}] * 2
