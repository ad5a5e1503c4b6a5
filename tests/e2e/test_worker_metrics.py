"""A standalone ``gateway worker`` serves its own ``/metrics`` (``worker.metrics_port``):
scraped after it ran turns, with ``gateway_``-prefixed names and process metrics."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from redis.asyncio import Redis

from gateway.core.events import RunCompleted
from tests.e2e.conftest import (
    OutboundWatch,
    eventually_equal,
    inbound,
    publish,
    write_worker_config,
)
from tests.e2e.test_one_machine import Proc

TURNS = "gateway_turn_latency_seconds_count"


async def scrape_all(url: str) -> dict[str, str]:
    async with aiohttp.ClientSession() as client, client.get(url) as resp:
        assert resp.status == 200
        text = await resp.text()
    return dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )


async def scrape(url: str) -> float:
    return float((await scrape_all(url)).get(TURNS, "nan"))


async def test_worker_process_serves_metrics_after_turns(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "worker.yaml"
    settings = write_worker_config(config, workspace=tmp_path / "ws", metrics_port=0)
    worker = await Proc.start(
        tmp_path, "worker", "-c", str(config), "--redis-url", redis_url, "--worker-id", "m1"
    )
    try:
        url = (await worker.wait_for(r"metrics (http://\S+/metrics)")).group(1)
        await worker.wait_for("worker m1 ready")
        chats = [f"m{i}" for i in range(3)]
        for chat in chats:
            await publish(redis, settings, inbound(chat, f"hi {chat}"))
        keys = [inbound(chat, "").session_key for chat in chats]
        watch = OutboundWatch(redis, keys)
        await watch.until(
            lambda w: all(any(isinstance(e, RunCompleted) for e in w.of(k)) for k in keys),
            what="three replies",
        )
        # A turn's latency is recorded after its commit, which follows its last event.
        await eventually_equal(lambda: scrape(url), 3.0, what="three turns counted")
        samples = await scrape_all(url)
    finally:
        await worker.end()
    assert "process_cpu_seconds_total" in samples and "process_resident_memory_bytes" in samples
    own = [name for name in samples if not name.startswith(("process_", "python_"))]
    assert own and all(name.startswith("gateway_") for name in own), own
