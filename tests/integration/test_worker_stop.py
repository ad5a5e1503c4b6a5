"""Stopping a worker, and holders that stop without draining: nothing left stranded
(pending with no signal and no lease holder), no attempt counted for a turn not run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.core.bus import keys
from gateway.core.bus.inbound import read_cursor
from gateway.core.bus.lease import Lease
from gateway.core.events import TextDelta
from gateway.core.metrics import GatewayMetrics
from gateway.core.sessions.redis import RedisSessionStore
from gateway.core.sessions.redis_form import StoredSession
from gateway.workers import busy
from gateway.workers.begin import COMPACTOR_OWNER
from gateway.workers.worker import Worker
from tests.fakes.openai_server import FakeModelServer, Reply
from tests.integration.test_worker_kit import (
    Transcript,
    bus_settings,
    running_workers,
    runtime_for,
    send,
    session_key,
)


def streaming(t: Transcript, key: str) -> bool:
    return any(isinstance(e, TextDelta) for e in t.events[key])


async def test_a_worker_stopping_mid_turn_counts_no_attempt_for_the_next_message(
    redis: Redis, tmp_path: Path, fake_model: FakeModelServer
) -> None:
    settings = bus_settings(tmp_path, fake=fake_model)
    fake_model.script(Reply(text="slow words " * 10, chunk_delay_s=0.05, chunk_size=4))
    key = session_key("leaving")
    transcript = Transcript(redis, [key])
    metrics = GatewayMetrics()
    async with running_workers(settings, redis, name="leaving") as (leaving,):
        first = await send(redis, settings, "leaving", "one")
        second = await send(redis, settings, "leaving", "two")
        await transcript.until(lambda t: streaming(t, key))
        await leaving.stop(grace_s=30)  # the running turn ends and commits; no more
        assert await read_cursor(redis, key) == first
        # The commit found "two" pending after the stop began: it will not run here,
        # so its attempt is not counted (the next worker's would be its second).
        assert await redis.hget(keys.attempts(key), second) is None  # type: ignore[misc]
    async with running_workers(settings, redis, name="next", metrics=metrics):
        await transcript.runs_ended(2)
    assert [e.run_id for e in transcript.terminals(key)] == [first, second]
    assert metrics.registry.get_sample_value("gateway_redeliveries_total") == 0


async def test_a_stopping_worker_whose_hand_off_failed_keeps_its_signal(
    redis: Redis, tmp_path: Path, fake_model: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = bus_settings(tmp_path, fake=fake_model)
    fake_model.script(Reply(text="slow words " * 10, chunk_delay_s=0.05, chunk_size=4))
    key = session_key("handoff")
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis, name="leaving") as (leaving,):
        await send(redis, settings, "handoff", "one")
        second = await send(redis, settings, "handoff", "two")
        await transcript.until(lambda t: streaming(t, key))

        async def refused(*_: object, **__: object) -> str:
            raise RedisConnectionError("the hand-off's write was lost")

        monkeypatch.setattr(busy, "signal_ready", refused)
        await leaving.stop(grace_s=30)
        monkeypatch.undo()
    # "two" has no lease holder and no fresh signal: the old one must stay pending.
    stream = keys.ready(keys.partition(key, settings.worker.ready_partitions))
    assert (await redis.xpending(stream, keys.WORKER_GROUP))["pending"] == 1
    async with running_workers(settings, redis, name="next"):
        await transcript.runs_ended(2, seconds=15)
    assert transcript.terminals(key)[-1].run_id == second


class _StuckParse(RedisSessionStore):
    """A store whose parse of what BEGIN_TURN read never ends: a stop's cancel lands
    after the script granted the lease, before the worker holds it."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis)
        self.entered = asyncio.Event()

    async def parse(self, *_: Any) -> StoredSession | None:
        self.entered.set()
        await asyncio.get_running_loop().create_future()  # cancelled by the stop
        return None


async def test_a_begin_cancelled_by_a_stop_lets_the_lease_go(
    redis: Redis, tmp_path: Path, fake_model: FakeModelServer
) -> None:
    # No claim within the test: only the stop's hand-off can bring the message back.
    settings = bus_settings(tmp_path, fake=fake_model, claim_idle_ms=60_000)
    key = session_key("cut")
    stuck = _StuckParse(redis)
    runtime = runtime_for(settings, redis)
    worker = Worker(settings, redis, runtime, worker_id="leaving", sessions=stuck)
    async with worker:
        entry = await send(redis, settings, "cut", "hello")
        await stuck.entered.wait()
        assert await redis.exists(keys.lease(key))
        await worker.stop(grace_s=0.05)
    await runtime.aclose()
    # Free at once: the stop's hand-off is taken now, not after the ttl and a claim.
    assert await redis.exists(keys.lease(key)) == 0
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis, name="next"):
        await transcript.runs_ended(1, seconds=10)
    assert transcript.terminals(key)[0].run_id == entry


async def test_a_message_sent_while_a_killed_compactor_held_the_session_is_answered(
    redis: Redis, tmp_path: Path
) -> None:
    settings = bus_settings(tmp_path, lease_ms=1000, claim_idle_ms=1000)
    key = session_key("compacted")
    # The idle compaction job took the session and was killed: its lease lapses, and
    # nobody will hand the session off.
    compactor = await Lease.acquire(redis, keys.lease(key), ttl_ms=3000, owner=COMPACTOR_OWNER)
    assert compactor is not None
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis):
        entry = await send(redis, settings, "compacted", "hello")
        await transcript.runs_ended(1, seconds=15)
    assert transcript.terminals(key)[0].run_id == entry
