"""A deliverer in its own process, for tests of limits shared between replicas.

``python -m tests.fakes.bucket_deliverer REDIS_URL CHANNEL CONSUMER OUT_FILE`` runs a
``Deliverer`` on a ``RecordingRenderer`` with a slow bot bucket (``BOT``), prints
``ready`` once it reads signals, and on SIGTERM stops and writes the times of every
send and edit it made to OUT_FILE (JSON list of ``time.time()`` values).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from redis.asyncio import Redis

from gateway.channels.delivery import Deliverer
from gateway.channels.toolkit.ratelimit import Bucket, RateLimits
from tests.fakes.recording_renderer import RecordingRenderer

BOT = Bucket(capacity=2, per_s=10.0)
"""Shared by both processes: at most 2 + 10 * t calls in any t seconds, together."""
LIMITS = RateLimits(bot=BOT, chat=Bucket(100, 100.0))
PARTITIONS = 2


async def main(redis_url: str, channel: str, consumer: str, out: Path) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    renderer = RecordingRenderer()
    deliverer = Deliverer(
        redis,
        channel,
        renderer,
        partitions=PARTITIONS,
        consumer=consumer,
        block_ms=200,
        concurrency=2,  # two chats at a time: the other process gets its share
        rate_limits=LIMITS,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await deliverer.start()
    print("ready", flush=True)
    await stop.wait()
    await deliverer.stop()
    await redis.aclose()
    out.write_text(json.dumps(renderer.call_times))


if __name__ == "__main__":
    url, channel_name, consumer_name, out_file = sys.argv[1:5]
    asyncio.run(main(url, channel_name, consumer_name, Path(out_file)))
