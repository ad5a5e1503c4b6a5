"""Attempt counting and dead-lettering a poisonous turn (real Redis)."""

# The fixtures are imported by name, so test parameters "redefine" them.

from __future__ import annotations

import json

import pytest
from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.attempts import dead_letter, record_attempt
from gateway.core.bus.inbound import pending_inbound, publish_inbound, read_cursor
from gateway.core.bus.session_writer import SessionWriter
from gateway.core.errors import LeaseLostError
from gateway.core.events import RunFailed
from gateway.core.messages import InboundMessage
from tests.fakes.redis_server import redis, redis_server, redis_url  # noqa: F401

SESSION = "discord:9"


def message(text: str) -> InboundMessage:
    return InboundMessage(channel="discord", chat_id="9", sender_id="u", text=text)


async def test_record_attempt_counts_per_entry(redis: Redis) -> None:
    assert [await record_attempt(redis, SESSION, "1-0") for _ in range(3)] == [1, 2, 3]
    assert await record_attempt(redis, SESSION, "2-0") == 1


async def test_dead_letter_records_and_commits_past(redis: Redis) -> None:
    for text in ("poison", "also poison", "fine"):
        await publish_inbound(redis, message(text), partitions=2, maxlen=1000)
    pending = await pending_inbound(redis, SESSION)
    bad = pending[:2]
    for entry_id, _ in bad:
        await record_attempt(redis, SESSION, entry_id)
    lease = await SessionWriter.acquire(redis, SESSION, ttl_ms=5000, owner="w")
    assert lease is not None

    told = RunFailed(run_id=bad[-1][0], error="Sorry", message_ids=[i for i, _ in bad])
    await dead_letter(lease, bad, "failed 5 times", cursor=bad[-1][0], events=[told])

    [(_, record)] = await redis.xrange(keys.DEAD_LETTER)
    assert record["s"] == SESSION
    assert record["ids"].split() == [entry_id for entry_id, _ in bad]
    assert record["reason"] == "failed 5 times"
    assert [m["text"] for m in json.loads(record["payload"])] == ["poison", "also poison"]
    assert await read_cursor(redis, SESSION) == bad[-1][0]
    assert [m.text for _, m in await pending_inbound(redis, SESSION)] == ["fine"]
    assert not await redis.exists(keys.attempts(SESSION))
    [(_, fields)] = await redis.xrange(keys.outbound(SESSION))
    assert json.loads(fields["d"])["message_ids"] == [i for i, _ in bad]


async def test_dead_letter_with_a_lost_lease_does_not_move_the_cursor(redis: Redis) -> None:
    await publish_inbound(redis, message("poison"), partitions=2, maxlen=1000)
    pending = await pending_inbound(redis, SESSION)
    lease = await SessionWriter.acquire(redis, SESSION, ttl_ms=5000, owner="w")
    assert lease is not None
    await lease.release()

    told = RunFailed(run_id=pending[-1][0], error="Sorry", message_ids=[pending[-1][0]])
    with pytest.raises(LeaseLostError):
        await dead_letter(lease, pending, "boom", cursor=pending[-1][0], events=[told])

    assert await read_cursor(redis, SESSION) == "0-0"
    assert len(await pending_inbound(redis, SESSION)) == 1
    # Nothing of it was written: the chat is not told, and no record is left behind.
    assert await redis.xlen(keys.outbound(SESSION)) == 0
    assert await redis.xlen(keys.DEAD_LETTER) == 0
