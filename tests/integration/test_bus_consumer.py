"""The one consumer loop under a Redis outage, as the deliverer and the worker run it."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.channels.delivery import Deliverer
from gateway.core.bus.client import RedisTarget
from gateway.core.bus.consumer import SignalConsumer
from gateway.core.bus.signals import Signal, ack, claim_stale, read_signals, signal
from gateway.core.settings import RedisSettings
from gateway.workers.worker import Worker
from tests.fakes.recording_renderer import RecordingRenderer
from tests.fakes.redis_server import RedisServer
from tests.integration.test_worker_kit import bus_settings, runtime_for

pytestmark = pytest.mark.integration

Running = Callable[[Redis, Path], AbstractAsyncContextManager[object]]


class _Records(logging.Handler):
    """Keeps the records of the bus and channel loggers; ``wait`` for one that matches."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()

    def count(self, text: str) -> int:
        return sum(text in r.getMessage() for r in self.records)

    async def wait(self, text: str, times: int = 1) -> None:
        async with asyncio.timeout(30):
            while self.count(text) < times:
                self._changed.clear()
                await self._changed.wait()

    def loud(self) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno >= logging.WARNING]


@asynccontextmanager
async def _deliverer(redis: Redis, tmp_path: Path) -> AsyncIterator[object]:
    deliverer = Deliverer(
        redis, "fake", RecordingRenderer(), partitions=2, consumer="d1", claim_idle_ms=1000
    )
    await deliverer.start()
    try:
        yield deliverer
    finally:
        await deliverer.stop()


@asynccontextmanager
async def _worker(redis: Redis, tmp_path: Path) -> AsyncIterator[object]:
    settings = bus_settings(tmp_path, claim_idle_ms=1000)
    runtime = runtime_for(settings, redis)
    try:
        async with Worker(settings, redis, runtime, worker_id="w1") as worker:
            yield worker
    finally:
        await runtime.aclose()


@pytest.mark.parametrize("running", [_deliverer, _worker], ids=["deliverer", "worker"])
async def test_an_outage_is_logged_once_and_its_end_once(running: Running, tmp_path: Path) -> None:
    # Regression: the deliverer logged a full traceback every second while Redis was down.
    server = RedisServer(data_dir=tmp_path).start()
    redis = RedisTarget(RedisSettings(), server.url, "config").client()
    records = _Records()
    loggers = [
        logging.getLogger(name)
        for name in ("gateway.core.bus", "gateway.channels", "gateway.workers")
    ]
    for logger in loggers:
        logger.addHandler(records)
        logger.setLevel(logging.DEBUG)
    try:
        async with running(redis, tmp_path):
            server.stop()
            await records.wait("Redis failed again", times=4)  # backing off, quietly
            server.start()
            await records.wait("Redis answers again")
    finally:
        for logger in loggers:
            logger.removeHandler(records)
            logger.setLevel(logging.NOTSET)
        await redis.aclose()
        server.close()
    loud = [r.getMessage() for r in records.loud()]
    assert sum("Redis failed (" in text for text in loud) == 1, loud
    assert sum("Redis answers again" in text for text in loud) == 1, loud
    during = [r for r in records.loud() if "Redis" not in r.getMessage()]
    assert [r.getMessage() for r in during if r.exc_info] == []


async def test_a_full_consumer_leaves_signals_in_the_stream_for_its_peers(redis: Redis) -> None:
    streams = ["gw:test:signals"]
    release = asyncio.Event()
    started: list[str] = []
    one_started = asyncio.Event()

    async def job(signal: Signal) -> None:
        started.append(signal.session_key)
        one_started.set()
        await release.wait()
        await ack(redis, signal, "g")

    consumer = SignalConsumer(
        redis, streams, "g", "busy", job, concurrency=1, claim_idle_ms=60_000, block_ms=100
    )
    await consumer.ensure_groups()
    consumer.start()
    try:
        for name in ("a", "b"):
            await signal(redis, streams[0], name, "test")
        async with asyncio.timeout(10):
            await one_started.wait()
        # The one slot is taken: "b" is not read by this consumer, a peer gets it.
        peer = await read_signals(redis, streams, "g", "peer", count=10, block_ms=100)
        assert [s.session_key for s in peer] == ["b"]
        assert started == ["a"]
        release.set()
        await consumer.wait_idle()
    finally:
        unfinished = await consumer.stop()
    assert unfinished == []
    summary = await redis.xpending(streams[0], "g")
    assert summary["pending"] == 1  # the peer's, never acked: stop() acks nothing


