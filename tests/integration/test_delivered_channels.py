"""Which channels get delivery signals: one decision (the registry's), in every process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.channels.registry import REGISTRY
from gateway.core.bus import keys
from gateway.core.bus.client import configured_redis
from gateway.core.bus.inbound import publish_inbound
from gateway.core.messages import InboundMessage, default_session_key
from gateway.core.settings import ChannelSettings, Settings
from gateway.worker_process import run_worker
from tests.integration.test_worker_kit import Transcript, bus_settings

pytestmark = pytest.mark.integration


def test_only_enabled_platform_channels_are_delivered() -> None:
    configured = {
        "http": ChannelSettings(busy_policy="collect"),
        "sdk": ChannelSettings(),
        "cli": ChannelSettings(enabled=False),
    }
    # None of the built-in channels has a platform to post to: nothing reads their signals.
    assert REGISTRY.delivered(configured) == frozenset()
    assert REGISTRY.enabled_platforms(configured) == []


async def test_worker_leaves_no_signals_for_a_channel_without_deliverer(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    # Regression: a worker started with `channels: {http: {busy_policy: collect}}`
    # signalled gw:deliver:http:* for every run, and nothing ever read those streams.
    base = bus_settings(tmp_path)
    settings = Settings(
        **{
            **base.model_dump(),
            "redis": {"url": redis_url},
            "channels": {"http": {"busy_policy": "collect"}},
        }
    )
    target = configured_redis(settings)
    assert target is not None
    stop = asyncio.Event()
    worker = asyncio.create_task(
        run_worker(settings, target=target, jobs=False, stop=stop, stop_grace_s=5)
    )
    chats = [f"chat-{i}" for i in range(20)]
    session_keys = [default_session_key("http", chat) for chat in chats]
    try:
        cfg = settings.worker
        for chat in chats:
            message = InboundMessage(channel="http", chat_id=chat, sender_id="u", text=chat)
            await publish_inbound(
                redis, message, partitions=cfg.ready_partitions, maxlen=cfg.stream_maxlen
            )
        await Transcript(redis, session_keys).runs_ended(1, seconds=30)
    finally:
        stop.set()
        await worker
    streams = [keys.deliver("http", p) for p in range(settings.worker.ready_partitions)]
    unread = [await redis.xlen(stream) for stream in streams]
    assert unread == [0] * len(streams)
