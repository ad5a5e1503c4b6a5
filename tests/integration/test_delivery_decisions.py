"""The deliverer's ack decisions, and platform calls that never return."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import cast

import pytest
from redis.asyncio import Redis

from gateway.channels.delivery import AckDecision, Deliverer, Outcome, decide_ack
from gateway.core.bus import keys
from gateway.core.bus.signals import Signal, ensure_groups, read_signals
from gateway.core.events import TextDelta
from gateway.core.settings import WorkerSettings
from tests.fakes.recording_renderer import RecordingRenderer
from tests.integration.test_delivery import (
    CHANNEL,
    PARTITIONS,
    RUN,
    SESSION,
    completed,
    make_deliverer,
    publish,
    started,
)

pytestmark = pytest.mark.integration

MAX = WorkerSettings().max_deliveries


@pytest.mark.parametrize(
    ("outcome", "times", "decision"),
    [
        (Outcome.DONE, 1, AckDecision.ACK),
        (Outcome.DONE, MAX, AckDecision.ACK),
        (Outcome.BUSY, 1, AckDecision.ACK),  # the live holder drains it
        (Outcome.BUSY, 2, AckDecision.LEAVE_PENDING),  # the holder may have died
        (Outcome.RETRY, 1, AckDecision.LEAVE_PENDING),
        (Outcome.RETRY, MAX - 1, AckDecision.LEAVE_PENDING),
        (Outcome.RETRY, MAX, AckDecision.GIVE_UP),
        # A dead holder's lease may outlast max_deliveries claims: never give up on BUSY.
        (Outcome.BUSY, MAX, AckDecision.LEAVE_PENDING),
        (Outcome.BUSY, MAX + 5, AckDecision.LEAVE_PENDING),
    ],
)
def test_decide_ack(outcome: Outcome, times: int, decision: AckDecision) -> None:
    assert decide_ack(outcome, times, MAX) is decision


def test_worker_and_deliverer_share_one_max_deliveries() -> None:
    deliverer = Deliverer(
        cast(Redis, None), CHANNEL, RecordingRenderer(), partitions=1, consumer="c"
    )
    assert deliverer.max_deliveries == WorkerSettings().max_deliveries == 3


async def one_signal(redis: Redis, deliverer: Deliverer, times_delivered: int) -> Signal:
    """The pending signal ``publish(..., signal=True)`` wrote, as handed out that often."""
    await ensure_groups(redis, deliverer.streams, keys.DELIVER_GROUP)
    [signal] = await read_signals(
        redis, deliverer.streams, keys.DELIVER_GROUP, "c", count=10, block_ms=100
    )
    return dataclasses.replace(signal, times_delivered=times_delivered)


async def pending(redis: Redis) -> int:
    stream = keys.deliver(CHANNEL, keys.partition(SESSION, PARTITIONS))
    summary = await redis.xpending(stream, keys.DELIVER_GROUP)
    return cast(int, summary["pending"])


@pytest.mark.parametrize(("times", "left_pending"), [(1, 0), (2, 1)])
async def test_busy_acks_a_fresh_signal_and_keeps_a_claimed_one(
    redis: Redis, times: int, left_pending: int
) -> None:
    renderer = RecordingRenderer()
    deliverer = make_deliverer(redis, renderer)
    await publish(redis, started(), completed("hi"), signal=True)
    await redis.set(keys.deliver_lease(SESSION), "other:holder", px=60_000)
    await deliverer.handle(await one_signal(redis, deliverer, times))
    assert await pending(redis) == left_pending
    assert renderer.sends == 0


async def test_a_silent_run_is_retried_then_given_up(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    renderer = RecordingRenderer()
    deliverer = make_deliverer(redis, renderer, idle_timeout_s=0.05)
    await publish(redis, started(), TextDelta(run_id=RUN, delta="thinking"), signal=True)
    assert await deliverer.deliver_session(SESSION) is Outcome.RETRY
    signal = await one_signal(redis, deliverer, MAX - 1)
    await deliverer.handle(signal)
    assert await pending(redis) == 1  # another delivery will try again
    with caplog.at_level(logging.ERROR, logger="gateway.channels.delivery"):
        await deliverer.handle(dataclasses.replace(signal, times_delivered=MAX))
    assert await pending(redis) == 0
    assert f"giving up delivering {SESSION} to {CHANNEL} after {MAX} deliveries" in caplog.text
    assert renderer.texts() == ["thinking"]


async def test_a_hung_platform_send_does_not_block_stop(redis: Redis) -> None:
    # Regression: a send that never returned kept Deliverer.stop() waiting forever.
    renderer = RecordingRenderer(hang_sends=True)
    deliverer = make_deliverer(redis, renderer, render_timeout_s=0.5)
    await deliverer.start()
    await publish(redis, started(), completed("never shown"), signal=True)
    await renderer.wait_until(lambda: renderer.send_attempts == 1)
    async with asyncio.timeout(20):
        await deliverer.stop()
    assert await pending(redis) == 1  # unfinished: left for another delivery
    assert renderer.sends == 0


async def test_a_hung_platform_send_fails_the_delivery(redis: Redis) -> None:
    renderer = RecordingRenderer(hang_sends=True)
    deliverer = make_deliverer(redis, renderer, render_timeout_s=0.1)
    await publish(redis, started(), completed("never shown"), signal=True)
    signal = await one_signal(redis, deliverer, 1)
    async with asyncio.timeout(20):
        await deliverer.handle(signal)
    assert await pending(redis) == 1
    assert await redis.exists(keys.deliver_lease(SESSION)) == 0  # released, not held