async def test_stale_signals_are_not_starved_by_a_steady_inflow(redis: Redis) -> None:
    # Regression (make chaos, 10,000 messages: p99 time to reply of 11 minutes): the claim
    # timer found no free slot whenever it woke, because every freed slot went to a new
    # signal at once; a killed worker's sessions waited until the inflow stopped.
    streams = ["gw:test:starve"]
    await redis.xgroup_create(streams[0], "g", id="0", mkstream=True)
    await signal(redis, streams[0], "stale", "test")
    [left] = await read_signals(redis, streams, "g", "dead", count=1, block_ms=100)
    assert left.session_key == "stale"  # pending for a consumer that will never ack it
    fresh = 60
    for i in range(fresh):
        await signal(redis, streams[0], f"fresh-{i}", "test")
    handled: list[str] = []
    done = asyncio.Event()

    async def job(signal: Signal) -> None:
        await asyncio.sleep(0.01)  # a turn in progress holds the one slot
        handled.append(signal.session_key)
        await ack(redis, signal, "g")
        if len(handled) == fresh + 1:
            done.set()

    consumer = SignalConsumer(
        redis, streams, "g", "live", job, concurrency=1, claim_idle_ms=40, block_ms=100
    )
    consumer.start()
    try:
        async with asyncio.timeout(30):
            await done.wait()
    finally:
        await consumer.stop()
    # The claim timer fires every 20 ms; the stale signal must be taken at the first free
    # slot after that, long before the 60 fresh ones (10 ms each) are through.
    assert handled.index("stale") < fresh // 2, handled


async def test_a_running_job_is_not_claimed_however_long_it_takes(redis: Redis) -> None:
    # Regression (make chaos on a busy machine: replies minutes late): a job running
    # longer than claim_idle_ms looked dead to XAUTOCLAIM, so peers (and its own
    # consumer) claimed its signal again and again, ahead of new work.
    streams = ["gw:test:long"]
    await redis.xgroup_create(streams[0], "g", id="0", mkstream=True)
    started, release = asyncio.Event(), asyncio.Event()
    ticks = 0
    ticked = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        ticks += 1
        ticked.set()

    async def job(signal: Signal) -> None:
        started.set()
        await release.wait()
        await ack(redis, signal, "g")

    consumer = SignalConsumer(
        redis, streams, "g", "live", job, concurrency=1, claim_idle_ms=200, block_ms=100, tick=tick
    )
    consumer.start()
    try:
        sent = await signal(redis, streams[0], "long", "test")
        async with asyncio.timeout(10):
            await started.wait()
        # As if the job had run for ten minutes already.
        await redis.xclaim(streams[0], "g", "live", 0, [sent], idle=600_000, justid=True)
        seen = ticks
        async with asyncio.timeout(10):
            while ticks < seen + 2:  # a whole claim round after the change
                ticked.clear()
                await ticked.wait()
        peer = await claim_stale(redis, streams, "g", "peer", min_idle_ms=60_000, count=10)
        assert [s.session_key for s in peer] == []
        release.set()
        await consumer.wait_idle()
    finally:
        await consumer.stop()
    assert (await redis.xpending(streams[0], "g"))["pending"] == 0


async def _blocked_readers(redis: Redis) -> int:
    clients = await redis.client_list()
    return sum(1 for client in clients if client.get("cmd") == "xreadgroup")


