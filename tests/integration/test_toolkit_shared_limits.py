"""Two deliverers in two processes share one bot bucket and together stay within it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.codec import encode
from gateway.core.bus.outbound import signal_delivery
from gateway.core.events import RunCompleted, RunResult, RunStarted
from tests.fakes.bucket_deliverer import BOT, PARTITIONS

pytestmark = pytest.mark.integration

CHANNEL = "limited"
CHATS = 40
WINDOW_S = 1.0


async def start_deliverer(redis_url: str, consumer: str, out: Path) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.bucket_deliverer",
        redis_url,
        CHANNEL,
        consumer,
        str(out),
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(30):
        assert (await process.stdout.readline()).strip() == b"ready"
    return process


async def publish_runs(redis: Redis) -> dict[str, str]:
    """One finished run per chat, signalled; the last entry id of each session."""
    last: dict[str, str] = {}
    for chat in range(CHATS):
        session = f"{CHANNEL}:chat-{chat}"
        run = "1700000000000-0"
        for event in (
            RunStarted(run_id=run, session_key=session),
            RunCompleted(run_id=run, content=f"reply {chat}", result=RunResult()),
        ):
            last[session] = await redis.xadd(keys.outbound(session), {"d": encode(event)})
        await signal_delivery(redis, CHANNEL, session, partitions=PARTITIONS)
    return last


async def delivered(redis: Redis, last: dict[str, str]) -> bool:
    cursors = await redis.mget([keys.deliver_cursor(session) for session in last])
    return cursors == list(last.values())


async def test_two_processes_never_exceed_the_shared_rate(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    outs = [tmp_path / "d1.json", tmp_path / "d2.json"]
    processes = [await start_deliverer(redis_url, f"d{i}", out) for i, out in enumerate(outs)]
    try:
        last = await publish_runs(redis)
        for _ in range(600):  # up to a minute, polling the other processes' progress
            if await delivered(redis, last):
                break
            await asyncio.sleep(0.1)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            await process.wait()
    per_process = [json.loads(out.read_text()) for out in outs]
    assert all(per_process), "both processes delivered some of the replies"
    times = sorted(t for calls in per_process for t in calls)
    assert len(times) == CHATS  # one send per reply, none twice
    # Any WINDOW_S holds at most the burst plus what refills in it (+2 for clock skew
    # between the processes' stamps); unlimited, all 40 land within a fraction of it.
    bound = BOT.capacity + BOT.per_s * WINDOW_S + 2
    busiest = max(
        sum(1 for t in times[i:] if t - start < WINDOW_S) for i, start in enumerate(times)
    )
    assert busiest <= bound, f"{busiest} calls in {WINDOW_S}s; the buckets allow {bound}"
