"""Many chats through several workers: every reply, in order, exactly once; lifecycle."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError

from gateway.core.bus import keys
from gateway.core.bus.inbound import read_cursor
from gateway.core.sessions.redis import RedisSessionStore
from gateway.workers.worker import Worker
from tests.integration.test_worker_kit import (
    Transcript,
    bus_settings,
    heartbeat_of,
    running_workers,
    runtime_for,
    send,
    session_key,
)

CHATS = 50
MESSAGES = 20


async def test_fifty_chats_twenty_messages_three_workers_in_order(
    redis: Redis, tmp_path: Path
) -> None:
    settings = bus_settings(tmp_path, concurrency=16)
    chats = [f"chat{c}" for c in range(CHATS)]
    transcript = Transcript(redis, [session_key(chat) for chat in chats])
    async with running_workers(settings, redis, count=3):

        async def chat_sends(chat: str) -> list[str]:
            return [await send(redis, settings, chat, f"{chat} m{i}") for i in range(MESSAGES)]

        sent = await asyncio.gather(*(chat_sends(chat) for chat in chats))
        await transcript.runs_ended(MESSAGES, seconds=90)
    sessions = RedisSessionStore(redis)
    for chat, entry_ids in zip(chats, sent, strict=True):
        key = session_key(chat)
        assert transcript.replies(key) == [f"{chat} m{i}" for i in range(MESSAGES)]
        assert len(transcript.terminals(key)) == MESSAGES
        run_ids = [e.run_id for e in transcript.terminals(key)]
        assert run_ids == entry_ids  # one turn per message (followup), run id = entry id
        assert await read_cursor(redis, key) == entry_ids[-1]
        session = await sessions.load(key)
        assert session is not None
        users = [m["content"] for m in session.messages if m["role"] == "user"]
        assert users == [f"{chat} m{i}" for i in range(MESSAGES)]
    for p in range(settings.worker.ready_partitions):
        pending = await redis.xpending(keys.ready(p), keys.WORKER_GROUP)
        assert pending["pending"] == 0


async def test_each_reply_streams_events_with_increasing_seq(redis: Redis, tmp_path: Path) -> None:
    settings = bus_settings(tmp_path)
    key = session_key("seq")
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis):
        await send(redis, settings, "seq", "one two three four five six")
        await transcript.runs_ended(1)
    events = transcript.events[key]
    assert events[0].type == "run.started"
    assert events[-1].type == "run.completed"
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    deltas = "".join(getattr(e, "delta", "") for e in events if e.type == "text.delta")
    assert deltas == "one two three four five six"


async def test_lifecycle_is_idempotent_and_heartbeats(redis: Redis, tmp_path: Path) -> None:
    settings = bus_settings(tmp_path)
    runtime = runtime_for(settings, redis)
    worker = Worker(settings, redis, runtime, worker_id="life")
    await worker.initialize()
    await worker.initialize()
    await worker.start()
    await worker.start()
    assert worker.running
    assert await heartbeat_of(redis, "life") is not None
    await worker.stop()
    await worker.stop()
    assert not worker.running
    await worker.shutdown()
    await worker.shutdown()
    assert await heartbeat_of(redis, "life") is None
    await runtime.aclose()


async def test_failed_start_cleans_up(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """A user that may create groups but not write the heartbeat: start() fails after
    initialize(); ``async with`` must shut down and leave no task running."""
    settings = bus_settings(tmp_path)
    runtime = runtime_for(settings, redis)
    await redis.acl_setuser(
        "nobeat",
        enabled=True,
        passwords=["+pw"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-set"],
    )
    limited = Redis.from_url(
        redis_url.replace("redis://", "redis://nobeat:pw@"), decode_responses=True
    )
    worker = Worker(settings, limited, runtime, worker_id="nobeat")
    try:
        with pytest.raises(NoPermissionError):
            async with worker:
                pytest.fail("start() must fail without SET")
        assert not worker.running
        leftovers = [t for t in asyncio.all_tasks() if "nobeat" in t.get_name()]
        assert leftovers == []
    finally:
        await redis.acl_deluser("nobeat")
        await limited.aclose()
        await runtime.aclose()
