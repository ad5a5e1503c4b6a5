"""The whole bus path (issue: the message bus), with real processes on loopback.

``gateway start --no-worker`` (HTTP ingress + SSE) and ``python -m workers`` run as two
processes on a redis-server this benchmark starts; the model is the in-process echo
model, so what is measured is the gateway: HTTP -> Redis -> worker -> Redis -> SSE.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import socket
import sys
import tempfile
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import yaml
from redis.asyncio import Redis

from bench._stats import Figure
from core.bus.inbound import publish_inbound
from core.messages import InboundMessage
from core.settings import Settings
from gateway.redis_launcher import resolve_redis

CHATS = 200
THROUGHPUT_MESSAGES = int(os.environ.get("BENCH_BUS_MESSAGES", "6000"))
LATENCY_RATE, LATENCY_SECONDS = 100, 10
MEMORY_MESSAGES = int(os.environ.get("BENCH_MEMORY_MESSAGES", "100000"))
MEMORY_SESSIONS = 10_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_http(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{url}/readyz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"gateway at {url} did not become ready")


@contextlib.asynccontextmanager
async def _stack(tmp: Path) -> AsyncIterator[tuple[str, str, int]]:
    """Redis, one gateway process, one worker process: yields (http url, redis url, worker pid)."""
    handle = await resolve_redis(Settings(), home=tmp)
    port = _free_port()
    config = tmp / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": "echo/echo",
                "workspace": str(tmp / "ws"),
                "redis": {"url": handle.url},
                "http": {"port": port},
                "worker": {"concurrency": 64},
            }
        )
    )
    env = {**os.environ, "GATEWAY_HOME": str(tmp)}
    quiet = {"stdout": asyncio.subprocess.DEVNULL, "stderr": asyncio.subprocess.DEVNULL}
    gateway = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "start",
        "--no-worker",
        "--config",
        str(config),
        env=env,
        **quiet,
    )
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers",
        "--config",
        str(config),
        "--no-jobs",
        "--log-level",
        "WARNING",
        env=env,
        **quiet,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        await _wait_http(url)
        yield url, handle.url, worker.pid
    finally:
        for proc in (gateway, worker):
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            await proc.wait()
        await handle.close()


class _Watcher:
    """One SSE stream per chat (``follow=1``): first-delta and completion times per run."""

    def __init__(self) -> None:
        self.posted: dict[str, deque[float]] = defaultdict(deque)
        self.first_delta_ms: list[float] = []
        self.completed = 0
        self.done = asyncio.Event()
        self.expected = 0

    async def follow(self, http: aiohttp.ClientSession, url: str, chat: str) -> None:
        seen: set[str] = set()
        async with http.get(f"{url}/v1/sessions/http:{chat}/events?after=0-0&follow=1") as resp:
            async for raw in resp.content:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                if event["type"] == "text.delta" and event["run_id"] not in seen:
                    seen.add(event["run_id"])
                    sent = self.posted[chat].popleft()
                    self.first_delta_ms.append((time.perf_counter() - sent) * 1000)
                elif event["type"] == "run.completed":
                    self.completed += 1
                    if self.completed >= self.expected:
                        self.done.set()


async def _post(
    http: aiohttp.ClientSession, url: str, watcher: _Watcher, i: int, phase: str
) -> None:
    chat = f"{phase}-{i % CHATS}"
    watcher.posted[chat].append(time.perf_counter())
    body = {"channel": "http", "chat_id": chat, "sender_id": "bench", "text": f"message {i}"}
    async with http.post(f"{url}/v1/messages", json=body) as resp:
        if resp.status != 202:
            raise RuntimeError(f"POST failed: {resp.status} {await resp.text()}")


async def _through_http(
    url: str, total: int, rate: float | None, phase: str
) -> tuple[float, _Watcher]:
    """Each phase uses its own chats, so SSE replays of earlier phases do not mix in."""
    watcher = _Watcher()
    watcher.expected = total
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout()) as http:
        followers = [
            asyncio.create_task(watcher.follow(http, url, f"{phase}-{c}")) for c in range(CHATS)
        ]
        await asyncio.sleep(0.5)  # let every SSE stream attach
        gc.collect()  # the client's own collections must not land inside the measurement
        gc.freeze()
        start = time.perf_counter()
        if rate is None:
            gate = asyncio.Semaphore(64)

            async def bounded(i: int) -> None:
                async with gate:
                    await _post(http, url, watcher, i, phase)

            await asyncio.gather(*(bounded(i) for i in range(total)))
        else:
            for i in range(total):
                asyncio.get_running_loop().create_task(_post(http, url, watcher, i, phase))
                await asyncio.sleep(max(0.0, start + (i + 1) / rate - time.perf_counter()))
        await asyncio.wait_for(watcher.done.wait(), timeout=300)
        elapsed = time.perf_counter() - start
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
    return elapsed, watcher


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _memory(redis_url: str, worker_pid: int) -> str:
    """Publish straight to Redis across 10,000 sessions; the worker's RSS before and after."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:

        async def publish(start: int, count: int) -> None:
            for i in range(start, start + count):
                msg = InboundMessage(
                    channel="bench", chat_id=str(i % MEMORY_SESSIONS), sender_id="b", text=f"m{i}"
                )
                await publish_inbound(redis, msg, partitions=8, maxlen=10_000)

        warm = min(10_000, MEMORY_MESSAGES // 10)
        await publish(0, warm)
        await _drained(redis)
        before = _rss_mb(worker_pid)
        start = time.perf_counter()
        step = 5_000
        for offset in range(warm, MEMORY_MESSAGES, step):
            await asyncio.gather(
                *(publish(offset + k * (step // 10), step // 10) for k in range(10))
            )
        await _drained(redis)
        elapsed = time.perf_counter() - start
        after = _rss_mb(worker_pid)
    finally:
        await redis.aclose()
    rate = (MEMORY_MESSAGES - warm) / elapsed
    return (
        f"{'bus: worker RSS over ' + str(MEMORY_MESSAGES) + ' msgs / 10k sessions':<46}"
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


async def main() -> list[str]:
    """Latency first (three runs of 10 s, the median run by p99 is reported), then the
    sustained rate, then the memory soak, all against the same two processes."""
    with tempfile.TemporaryDirectory() as tmp:
        async with _stack(Path(tmp)) as (url, redis_url, worker_pid):
            await _through_http(url, 400, None, "warm")
            total = LATENCY_RATE * LATENCY_SECONDS
            runs = []
            for i in range(3):
                elapsed, watcher = await _through_http(url, total, LATENCY_RATE, f"lat{i}")
                runs.append(
                    Figure(
                        f"bus: first delta at {LATENCY_RATE} msgs/s offered",
                        total,
                        elapsed,
                        watcher.first_delta_ms,
                    )
                )
            runs.sort(key=lambda f: f.percentile(99))
            spread = ", ".join(f"{f.percentile(50):.1f}/{f.percentile(99):.1f}" for f in runs)
            latency = Figure(
                runs[1].name,
                total,
                runs[1].seconds,
                runs[1].latencies_ms,
                f"median of 3 runs; p50/p99 ms: [{spread}]; echo model ~0.01 ms",
            )
            elapsed, _ = await _through_http(url, THROUGHPUT_MESSAGES, None, "rate")
            sustained = Figure(
                f"bus: HTTP->worker->SSE, {CHATS} chats", THROUGHPUT_MESSAGES, elapsed, []
            )
            memory = await _memory(redis_url, worker_pid)
    return [sustained.line().split("  p50")[0] + "  (sustained)", latency.line(), memory]
