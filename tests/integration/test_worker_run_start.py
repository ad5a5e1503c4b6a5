"""A turn that ends before its lingering ``run.started`` went out (stop, interrupt,
dead letter) still shows the chat a whole run and wakes its deliverer."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.control import request_stop
from gateway.core.events import RunFailed, RunStarted, StreamEvent
from gateway.core.settings import Settings
from tests.fakes.openai_server import FakeModelServer, Reply
from tests.integration.test_worker_kit import (
    CHANNEL,
    Transcript,
    bus_settings,
    running_workers,
    send,
    session_key,
)

LINGER_MS = 3_600_000
"""run.started waits for company all along: the turn ends while it is unpublished."""
SILENT = Reply(hang=True)
"""The model answers with nothing (a role chunk) until the turn is cancelled."""
DELIVERED = frozenset({CHANNEL})


async def until_called(fake: FakeModelServer, count: int = 1) -> None:
    """Polls: the fake server tells no one when a request arrives."""
    async with asyncio.timeout(20):
        for _ in itertools.count():
            if len(fake.requests) >= count:
                return
            await asyncio.sleep(0.01)


async def signals_of(redis: Redis, settings: Settings, key: str) -> int:
    p = keys.partition(key, settings.worker.ready_partitions)
    entries = await redis.xrange(keys.deliver(CHANNEL, p))
    return sum(1 for _, fields in entries if key in fields.values())


def run_events(events: list[StreamEvent], run_id: str) -> list[str]:
    return [e.type for e in events if e.run_id == run_id]


async def test_a_stop_before_run_started_went_out_still_starts_the_run(
    redis: Redis, tmp_path: Path, fake_model: FakeModelServer
) -> None:
    settings = bus_settings(tmp_path, fake=fake_model, start_linger_ms=LINGER_MS)
    fake_model.script(SILENT)
    key = session_key("stop")
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis, deliver_channels=DELIVERED):
        run_id = await send(redis, settings, "stop", "hello")
        await until_called(fake_model)
        assert await request_stop(redis, key) == run_id
        await transcript.runs_ended(1)
    assert run_events(transcript.events[key], run_id) == ["run.started", "run.failed"]
    started = transcript.events[key][0]
    assert isinstance(started, RunStarted) and started.message_ids == [run_id]
    assert await signals_of(redis, settings, key) == 1  # the deliverer is woken


async def test_a_quick_final_failure_is_dead_lettered_as_a_whole_run(
    redis: Redis, tmp_path: Path, fake_model: FakeModelServer
) -> None:
    settings = bus_settings(tmp_path, fake=fake_model, start_linger_ms=LINGER_MS, max_deliveries=1)
    fake_model.script(Reply(status=500, error_message="model down"))
    key = session_key("dead")
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis, deliver_channels=DELIVERED):
        run_id = await send(redis, settings, "dead", "hello")
        await transcript.runs_ended(1)
    assert run_events(transcript.events[key], run_id) == ["run.started", "run.failed"]
    [ending] = transcript.terminals(key)
    assert isinstance(ending, RunFailed) and ending.metadata.get("dead_lettered")
    assert await signals_of(redis, settings, key) == 1


async def test_an_interrupt_before_run_started_went_out_still_starts_the_run(
    redis: Redis, tmp_path: Path, fake_model: FakeModelServer
) -> None:
    settings = bus_settings(
        tmp_path, fake=fake_model, policy="interrupt", start_linger_ms=LINGER_MS
    )
    fake_model.script(SILENT)
    key = session_key("interrupt")
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis, deliver_channels=DELIVERED):
        first = await send(redis, settings, "interrupt", "one")
        await until_called(fake_model)
        await send(redis, settings, "interrupt", "two")
        await transcript.runs_ended(2)
    assert run_events(transcript.events[key], first) == ["run.started", "run.failed"]
    assert await signals_of(redis, settings, key) == 2  # one per run
