"""Stop requests (``core.bus.control``) against a real redis-server, a worker and the fake model."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from core.bus.control import request_stop
from core.events import RunCompleted, RunFailed
from tests.fakes.openai_server import FakeModelServer, Reply
from tests.integration.test_worker_kit import (
    Transcript,
    bus_settings,
    running_workers,
    send,
    session_key,
)

SLOW = Reply(text="a long answer " * 6, chunk_delay_s=0.05, chunk_size=4)
"""Longer than a stop poll, so a stop that covered the turn would be seen."""


async def test_a_stop_stops_the_turn_of_messages_sent_before_it(
    redis: Redis, tmp_path: Path, fake_model: FakeModelServer
) -> None:
    settings = bus_settings(tmp_path, fake=fake_model, policy="collect")
    key = session_key("s1")
    sent = await send(redis, settings, "s1", "a")
    assert await request_stop(redis, key) == sent
    fake_model.script(SLOW)
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis):
        await transcript.runs_ended(1)
    [ending] = transcript.terminals(key)
    assert isinstance(ending, RunFailed)
    assert ending.result is not None and ending.result.stop_reason == "cancelled"


async def test_a_stop_does_not_stop_a_batch_holding_a_later_message(
    redis: Redis, tmp_path: Path, fake_model: FakeModelServer
) -> None:
    # "a" is queued when the chat asks to stop; "b" is sent after. Under collect one
    # turn covers both: it must run, or "b" (sent after the stop) is never answered.
    settings = bus_settings(tmp_path, fake=fake_model, policy="collect")
    key = session_key("s2")
    await send(redis, settings, "s2", "a")
    assert await request_stop(redis, key) is not None
    await send(redis, settings, "s2", "b")
    fake_model.script(SLOW)
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis):
        await transcript.runs_ended(1)
    [ending] = transcript.terminals(key)
    assert isinstance(ending, RunCompleted), ending
    assert ending.content == SLOW.text
