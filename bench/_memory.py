"""The bus benchmark's memory soak: many sessions published straight to Redis."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from redis.asyncio import Redis

from gateway.core.bus.inbound import publish_inbound
from gateway.core.messages import InboundMessage

MEMORY_SESSIONS = 10_000


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def memory_soak(redis_url: str, worker_pid: int, total: int) -> str:
    """Publish straight to Redis across 10,000 sessions; the worker's RSS before and after."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:

        async def publish(start: int, count: int) -> None:
            for i in range(start, start + count):
                msg = InboundMessage(
                    channel="bench", chat_id=str(i % MEMORY_SESSIONS), sender_id="b", text=f"m{i}"
                )
                await publish_inbound(redis, msg, partitions=8, maxlen=10_000)

        warm = min(10_000, total // 10)
        await publish(0, warm)
        await _drained(redis)
        before = _rss_mb(worker_pid)
        start = time.perf_counter()
        step = 5_000
        for offset in range(warm, total, step):
            await asyncio.gather(
                *(publish(offset + k * (step // 10), step // 10) for k in range(10))
            )
        await _drained(redis)
        elapsed = time.perf_counter() - start
        after = _rss_mb(worker_pid)
    finally:
        await redis.aclose()
    rate = (total - warm) / elapsed
    return (
        f"{'bus: worker RSS over ' + str(total) + ' msgs / 10k sessions':<46}"
        f" {before:.1f} MB -> {after:.1f} MB (growth {after - before:+.1f} MB; "
        f"{rate:.0f} msgs/s direct to Redis)"
    )


async def _drained(redis: Redis) -> None:
    """Wait until no ready signal is pending or unread."""
    while True:
        backlog = 0
        for p in range(8):
            stream = f"gw:ready:{p}"
            backlog += await redis.xlen(stream)
        if backlog == 0:
            return
        await asyncio.sleep(0.2)
