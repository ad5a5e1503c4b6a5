"""One channel in its own process, publishing to Redis (the connection-lease tests).

``run_channel`` builds the channel's context, starts it, prints ``ready`` once its
supervisor runs, and stops it on SIGTERM. ``fake_channel_process`` and
``telegram_channel_process`` are the entry points.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from gateway.channels.base import Channel, ChannelContext
from gateway.core.bus.inbound import Published, publish_inbound
from gateway.core.messages import InboundMessage
from gateway.core.settings import Settings

PARTITIONS = 2


async def run_channel(
    redis_url: str, name: str, config: dict[str, Any], build: Callable[[ChannelContext], Channel]
) -> None:
    settings = Settings(channels={name: config})
    redis = Redis.from_url(redis_url, decode_responses=True)

    async def publish(msg: InboundMessage) -> Published:
        return await publish_inbound(redis, msg, partitions=PARTITIONS, maxlen=10_000)

    context = ChannelContext(
        name=name,
        settings=settings,
        config=settings.channels[name],
        redis=redis,
        publish=publish,
        owner=f"process-{os.getpid()}",
    )
    channel = build(context)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await channel.start()
    print("ready", flush=True)
    await stop.wait()
    await channel.stop()
    await redis.aclose()
