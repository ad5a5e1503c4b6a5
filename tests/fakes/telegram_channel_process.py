"""One Telegram channel in its own process, publishing to Redis (the poller-lease test).

``python -m tests.fakes.telegram_channel_process <redis_url> <api_base> <token>`` runs
until SIGTERM; it prints ``ready`` once the channel's supervisor runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from redis.asyncio import Redis

from channels.base import ChannelContext
from channels.telegram import build_channel
from core.bus.inbound import Published, publish_inbound
from core.messages import InboundMessage
from core.settings import Settings

PARTITIONS = 2


async def main(redis_url: str, api_base: str, token: str) -> None:
    config = {"token": token, "api_base": api_base, "allow_from": ["*"]}
    settings = Settings(channels={"telegram": config})
    redis = Redis.from_url(redis_url, decode_responses=True)

    async def publish(msg: InboundMessage) -> Published:
        return await publish_inbound(redis, msg, partitions=PARTITIONS, maxlen=10_000)

    context = ChannelContext(
        name="telegram",
        settings=settings,
        config=settings.channels["telegram"],
        redis=redis,
        publish=publish,
        owner=f"process-{os.getpid()}",
    )
    channel = build_channel(context)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await channel.start()
    print("ready", flush=True)
    await stop.wait()
    await channel.stop()
    await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
