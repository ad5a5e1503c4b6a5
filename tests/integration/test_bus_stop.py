"""Stop requests (``core.bus.control``) against a real redis-server, a worker and the fake model."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.core.bus import control
from gateway.core.bus.control import request_stop
from gateway.core.bus.inbound import read_cursor
from gateway.core.events import RunCompleted, RunFailed, TextDelta
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


async def test_a_message_steered_in_after_the_stop_is_answered(
    redis: Redis, tmp_path: Path, fake_model: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "second" is sent after the stop and steered into the running turn before the
    # worker's next look at the stop stream: the stopped turn must not commit it.
    monkeypatch.setattr(control, "STOP_POLL_S", 1.0)  # the steer comes before the poll
    settings = bus_settings(tmp_path, fake=fake_model, policy="steer")
    key = session_key("s3")
    fake_model.script(
        Reply(text="looking", tool_calls=[("lookup", {})], chunk_delay_s=0.05, chunk_size=1),
        Reply(text="never ends", hang=True),
        Reply(text="the answer to second"),
    )
    first = await send(redis, settings, "s3", "first")
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis):
        await transcript.until(lambda t: any(isinstance(e, TextDelta) for e in t.events[key]))
        assert await request_stop(redis, key) == first
        second = await send(redis, settings, "s3", "second")
        await transcript.runs_ended(2)
    stopped, answered = transcript.terminals(key)
    assert isinstance(stopped, RunFailed) and stopped.message_ids == [first]
    assert isinstance(answered, RunCompleted) and answered.message_ids == [second]
    assert answered.content == "the answer to second"
    assert await read_cursor(redis, key) == second
