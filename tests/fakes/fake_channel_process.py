"""One ``FakeChannel`` in its own process, publishing to Redis (the connection-lease test).

``python -m tests.fakes.fake_channel_process <redis_url> <platform_url>`` runs until
SIGTERM; it prints ``ready`` once the channel's supervisor runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from redis.asyncio import Redis

from channels.base import ChannelContext
from core.bus.inbound import Published, publish_inbound
from core.messages import InboundMessage
from core.settings import Settings
from tests.fakes.fake_platform import FakeChannel

PARTITIONS = 2


async def main(redis_url: str, platform_url: str) -> None:
    settings = Settings(channels={"fake": {"api_base": platform_url, "allow_from": ["*"]}})
    redis = Redis.from_url(redis_url, decode_responses=True)

    async def publish(msg: InboundMessage) -> Published:
        return await publish_inbound(redis, msg, partitions=PARTITIONS, maxlen=10_000)

    context = ChannelContext(
        name="fake",
        settings=settings,
        config=settings.channels["fake"],
        redis=redis,
        publish=publish,
        owner=f"process-{os.getpid()}",
    )
    channel = FakeChannel(context)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await channel.start()
    print("ready", flush=True)
    await stop.wait()
    await channel.stop()
    await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
