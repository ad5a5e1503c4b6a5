"""Second reader's regressions for the outage re-run (``workers.outage``), on a real
redis-server: a Redis that answers with an error is not an outage, re-runs are bounded,
and a re-run keeps the signal pending when it finds the session held."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.core.bus import keys
from gateway.core.bus.signals import Signal, read_signals
from gateway.core.settings import Settings
from gateway.workers.outage import MAX_RERUNS, UnreleasedGrants
from gateway.workers.worker import Worker, _Handled
from tests.integration.test_worker_kit import bus_settings, runtime_for, send, session_key

pytestmark = pytest.mark.integration

GIVE_UP_S = 30.0
"""Generous: before the fixes these handlings never returned."""


@asynccontextmanager
async def idle_worker(settings: Settings, redis: Redis) -> AsyncIterator[Worker]:
    """A worker whose groups exist but that reads nothing itself: the test hands it one
    signal (``Worker._handle``) and sees how that handling ends."""
    runtime = runtime_for(settings, redis)
    worker = Worker(settings, redis, runtime, worker_id="w0")
    await worker.initialize()
    try:
        yield worker
    finally:
        await worker.shutdown()
        await runtime.aclose()


async def one_signal(redis: Redis, settings: Settings) -> Signal:
    streams = [keys.ready(p) for p in range(settings.worker.ready_partitions)]
    signals = await read_signals(redis, streams, keys.WORKER_GROUP, "w0", count=10, block_ms=100)
    assert len(signals) == 1
    return signals[0]


async def pending_count(redis: Redis, settings: Settings) -> int:
    total = 0
    for p in range(settings.worker.ready_partitions):
        info = await redis.xpending(keys.ready(p), keys.WORKER_GROUP)
        total += int(info["pending"])
    return total


async def test_an_error_redis_answers_with_is_not_retried_as_an_outage(
    tmp_path: Path, redis: Redis
) -> None:
    # Regression: a ResponseError (here WRONGTYPE in BEGIN_TURN; the same for OOM,
    # READONLY, a script bug) is a RedisError, so the drain was "re-run once Redis
    # answers": PING answers at once, and the handling spun at full speed forever,
    # holding its slot and keeping its signal claimed so no peer could take it.
    settings = bus_settings(tmp_path)
    async with idle_worker(settings, redis) as worker:
        await send(redis, settings, "wrongtype", "hi")
        await redis.hset(keys.cursor(session_key("wrongtype")), "not", "a string")
        sig = await one_signal(redis, settings)
        async with asyncio.timeout(GIVE_UP_S):
            await worker._handle(sig)
    assert await pending_count(redis, settings) == 1  # left for claim_stale
    assert await redis.get(keys.lease(session_key("wrongtype"))) is None


async def test_re_runs_after_outages_are_bounded(
    tmp_path: Path, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: a connection that fails on every drain while PING works (a client
    # output buffer limit, a proxy cutting long replies) was re-run forever.
    settings = bus_settings(tmp_path)
    async with idle_worker(settings, redis) as worker:
        calls: list[Signal] = []

        async def cut_off(sig: Signal, *_: object) -> _Handled:
            calls.append(sig)
            raise RedisConnectionError("connection reset by the server")

        monkeypatch.setattr(worker, "_drain_session", cut_off)
        await send(redis, settings, "cut", "hi")
        sig = await one_signal(redis, settings)
        async with asyncio.timeout(GIVE_UP_S):
            await worker._handle(sig)
    assert len(calls) == MAX_RERUNS + 1
    assert await pending_count(redis, settings) == 1


async def test_a_re_run_that_finds_the_session_held_keeps_the_signal(
    tmp_path: Path, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: the re-run passed the fresh signal to BEGIN_TURN unchanged, so a
    # session held when Redis came back (a grant whose token the outage lost, a holder
    # that died meanwhile) had the signal acked "for the holder, which drains": nobody
    # drained, and the chat's message waited for its next message.
    settings = bus_settings(tmp_path, lease_ms=600_000)
    key = session_key("held")
    async with idle_worker(settings, redis) as worker:
        drain = worker._drain_session
        calls: list[Signal] = []

        async def first_cut_off(sig: Signal, *args: object) -> _Handled:
            calls.append(sig)
            if len(calls) == 1:
                # The outage: and the lease is a holder's that will never drain.
                await redis.set(keys.lease(key), "dead-holder:token", px=600_000)
                raise RedisConnectionError("Connection closed by server.")
            return await drain(sig, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(worker, "_drain_session", first_cut_off)
        await send(redis, settings, "held", "hi")
        sig = await one_signal(redis, settings)
        assert not sig.claimed
        async with asyncio.timeout(GIVE_UP_S):
            await worker._handle(sig)
    assert await pending_count(redis, settings) == 1  # still stands for the message
    assert len(calls) == 2 and calls[1].claimed


async def test_a_worker_stopping_when_redis_is_back_hands_the_cut_session_off(
    tmp_path: Path, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: a stop during the outage ended the wait without asking Redis once, so
    # the cut session's signal stayed pending (and its grant held) until claim_idle_ms,
    # though Redis answered and a peer could have taken it over at once.
    settings = bus_settings(tmp_path, claim_idle_ms=600_000)
    async with idle_worker(settings, redis) as worker:

        async def cut_off_while_stopping(sig: Signal, *_: object) -> _Handled:
            worker._stopping = True  # stop() was called during the outage
            raise RedisConnectionError("Connection closed by server.")

        monkeypatch.setattr(worker, "_drain_session", cut_off_while_stopping)
        await send(redis, settings, "stopping", "hi")
        sig = await one_signal(redis, settings)
        async with asyncio.timeout(GIVE_UP_S):
            await worker._handle(sig)
        assert await pending_count(redis, settings) == 0  # acked: a fresh signal stands
        fresh = await one_signal(redis, settings)
    assert fresh.session_key == sig.session_key and fresh.id != sig.id


async def test_a_stop_cancelling_the_wait_for_redis_lets_the_grants_go(
    tmp_path: Path, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: a stop past its grace cancelled the wait for Redis with the cut drain's
    # grant still held: the stop's hand-off signal then found the session held by nobody
    # (acked "for the holder") and the chat waited for claim_idle_ms.
    settings = bus_settings(tmp_path, lease_ms=600_000)
    key = session_key("cancel")
    async with idle_worker(settings, redis) as worker:
        cut = asyncio.Event()

        async def cut_off(sig: Signal, grants: UnreleasedGrants) -> _Handled:
            await redis.set(keys.lease(key), "w0:held-when-cut", px=600_000)
            grants.remember("w0:held-when-cut")  # its release failed with the outage
            cut.set()
            raise RedisConnectionError("Connection closed by server.")

        async def no_answer() -> None:
            raise RedisConnectionError("Connection refused.")  # Redis not back yet for PING

        monkeypatch.setattr(worker, "_drain_session", cut_off)
        monkeypatch.setattr(worker.redis, "ping", no_answer)
        await send(redis, settings, "cancel", "hi")
        sig = await one_signal(redis, settings)
        job = asyncio.create_task(worker._handle(sig))
        await cut.wait()
        await asyncio.sleep(0)  # into the wait for Redis
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
    assert await redis.get(keys.lease(key)) is None


async def test_turns_cut_off_again_and_again_end_dead_lettered(
    tmp_path: Path, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each re-run's BEGIN_TURN counts an attempt, so outages in every turn of a message
    # end in the dead letter after max_deliveries, not in a loop of re-runs and claims.
    settings = bus_settings(tmp_path, max_deliveries=3)
    async with idle_worker(settings, redis) as worker:
        turns: list[object] = []

        async def cut_off_mid_turn(*args: object, **kwargs: object) -> object:
            turns.append(args)
            raise RedisConnectionError("Connection closed by server.")

        monkeypatch.setattr("gateway.workers.worker.drain_turns", cut_off_mid_turn)
        await send(redis, settings, "again", "hi")
        sig = await one_signal(redis, settings)
        async with asyncio.timeout(GIVE_UP_S):
            await worker._handle(sig)  # the first run and MAX_RERUNS re-runs, all cut off
        assert len(turns) == MAX_RERUNS + 1
        monkeypatch.undo()
        claimed = Signal(sig.stream, sig.id, sig.session_key, sig.channel, times_delivered=2)
        async with asyncio.timeout(GIVE_UP_S):
            await worker._handle(claimed)  # as claim_stale would hand it over
    assert await redis.xlen(keys.DEAD_LETTER) == 1
    assert await pending_count(redis, settings) == 0
