"""The channel-agnostic deliverer against a real redis-server and a recording renderer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import cast

import pytest
from redis.asyncio import Redis

from gateway.channels.delivery import Deliverer, Outcome
from gateway.channels.delivery_run import SessionRenderer
from gateway.channels.render import FAILED_TEXT, SUPERSEDED_TEXT
from gateway.core.bus import keys
from gateway.core.bus.codec import encode
from gateway.core.bus.outbound import signal_delivery
from gateway.core.events import (
    RunCompleted,
    RunFailed,
    RunResult,
    RunStarted,
    StreamEvent,
    TextCompleted,
    TextDelta,
)
from gateway.metrics import GatewayMetrics
from tests.fakes.recording_renderer import RecordingRenderer
from tests.fakes.redis_server import redis, redis_server, redis_url  # noqa: F401

pytestmark = pytest.mark.integration


async def hash_of(redis: Redis, key: str) -> dict[str, str]:
    return await cast(Awaitable[dict[str, str]], redis.hgetall(key))


CHANNEL = "fake"
SESSION = "fake:chat-1"
RUN = "1700000000000-0"
PARTITIONS = 2


async def publish(redis: Redis, *events: StreamEvent, signal: bool = False) -> list[str]:
    ids = [await redis.xadd(keys.outbound(SESSION), {"d": encode(e)}) for e in events]
    if signal:
        await signal_delivery(redis, CHANNEL, SESSION, partitions=PARTITIONS)
    return ids


def started(run_id: str = RUN) -> RunStarted:
    return RunStarted(run_id=run_id, session_key=SESSION)


def completed(content: str, run_id: str = RUN) -> RunCompleted:
    return RunCompleted(run_id=run_id, content=content, result=RunResult(content=content))


def make_deliverer(
    redis: Redis, renderer: RecordingRenderer, consumer: str = "d1", **options: object
) -> Deliverer:
    return Deliverer(
        redis,
        CHANNEL,
        renderer,
        partitions=PARTITIONS,
        consumer=consumer,
        block_ms=200,
        **options,  # type: ignore[arg-type]
    )


async def test_streamed_reply_is_sent_once_then_edited(redis: Redis) -> None:
    renderer = RecordingRenderer()
    metrics = GatewayMetrics()
    deliverer = make_deliverer(redis, renderer, metrics=metrics)
    await deliverer.start()
    try:
        await publish(redis, started(), TextDelta(run_id=RUN, delta="Hel"), signal=True)
        await renderer.wait_until(lambda: renderer.texts() == ["Hel"])
        *_, last = await publish(
            redis,
            TextDelta(run_id=RUN, delta="lo"),
            TextCompleted(run_id=RUN, content="Hello"),
            completed("Hello"),
        )
        await renderer.wait_until(lambda: renderer.texts() == ["Hello"])
        await deliverer.wait_idle()
    finally:
        await deliverer.stop()
    assert renderer.sends == 1
    assert renderer.typings >= 1
    assert await redis.get(keys.deliver_cursor(SESSION)) == last
    assert await hash_of(redis, keys.sent_parts(SESSION)) == {f"{RUN}:0": "m1"}
    assert (
        metrics.registry.get_sample_value("gateway_messages_out_total", {"channel": CHANNEL}) == 1
    )
    # The signal was acked (and deleted), the lease released.
    assert await redis.xlen(keys.deliver(CHANNEL, keys.partition(SESSION, PARTITIONS))) == 0
    assert await redis.exists(keys.deliver_lease(SESSION)) == 0


async def test_long_final_text_edits_part_zero_and_sends_the_rest(redis: Redis) -> None:
    renderer = RecordingRenderer(max_message_chars=40)
    final = " ".join(f"w{i:03d}" for i in range(30))  # 149 characters
    deliverer = make_deliverer(redis, renderer)
    await publish(redis, started(), TextDelta(run_id=RUN, delta="w000 w001"))
    task = asyncio.create_task(deliverer.deliver_session(SESSION))
    await renderer.wait_until(lambda: renderer.texts() == ["w000 w001"])
    await publish(redis, TextCompleted(run_id=RUN, content=final), completed(final))
    assert await task is Outcome.DONE
    parts = renderer.texts()
    assert len(parts) == 5 and all(len(p) <= 40 for p in parts)
    assert " ".join(parts) == final
    assert renderer.sends == 5 and renderer.edits == 1  # the preview became part 0
    records = await hash_of(redis, keys.sent_parts(SESSION))
    assert records == {f"{RUN}:{i}": f"m{i + 1}" for i in range(5)}


async def test_redelivery_edits_the_recorded_messages(redis: Redis) -> None:
    renderer = RecordingRenderer(max_message_chars=40)
    final = " ".join(f"w{i:03d}" for i in range(20))
    await publish(redis, started(), TextCompleted(run_id=RUN, content=final), completed(final))
    deliverer = make_deliverer(redis, renderer)
    assert await deliverer.deliver_session(SESSION) is Outcome.DONE
    sends = renderer.sends
    # A crash before the cursor moved: the whole run is rendered again.
    await redis.delete(keys.deliver_cursor(SESSION))
    assert await deliverer.deliver_session(SESSION) is Outcome.DONE
    assert renderer.sends == sends
    assert renderer.edits >= sends
    assert " ".join(renderer.texts()) == final


async def test_rerun_replaces_the_partial_reply(redis: Redis) -> None:
    renderer = RecordingRenderer()
    deliverer = make_deliverer(redis, renderer)
    await publish(redis, started(), TextDelta(run_id=RUN, delta="a partial answ"))
    await publish(redis, started(), TextDelta(run_id=RUN, delta="The answer"), completed("x"))
    assert await deliverer.deliver_session(SESSION) is Outcome.DONE
    assert renderer.texts() == ["The answer"]


async def test_rerun_after_the_final_event_edits_instead_of_posting(redis: Redis) -> None:
    renderer = RecordingRenderer(max_message_chars=40)
    long_text = " ".join(f"w{i:03d}" for i in range(20))
    await publish(redis, started(), TextDelta(run_id=RUN, delta=long_text), completed(long_text))
    deliverer = make_deliverer(redis, renderer)
    assert await deliverer.deliver_session(SESSION) is Outcome.DONE
    assert renderer.sends == 3
    # The worker died after run.completed but before its commit: the turn re-runs.
    await publish(redis, started(), TextDelta(run_id=RUN, delta="short"), completed("short"))
    assert await deliverer.deliver_session(SESSION) is Outcome.DONE
    assert renderer.sends == 3
    assert renderer.texts() == ["short", SUPERSEDED_TEXT, SUPERSEDED_TEXT]


async def test_next_run_posts_a_new_message_and_forgets_old_records(redis: Redis) -> None:
    renderer = RecordingRenderer()
    deliverer = make_deliverer(redis, renderer)
    await publish(redis, started(), completed("one"))
    await publish(redis, started("1700000000001-0"), completed("two", "1700000000001-0"))
    assert await deliverer.deliver_session(SESSION) is Outcome.DONE
    assert renderer.texts() == ["one", "two"]
    assert await hash_of(redis, keys.sent_parts(SESSION)) == {"1700000000001-0:0": "m2"}


async def test_unreadable_entry_after_the_last_run_does_not_spin(redis: Redis) -> None:
    renderer = RecordingRenderer()
    deliverer = make_deliverer(redis, renderer)
    await publish(redis, started(), completed("one"))
    await redis.xadd(keys.outbound(SESSION), {"d": '{"type": "from.a.newer.version"}'})
    outcome = await asyncio.wait_for(deliverer.deliver_session(SESSION), timeout=10)
    assert outcome is Outcome.DONE
    assert renderer.texts() == ["one"]


async def test_failed_run_shows_a_clear_error(redis: Redis) -> None:
    renderer = RecordingRenderer()
    deliverer = make_deliverer(redis, renderer)
    await publish(redis, started(), TextDelta(run_id=RUN, delta="Working"))
    await publish(redis, RunFailed(run_id=RUN, error="model timed out"))
    assert await deliverer.deliver_session(SESSION) is Outcome.DONE
    [text] = renderer.texts()
    assert text.startswith("Working") and f"{FAILED_TEXT}: model timed out" in text


async def test_streaming_edits_are_throttled(redis: Redis) -> None:
    renderer = RecordingRenderer(edit_interval_s=3600.0)
    deliverer = make_deliverer(redis, renderer)
    await publish(redis, started(), TextDelta(run_id=RUN, delta="a"))
    task = asyncio.create_task(deliverer.deliver_session(SESSION))
    await renderer.wait_until(lambda: renderer.sends == 1)
    for delta in "bcdef":
        await publish(redis, TextDelta(run_id=RUN, delta=delta))
    await publish(redis, completed("abcdef"))
    assert await task is Outcome.DONE
    # Within one interval only the final text was edited in.
    assert renderer.edits == 1
    assert renderer.texts() == ["abcdef"]


async def test_the_channel_edit_interval_beats_the_renderer_default(redis: Redis) -> None:
    # channels.<name>.edit_interval (the setting) decides, not the renderer's attribute.
    renderer = RecordingRenderer(edit_interval_s=0.0)
    deliverer = make_deliverer(redis, renderer, edit_interval_s=3600.0)
    await publish(redis, started(), TextDelta(run_id=RUN, delta="a"))
    task = asyncio.create_task(deliverer.deliver_session(SESSION))
    await renderer.wait_until(lambda: renderer.sends == 1)
    for delta in "bcdef":
        await publish(redis, TextDelta(run_id=RUN, delta=delta))
    await publish(redis, completed("abcdef"))
    assert await task is Outcome.DONE
    assert renderer.edits == 1
    assert renderer.texts() == ["abcdef"]


async def test_second_deliverer_edits_after_the_first_is_killed_mid_run(redis: Redis) -> None:
    renderer = RecordingRenderer()
    first = make_deliverer(redis, renderer, consumer="first", claim_idle_ms=300)
    await first.start()
    await publish(redis, started(), TextDelta(run_id=RUN, delta="Hello"), signal=True)
    await renderer.wait_until(lambda: renderer.texts() == ["Hello"])
    await first.stop()  # mid-run: the signal was never acked
    # A crashed process keeps its lease until the ttl lapses.
    await redis.set(keys.deliver_lease(SESSION), "first:dead", px=300)

    second = make_deliverer(redis, renderer, consumer="second", claim_idle_ms=300)
    await second.start()
    try:
        await publish(redis, TextDelta(run_id=RUN, delta=", world"), completed("Hello, world"))
        await renderer.wait_until(lambda: renderer.texts() == ["Hello, world"])
    finally:
        await second.stop()
    assert renderer.sends == 1
    assert renderer.edits >= 1


async def test_platform_failure_is_retried_without_duplicates(redis: Redis) -> None:
    renderer = RecordingRenderer(fail_next_sends=1)
    deliverer = make_deliverer(redis, renderer, claim_idle_ms=200)
    await deliverer.start()
    try:
        await publish(redis, started(), completed("Answer"), signal=True)
        await renderer.wait_until(lambda: renderer.texts() == ["Answer"])
    finally:
        await deliverer.stop()
    assert renderer.sends == 1


async def test_concurrent_signals_for_a_busy_chat_are_not_lost(redis: Redis) -> None:
    renderer = RecordingRenderer()
    a = make_deliverer(redis, renderer, consumer="a")
    b = make_deliverer(redis, renderer, consumer="b")
    await a.start()
    await b.start()
    try:
        for i in range(5):
            run = f"17000000000{i:02d}-0"
            await publish(redis, started(run), completed(f"reply {i}", run), signal=True)
        await renderer.wait_until(lambda: len(renderer.texts()) == 5)
    finally:
        await a.stop()
        await b.stop()
    assert renderer.texts() == [f"reply {i}" for i in range(5)]
    assert renderer.sends == 5


async def test_deliverer_recreates_consumer_groups_that_redis_lost(redis: Redis) -> None:
    # Regression: a NOGROUP read (Redis restarted without its data) was retried forever
    # without recreating the groups, so the channel delivered nothing any more.
    renderer = RecordingRenderer()
    deliverer = make_deliverer(redis, renderer)
    await deliverer.start()
    try:
        await redis.delete(*deliverer.streams)
        await publish(redis, started(), completed("after the loss"), signal=True)
        await renderer.wait_until(lambda: renderer.texts() == ["after the loss"])
    finally:
        await deliverer.stop()
    assert renderer.sends == 1


async def test_run_published_during_an_empty_pass_is_not_missed(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pass that finds nothing new (a peer rendered it) while a worker publishes the
    # next run: that run's signal is turned away as BUSY (this pass holds the lease),
    # so this pass must look once more after its release.
    renderer = RecordingRenderer()
    deliverer = make_deliverer(redis, renderer)
    await publish(redis, started(), completed("one"))
    assert await deliverer.deliver_session(SESSION) is Outcome.DONE
    drain = SessionRenderer.drain
    later = "1700000000001-0"

    async def drain_then_publish(self: SessionRenderer, after: str) -> bool:
        drained = await drain(self, after)
        monkeypatch.setattr(SessionRenderer, "drain", drain)  # only once
        await publish(redis, started(later), completed("two", later))
        return drained

    monkeypatch.setattr(SessionRenderer, "drain", drain_then_publish)
    assert await deliverer.deliver_session(SESSION) is Outcome.DONE
    assert renderer.texts() == ["one", "two"]
