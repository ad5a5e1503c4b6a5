"""The deliverer acting on the renderer's typed outcomes, through a real redis-server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import cast

import pytest
from redis.asyncio import Redis

from gateway.channels.delivery import Outcome
from gateway.channels.toolkit.format import telegram_html
from gateway.channels.toolkit.ratelimit import Bucket, RateLimits
from gateway.channels.toolkit.typing import TypingLoop
from gateway.core.bus import keys
from gateway.core.bus.codec import encode
from gateway.core.events import ChatAddress, RunStarted, TextDelta
from tests.fakes.recording_renderer import FormattingRecordingRenderer, RecordingRenderer
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

FINAL = "The whole answer, complete."


async def test_429_during_streaming_final_text_complete_and_shown_once(redis: Redis) -> None:
    renderer = RecordingRenderer()
    limits = RateLimits(bot=Bucket(30, 30.0), chat=Bucket(1, 20.0))
    deliverer = make_deliverer(redis, renderer, rate_limits=limits)
    await publish(redis, started(), TextDelta(run_id=RUN, delta="The"))
    task = asyncio.create_task(deliverer.deliver_session(SESSION))
    await renderer.wait_until(lambda: renderer.sends == 1)
    renderer.retry_after = [0.3, 0.3]  # the next two calls answer 429
    for word in FINAL.split()[1:]:
        await publish(redis, TextDelta(run_id=RUN, delta=" " + word))
    await publish(redis, completed(FINAL))
    assert await task is Outcome.DONE
    assert renderer.rate_limited == 2
    assert renderer.texts() == [FINAL]  # one message, ending in the whole text
    assert renderer.sends == 1
    # The 429 paused the chat's bucket for every replica (its hash holds the pause).
    pause = redis.hget(keys.channel_rate(CHANNEL, "chat:chat-1"), "paused")
    assert await cast(Awaitable[str | None], pause) is not None


async def test_permanent_error_is_dropped_once(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    renderer = RecordingRenderer(forbidden=True)
    deliverer = make_deliverer(redis, renderer)
    *_, last = await publish(
        redis, started(), TextDelta(run_id=RUN, delta="Hel"), completed("Hello"), signal=True
    )
    with caplog.at_level(logging.WARNING):
        await deliverer.start()
        try:
            async with asyncio.timeout(10):
                while await redis.get(keys.deliver_cursor(SESSION)) != last:
                    await deliverer.wait_idle()
                    await asyncio.sleep(0.05)  # the signal is read by the consumer's loop
            await deliverer.wait_idle()
        finally:
            await deliverer.stop()
    assert renderer.refused == 1  # not retried: no storm
    assert renderer.send_attempts == 1
    dropped = [r for r in caplog.records if "permanent" in r.getMessage()]
    assert len(dropped) == 1
    # Acked: nothing left pending for a retry.
    stream = keys.deliver(CHANNEL, keys.partition(SESSION, PARTITIONS))
    assert await redis.xlen(stream) == 0


async def test_deleted_message_is_posted_again(redis: Redis) -> None:
    renderer = RecordingRenderer()
    deliverer = make_deliverer(redis, renderer)
    await publish(redis, started(), TextDelta(run_id=RUN, delta="Hel"))
    task = asyncio.create_task(deliverer.deliver_session(SESSION))
    await renderer.wait_until(lambda: renderer.sends == 1)
    renderer.deleted.add("m1")  # the user deleted the preview
    await publish(redis, TextDelta(run_id=RUN, delta="lo"), completed("Hello"))
    assert await task is Outcome.DONE
    assert renderer.texts() == ["Hello"]
    record = redis.hget(keys.sent_parts(SESSION), f"{RUN}:0")
    assert await cast(Awaitable[str | None], record) == "m2"


async def test_text_the_platform_cannot_parse_is_sent_plain(redis: Redis) -> None:
    renderer = FormattingRecordingRenderer(formatter=telegram_html, reject_markup="<code>")
    deliverer = make_deliverer(redis, renderer)
    await publish(redis, started(), completed("Hi **you**"))
    await publish(redis, started("1700000000001-0"), completed("run `x < y`", "1700000000001-0"))
    assert await deliverer.deliver_session(SESSION) is Outcome.DONE
    first, second = renderer.messages.values()
    assert (first.text, first.plain) == ("Hi <b>you</b>", False)
    assert (second.text, second.plain) == ("run `x < y`", True)
    assert renderer.parse_rejections == 1


async def test_reply_goes_to_the_address_the_run_carries(redis: Redis) -> None:
    # A custom session key, and chat and thread ids with ':' in them.
    session = "support:team:room"
    address = ChatAddress(channel=CHANNEL, chat_id="room:7", thread_id="t:1")
    renderer = RecordingRenderer()
    deliverer = make_deliverer(redis, renderer)
    out = keys.outbound(session)
    for event in (
        RunStarted(run_id=RUN, session_key=session, address=address),
        completed("one"),
        # A run without an address (e.g. a backlog notice) goes where the last one went.
        RunStarted(run_id="1700000000001-0", session_key=session),
        completed("two", "1700000000001-0"),
    ):
        await redis.xadd(out, {"d": encode(event)})
    assert await deliverer.deliver_session(session) is Outcome.DONE
    assert [(m.chat_id, m.thread_id, m.text) for m in renderer.messages.values()] == [
        ("room:7", "t:1", "one"),
        ("room:7", "t:1", "two"),
    ]


async def test_typing_is_refreshed_until_stopped() -> None:
    renderer = RecordingRenderer(typing_interval_s=0.01)
    typing = TypingLoop(renderer, "c", None, timeout_s=1.0)
    typing.start()
    await renderer.wait_until(lambda: renderer.typings >= 3)
    await typing.stop()
    shown = renderer.typings
    await asyncio.sleep(0.05)  # several intervals: a running loop would have typed again
    assert renderer.typings == shown and not typing.running


async def test_typing_runs_while_the_reply_streams_and_stops_with_it(redis: Redis) -> None:
    renderer = RecordingRenderer(typing_interval_s=0.01)
    deliverer = make_deliverer(redis, renderer)
    await publish(redis, started(), TextDelta(run_id=RUN, delta="thinking"))
    task = asyncio.create_task(deliverer.deliver_session(SESSION))
    await renderer.wait_until(lambda: renderer.typings >= 3)  # refreshed, not once
    await publish(redis, completed("done"))
    assert await task is Outcome.DONE
    shown = renderer.typings
    await asyncio.sleep(0.05)
    assert renderer.typings == shown


async def test_429_on_the_final_send_waits_and_delivers_it(redis: Redis) -> None:
    renderer = RecordingRenderer(retry_after=[0.2])
    deliverer = make_deliverer(redis, renderer)
    await publish(redis, started(), TextDelta(run_id=RUN, delta=FINAL), completed(FINAL))
    assert await deliverer.deliver_session(SESSION) is Outcome.DONE
    assert renderer.rate_limited == 1
    assert renderer.texts() == [FINAL] and renderer.sends == 1


async def test_transient_errors_are_retried_with_backoff(redis: Redis) -> None:
    renderer = RecordingRenderer(fail_next_sends=2)  # untyped errors count as transient
    deliverer = make_deliverer(redis, renderer)
    await publish(redis, started(), completed("Hello"))
    assert await deliverer.deliver_session(SESSION) is Outcome.DONE
    assert renderer.send_attempts == 3 and renderer.texts() == ["Hello"]


async def test_throttled_streamed_edits_merge_into_the_latest_text(redis: Redis) -> None:
    renderer = RecordingRenderer()
    limits = RateLimits(bot=Bucket(30, 30.0), chat=Bucket(1, 2.0))  # one call per 0.5 s
    deliverer = make_deliverer(redis, renderer, rate_limits=limits)
    words = [f"w{i}" for i in range(50)]
    await publish(redis, started(), TextDelta(run_id=RUN, delta=words[0]))
    task = asyncio.create_task(deliverer.deliver_session(SESSION))
    await renderer.wait_until(lambda: renderer.sends == 1)
    for word in words[1:]:
        await publish(redis, TextDelta(run_id=RUN, delta=" " + word))
    final = " ".join(words)
    await publish(redis, completed(final))
    assert await task is Outcome.DONE
    assert renderer.texts() == [final]
    # 49 deltas, yet only a few edits: each one carried everything written until then.
    assert renderer.edits <= 6, renderer.edits
