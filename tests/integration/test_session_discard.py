"""Deleting a session's keys (``DISCARD_SESSION``) against a real redis-server."""

from __future__ import annotations

from redis.asyncio import Redis

from gateway.channels.http.api.runs import RunRef, discard_when_committed
from gateway.core.bus import keys
from gateway.core.bus.codec import encode
from gateway.core.bus.session_writer import SessionWriter
from gateway.core.messages import InboundMessage
from gateway.core.sessions.base import Session
from tests.fakes.redis_server import redis, redis_server, redis_url  # noqa: F401

KEY = "api:discard-1"


async def committed_session(redis: Redis) -> SessionWriter:
    """A session whose one message is answered and committed, its lease still held."""
    message = InboundMessage(channel="api", chat_id="discard-1", sender_id="u", text="hi")
    entry = await redis.xadd(keys.inbound(KEY), {"d": encode(message)})
    writer = await SessionWriter.acquire(redis, KEY, ttl_ms=30_000, owner="compactor")
    assert writer is not None
    await writer.commit(cursor=str(entry), session=Session(key=KEY), entry_ids=[str(entry)])
    return writer


async def test_a_held_session_is_not_discarded(redis: Redis) -> None:
    # The holder (here a compaction job) may still commit: deleting now would let it
    # write the session back after the delete.
    writer = await committed_session(redis)
    ref = RunRef(session_key=KEY, run_id="1-0", after="0-0")
    assert not await discard_when_committed(redis, ref, within_s=0)
    assert await redis.exists(keys.session(KEY)) == 1
    await writer.release()
    assert await discard_when_committed(redis, ref, within_s=0)
    assert await redis.exists(keys.session(KEY), keys.cursor(KEY)) == 0