async def _until_a_read_blocks(redis: Redis) -> None:
    """Polls CLIENT LIST: Redis tells no one when a client blocks."""
    async with asyncio.timeout(10):
        for _ in itertools.count():
            if await _blocked_readers(redis):
                return
            await asyncio.sleep(0.01)


async def test_a_stop_handles_what_the_read_in_flight_returned(redis: Redis) -> None:
    # Regression: stop() cancelled the XREADGROUP in flight. A signal Redis had already
    # delivered (now pending for this consumer) was dropped with the reply and waited
    # claim_idle_ms (a minute) for a peer: a message sent as a worker stopped.
    streams = ["gw:test:signals"]
    handled: list[str] = []

    async def job(signal: Signal) -> None:
        handled.append(signal.session_key)
        await ack(redis, signal, "g")

    consumer = SignalConsumer(
        redis, streams, "g", "c1", job, concurrency=4, claim_idle_ms=60_000, block_ms=30_000
    )
    await consumer.ensure_groups()
    consumer.start()
    try:
        await _until_a_read_blocks(redis)
        # The XADD is on the wire (sent, its reply not read) when stop() begins: Redis
        # hands the signal to the blocked read while the consumer is stopping.
        sent = asyncio.create_task(signal(redis, streams[0], "late", "test"))
        await asyncio.sleep(0)
    finally:
        async with asyncio.timeout(10):  # a 30 s block: the stop wakes it, not waits it out
            unfinished = await consumer.stop(grace_s=5.0)
    await sent
    assert unfinished == []
    assert handled == ["late"]
    assert (await redis.xpending(streams[0], "g"))["pending"] == 0


async def test_a_stop_wakes_an_idle_blocked_read(redis: Redis) -> None:
    streams = ["gw:test:signals"]

    async def job(signal: Signal) -> None:
        raise AssertionError(f"no signal was sent: {signal}")

    consumer = SignalConsumer(
        redis, streams, "g", "c1", job, concurrency=1, claim_idle_ms=60_000, block_ms=60_000
    )
    await consumer.ensure_groups()
    consumer.start()
    await _until_a_read_blocks(redis)
    async with asyncio.timeout(10):
        assert await consumer.stop() == []  # woken: well within the 60 s block
    assert await _blocked_readers(redis) == 0
    assert not consumer.running


async def _blocked_reader_id(redis: Redis, *, not_: int | None = None) -> int:
    async with asyncio.timeout(10):
        for _ in itertools.count():
            for client in await redis.client_list():
                if client.get("cmd") == "xreadgroup" and int(client["id"]) != not_:
                    return int(client["id"])
            await asyncio.sleep(0.01)
    raise AssertionError("unreachable")


async def test_a_stop_wakes_a_read_the_client_re_sent_on_a_new_connection(
    redis: Redis, redis_url: str
) -> None:
    # Regression: with redis.retries, a dropped connection is re-made and the blocked
    # XREADGROUP re-sent inside the command, unseen by the consumer: it kept the old
    # CLIENT ID, its stop's CLIENT UNBLOCK woke nobody, and the stop sat out the block.
    retrying = Redis.from_url(
        redis_url,
        decode_responses=True,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
    )
    streams = ["gw:test:signals"]

    async def job(signal: Signal) -> None:
        raise AssertionError(f"no signal was sent: {signal}")

    consumer = SignalConsumer(
        retrying, streams, "g", "c1", job, concurrency=1, claim_idle_ms=60_000, block_ms=60_000
    )
    try:
        await consumer.ensure_groups()
        consumer.start()
        first = await _blocked_reader_id(redis)
        await redis.client_kill_filter(_id=str(first))
        await _blocked_reader_id(redis, not_=first)  # re-sent on a new connection
        async with asyncio.timeout(10):  # a 60 s block: only a wake ends it in time
            assert await consumer.stop() == []
    finally:
        await consumer.abort()
        await retrying.aclose()
