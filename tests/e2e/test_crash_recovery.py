"""Worker processes that die or lose Redis: every message answered once, in order."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from gateway.channels.delivery import Deliverer
from gateway.core.bus import keys
from gateway.core.bus.inbound import pending_inbound, read_cursor
from gateway.core.bus.outbound import read_events
from gateway.core.events import RunCompleted, RunFailed, TextDelta
from gateway.core.sessions.redis import RedisSessionStore
from gateway.core.settings import Settings
from tests.e2e.conftest import (
    OutboundWatch,
    WorkerLauncher,
    eventually_equal,
    inbound,
    publish,
    write_worker_config,
)
from tests.fakes.openai_server import FakeModelServer, Reply
from tests.fakes.recording_renderer import RecordingRenderer
from tests.fakes.redis_server import RedisServer

CHANNEL = "test"
SLOW_REPLY = " ".join(f"word{i}" for i in range(40))
"""About 270 characters: 34 chunks of 8, 50 ms apart, so the stream lasts ~1.7 s."""


async def signals_pending(redis: Redis, settings: Settings) -> int:
    """Unacked work signals over all ready partitions."""
    total = 0
    for p in range(settings.worker.ready_partitions):
        total += (await redis.xpending(keys.ready(p), keys.WORKER_GROUP))["pending"]
    return total


async def test_kill_9_mid_stream_reruns_once_and_edits_the_posted_reply(
    redis: Redis,
    redis_url: str,
    fake_model: FakeModelServer,
    worker_launcher: WorkerLauncher,
    tmp_path: Path,
) -> None:
    config = tmp_path / "worker.yaml"
    settings = write_worker_config(
        config, workspace=tmp_path / "ws", model_base_url=fake_model.base_url
    )
    fake_model.script(Reply(text=SLOW_REPLY, chunk_delay_s=0.05))
    renderer = RecordingRenderer()
    deliverer = Deliverer(
        redis,
        CHANNEL,
        renderer,
        partitions=settings.worker.ready_partitions,
        consumer="deliverer",
        lease_ms=5000,
        claim_idle_ms=2000,
    )
    message = inbound("c1", "hello", event_id="e1")
    key = message.session_key
    watch = OutboundWatch(redis, [key])
    await deliverer.start()
    try:
        doomed = await worker_launcher.start(
            "A", redis_url=redis_url, config=config, deliver_channels=[CHANNEL]
        )
        published = await publish(redis, settings, message)
        entry_id = published.entry_id
        assert entry_id is not None
        await watch.until(
            lambda w: any(isinstance(e, TextDelta) for e in w.of(key)), what="a text.delta"
        )
        # The partial reply is on the platform before the crash, so the re-run must edit it.
        await renderer.wait_until(lambda: renderer.sends == 1)
        await doomed.kill()
        so_far = await read_events(redis, key, after="0-0", block_ms=None)
        assert not [e for _, e in so_far if isinstance(e, RunCompleted | RunFailed)], (
            "worker A finished its run before it was killed"
        )
        assert await read_cursor(redis, key) == "0-0"

        await worker_launcher.start(
            "B", redis_url=redis_url, config=config, deliver_channels=[CHANNEL]
        )
        await watch.until(lambda w: bool(w.terminals(key)), what="run.completed", timeout_s=30)
        [(completed_id, completed)] = watch.completed(key)
        final = "echo: hello"
        assert completed.run_id == entry_id
        assert completed.content == final
        await renderer.wait_until(lambda: renderer.texts() == [final])

        await eventually_equal(
            lambda: redis.get(keys.deliver_cursor(key)), completed_id, what="the delivery"
        )
        await eventually_equal(lambda: read_cursor(redis, key), entry_id, what="the commit")
        await eventually_equal(lambda: signals_pending(redis, settings), 0, what="the ack")
    finally:
        await deliverer.stop()
    assert renderer.sends == 1, renderer.messages
    assert len(fake_model.requests) == 2  # A's cut-off stream and B's re-run
    session = await RedisSessionStore(redis).load(key)
    assert session is not None
    assert [(m["role"], m["content"]) for m in session.messages] == [
        ("user", "hello"),
        ("assistant", final),
    ]
    assert await pending_inbound(redis, key) == []


async def test_messages_published_before_a_redis_restart_are_all_answered_in_order(
    aof_redis_server: RedisServer,
    fake_model: FakeModelServer,
    worker_launcher: WorkerLauncher,
    tmp_path: Path,
) -> None:
    config = tmp_path / "worker.yaml"
    settings = write_worker_config(
        config, workspace=tmp_path / "ws", model_base_url=fake_model.base_url
    )
    texts = [f"message {i}" for i in range(5)]
    key = inbound("c1", "-").session_key
    before = Redis.from_url(aof_redis_server.url, decode_responses=True)
    try:
        entry_ids = [
            (await publish(before, settings, inbound("c1", text))).entry_id for text in texts
        ]
    finally:
        await before.aclose()

    aof_redis_server.restart()

    redis = Redis.from_url(aof_redis_server.url, decode_responses=True)
    try:
        assert await redis.xlen(keys.inbound(key)) == 5, "the inbound stream did not survive"
        watch = OutboundWatch(redis, [key])
        await worker_launcher.start("W", redis_url=aof_redis_server.url, config=config)
        await watch.until(
            lambda w: len(w.terminals(key)) >= 5, what="five run.completed", timeout_s=30
        )
        completed = [event for _, event in watch.completed(key)]
        assert [e.run_id for e in completed] == entry_ids
        assert [e.content for e in completed] == [f"echo: {t}" for t in texts]
        assert len(watch.terminals(key)) == 5
        await eventually_equal(
            lambda: read_cursor(redis, key), entry_ids[-1], what="the last commit"
        )
        session = await RedisSessionStore(redis).load(key)
        assert session is not None
        expected = []
        for text in texts:
            expected += [("user", text), ("assistant", f"echo: {text}")]
        assert [(m["role"], m["content"]) for m in session.messages] == expected
    finally:
        await redis.aclose()
