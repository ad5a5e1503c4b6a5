"""The worker's session cache through real turns: what crosses the wire, and when."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from gateway.core.messages import Message
from gateway.core.sessions.base import Session
from gateway.core.sessions.redis import RedisSessionStore
from tests.integration.test_worker_kit import (
    Transcript,
    bus_settings,
    running_workers,
    send,
    session_key,
)

HISTORY = 100
"""Stored messages of 500 characters: ~50 kB of history, under the compaction budget."""


async def traffic(redis: Redis) -> tuple[int, int]:
    """Bytes Redis sent and received so far."""
    stats = await redis.info("stats")
    return int(stats["total_net_output_bytes"]), int(stats["total_net_input_bytes"])


async def since(redis: Redis, before: tuple[int, int]) -> tuple[int, int]:
    now = await traffic(redis)
    return now[0] - before[0], now[1] - before[1]


async def test_a_turn_after_a_released_commit_does_not_reload_the_history(
    redis: Redis, tmp_path: Path
) -> None:
    settings = bus_settings(tmp_path)
    key = session_key("long")
    history: list[Message] = [
        {"role": "user", "content": f"{i:03} " + "x" * 496} for i in range(HISTORY)
    ]
    await RedisSessionStore(redis).save(Session(key=key, messages=history))
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis):
        before = await traffic(redis)
        await send(redis, settings, "long", "one")
        await transcript.runs_ended(1)
        first, _ = await since(redis, before)
        # The first turn's commit found nothing pending and released the lease; the
        # worker keeps the session it committed, so the next turn's BEGIN_TURN sends
        # the stamp and gets no history back; its commit appends (sends no history).
        before = await traffic(redis)
        await send(redis, settings, "long", "two")
        await transcript.runs_ended(2)
        second, sent = await since(redis, before)
    assert transcript.replies(key) == ["one", "two"]
    assert first > HISTORY * 500  # loaded once
    assert second < HISTORY * 500 // 5, (first, second)
    assert sent < HISTORY * 500 // 5, sent
    stored = await RedisSessionStore(redis).load(key)
    assert stored is not None and len(stored.messages) == HISTORY + 4
