"""Inbound publish / dedupe / pending reads against a real redis-server."""

# The fixtures are imported by name, so test parameters "redefine" them.

from __future__ import annotations

import json

from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.inbound import pending_inbound, publish_inbound, read_cursor
from gateway.core.bus.session_writer import SessionWriter
from gateway.core.messages import InboundMessage
from tests.fakes.redis_server import (  # noqa: F401
    RedisServer,
    aof_redis_server,
    redis,
    redis_server,
    redis_url,
)

SESSION = "telegram:42"
P = 4


def message(text: str, **extra: str) -> InboundMessage:
    return InboundMessage(channel="telegram", chat_id="42", sender_id="u1", text=text, **extra)


async def test_publish_appends_and_signals_the_partition(redis: Redis) -> None:
    published = await publish_inbound(redis, message("hello"), partitions=P, maxlen=1000)

    assert not published.duplicate
    assert published.session_key == SESSION
    assert published.entry_id is not None
    [(entry_id, fields)] = await redis.xrange(keys.inbound(SESSION))
    assert entry_id == published.entry_id
    assert json.loads(fields["d"])["text"] == "hello"
    ready = keys.ready(keys.partition(SESSION, P))
    [(_, signal_fields)] = await redis.xrange(ready)
    assert signal_fields == {"s": SESSION, "c": "telegram"}


async def test_same_platform_event_is_published_once(redis: Redis) -> None:
    first = await publish_inbound(
        redis, message("hi", platform_event_id="upd-7"), partitions=P, maxlen=1000
    )
    again = await publish_inbound(
        redis, message("hi", platform_event_id="upd-7"), partitions=P, maxlen=1000
    )
    other = await publish_inbound(
        redis, message("hi", platform_event_id="upd-8"), partitions=P, maxlen=1000
    )

    assert not first.duplicate and not other.duplicate
    assert again.duplicate and again.entry_id is None
    assert await redis.xlen(keys.inbound(SESSION)) == 2
    assert await redis.xlen(keys.ready(keys.partition(SESSION, P))) == 2
    assert 0 < await redis.ttl(keys.seen(SESSION, "upd-7")) <= 86_400


async def test_messages_without_event_id_are_never_deduped(redis: Redis) -> None:
    for _ in range(3):
        await publish_inbound(redis, message("same"), partitions=P, maxlen=1000)
    assert await redis.xlen(keys.inbound(SESSION)) == 3


async def test_pending_reads_in_order_after_cursor(redis: Redis) -> None:
    ids = [
        (await publish_inbound(redis, message(f"m{i}"), partitions=P, maxlen=1000)).entry_id
        for i in range(5)
    ]
    assert await read_cursor(redis, SESSION) == "0-0"

    pending = await pending_inbound(redis, SESSION)
    assert [entry_id for entry_id, _ in pending] == ids
    assert [msg.text for _, msg in pending] == ["m0", "m1", "m2", "m3", "m4"]

    assert ids[1] is not None
    await redis.set(keys.cursor(SESSION), ids[1])
    assert [m.text for _, m in await pending_inbound(redis, SESSION)] == ["m2", "m3", "m4"]
    assert [m.text for _, m in await pending_inbound(redis, SESSION, count=2)] == ["m2", "m3"]
    assert ids[3] is not None
    assert [m.text for _, m in await pending_inbound(redis, SESSION, after=ids[3])] == ["m4"]


async def test_pending_after_commit_skips_committed(redis: Redis) -> None:
    for i in range(3):
        await publish_inbound(redis, message(f"m{i}"), partitions=P, maxlen=1000)
    first_two = (await pending_inbound(redis, SESSION))[:2]
    lease = await SessionWriter.acquire(redis, SESSION, ttl_ms=5000, owner="w1")
    assert lease is not None
    await lease.commit(session=None, cursor=first_two[-1][0])

    assert await read_cursor(redis, SESSION) == first_two[-1][0]
    assert [m.text for _, m in await pending_inbound(redis, SESSION)] == ["m2"]


async def test_malformed_entries_go_to_dead_letter_and_are_skipped(redis: Redis) -> None:
    await publish_inbound(redis, message("before"), partitions=P, maxlen=1000)
    stream = keys.inbound(SESSION)
    bad_json = await redis.xadd(stream, {"d": "{not json"})
    no_payload = await redis.xadd(stream, {"x": "1"})
    invalid = await redis.xadd(stream, {"d": json.dumps({"channel": "telegram"})})
    await publish_inbound(redis, message("after"), partitions=P, maxlen=1000)

    pending = await pending_inbound(redis, SESSION)

    assert [m.text for _, m in pending] == ["before", "after"]
    dead = await redis.xrange(keys.DEAD_LETTER)
    assert [fields["ids"] for _, fields in dead] == [bad_json, no_payload, invalid]
    assert all(fields["s"] == SESSION for _, fields in dead)
    assert all(fields["reason"].startswith("malformed") for _, fields in dead)
    assert dead[0][1]["payload"] == "{not json"
    assert "'x': '1'" in dead[1][1]["payload"]
    # Removed from the chat's stream: a second read does not dead-letter them again.
    assert await redis.xlen(stream) == 2
    assert len(await pending_inbound(redis, SESSION)) == 2
    assert await redis.xlen(keys.DEAD_LETTER) == 3


async def test_full_batch_of_malformed_does_not_hide_later_messages(redis: Redis) -> None:
    stream = keys.inbound(SESSION)
    for _ in range(3):
        await redis.xadd(stream, {"d": "garbage"})
    await publish_inbound(redis, message("valid"), partitions=P, maxlen=1000)

    pending = await pending_inbound(redis, SESSION, count=2)

    assert [m.text for _, m in pending] == ["valid"]
    assert await redis.xlen(keys.DEAD_LETTER) == 3


async def test_stream_is_capped_approximately(redis: Redis) -> None:
    for i in range(500):
        await publish_inbound(redis, message(f"m{i}"), partitions=P, maxlen=100)
    length = await redis.xlen(keys.inbound(SESSION))
    assert 100 <= length < 500


async def test_published_messages_survive_an_aof_restart(aof_redis_server: RedisServer) -> None:
    client = Redis.from_url(aof_redis_server.url, decode_responses=True)
    try:
        await publish_inbound(client, message("durable"), partitions=P, maxlen=1000)
    finally:
        await client.aclose()

    aof_redis_server.kill()  # appendfsync always: even SIGKILL loses nothing acknowledged
    aof_redis_server.start()

    client = Redis.from_url(aof_redis_server.url, decode_responses=True)
    try:
        assert [m.text for _, m in await pending_inbound(client, SESSION)] == ["durable"]
        await publish_inbound(client, message("second"), partitions=P, maxlen=1000)
    finally:
        await client.aclose()

    aof_redis_server.restart()

    client = Redis.from_url(aof_redis_server.url, decode_responses=True)
    try:
        texts = [m.text for _, m in await pending_inbound(client, SESSION)]
        assert texts == ["durable", "second"]
    finally:
        await client.aclose()
