"""The whole bus path (issue: the message bus), with real processes on loopback.

``gateway start --no-worker`` (HTTP ingress + SSE) and ``python -m gateway.workers`` run as two
processes on a redis-server this benchmark starts; the model is ``bench.model_server``,
an OpenAI-compatible server in its own process reached over HTTP by the worker's real
``openai`` client. What is measured: HTTP -> Redis -> worker -> model -> Redis -> SSE.

Per variant (``BENCH_BUS_VARIANTS``, default ``default,no-hiredis,no-uvloop,neither,
no-gc-freeze``; ``default`` uses hiredis and uvloop when installed, the others hide
them, or skip the GC freeze, through ``bench._launch``): the sustained rate and the CPU
time per message of every process over that phase (utime+stime from /proc). The
``default`` variant also runs the first-delta latency at 100 msgs/s (``BENCH_LATENCY_RUNS`` runs of
``BENCH_LATENCY_SECONDS`` s; ``BENCH_VARIANT_LATENCY=1`` for every variant) and the
memory soak (``BENCH_MEMORY_MESSAGES``, 0 skips it). Gen-2 GC pauses of the gateway and
the worker are reported from the processes themselves.
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
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml
from redis.asyncio import Redis

from bench._procs import cpu_seconds, model_server
from bench._stats import Figure, Target
from gateway.core.bus.inbound import publish_inbound
from gateway.core.messages import InboundMessage
from gateway.core.settings import Settings
from gateway.redis_launcher import resolve_redis

CHATS = 200
THROUGHPUT_MESSAGES = int(os.environ.get("BENCH_BUS_MESSAGES", "6000"))
LATENCY_RATE = 100
LATENCY_SECONDS = int(os.environ.get("BENCH_LATENCY_SECONDS", "10"))
LATENCY_RUNS = int(os.environ.get("BENCH_LATENCY_RUNS", "3"))
MEMORY_MESSAGES = int(os.environ.get("BENCH_MEMORY_MESSAGES", "20000"))
MEMORY_SESSIONS = 10_000
VARIANTS = os.environ.get(
    "BENCH_BUS_VARIANTS", "default,no-hiredis,no-uvloop,neither,no-gc-freeze"
).split(",")
VARIANT_LATENCY = os.environ.get("BENCH_VARIANT_LATENCY") == "1"
_HIDDEN = {
    "default": [],
    "no-hiredis": ["--no-hiredis"],
    "no-uvloop": ["--no-uvloop"],
    "neither": ["--no-hiredis", "--no-uvloop"],
    "no-gc-freeze": ["--no-gc-freeze"],
}
TARGET_CPU_MS, TARGET_P99_MS, TARGET_RATE = 1.0, 15.0, 1000.0
DRAIN_TIMEOUT_S = 600
WINDOW = int(os.environ.get("BENCH_BUS_WINDOW", "256"))
"""Sustained phase: messages in flight (posted, not answered); a closed loop, so the
offered load follows the machine and no chat passes the busy policy's backlog cap."""


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


@dataclass
class Stack:
    url: str
    redis_url: str
    pids: dict[str, int]
    """gateway, worker, model, redis: the processes whose CPU time is measured."""
    gc_log: Path


@contextlib.asynccontextmanager
async def _stack(tmp: Path, variant: str) -> AsyncIterator[Stack]:
    """Redis, the model server, one gateway process, one worker process."""
    handle = await resolve_redis(Settings(), home=tmp)
    port = _free_port()
    config = tmp / "config.yaml"
    gc_log = tmp / "gc.log"
    async with model_server() as (model_url, model_pid):
        config.write_text(
            yaml.safe_dump(
                {
                    "model": "bench/fake-model",
                    "providers": {"bench": {"base_url": model_url, "api_key": "bench-key"}},
                    "workspace": str(tmp / "ws"),
                    "redis": {"url": handle.url},
                    "http": {"port": port},
                    "worker": {"concurrency": 64},
                }
            )
        )
        env = {**os.environ, "GATEWAY_HOME": str(tmp), "BENCH_GC_LOG": str(gc_log)}
        quiet = {"stdout": asyncio.subprocess.DEVNULL, "stderr": asyncio.subprocess.DEVNULL}
        launch = [sys.executable, "-m", "bench._launch", *_HIDDEN[variant]]
        gateway = await asyncio.create_subprocess_exec(
            *launch, "gateway", "start", "--no-worker", "--config", str(config), env=env, **quiet
        )
        worker = await asyncio.create_subprocess_exec(
            *launch,
            "gateway.workers",
            "--config",
            str(config),
            "--no-jobs",
            "--log-level",
            "WARNING",
            env=env,
            **quiet,
        )
        redis = Redis.from_url(handle.url, decode_responses=True)
        try:
            url = f"http://127.0.0.1:{port}"
            await _wait_http(url)
            redis_pid = int((await redis.info("server"))["process_id"])
            pids = {"gateway": gateway.pid, "worker": worker.pid, "model": model_pid}
            yield Stack(url, handle.url, {**pids, "redis": redis_pid}, gc_log)
        finally:
            await redis.aclose()
            for proc in (gateway, worker):
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                await proc.wait()
            await handle.close()


class _Watcher:
    """One SSE stream per chat (``follow=1``): first-delta and completion times per run."""

    def __init__(self, window: int) -> None:
        self.window = asyncio.Semaphore(window)
        """Messages posted and not answered yet: the sustained phase keeps this many in flight."""
        self.posted: dict[str, deque[float]] = defaultdict(deque)
        self.first_delta_ms: list[float] = []
        self.completed = 0
        self.failed: list[str] = []
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
                elif event["type"] == "run.started" and event["metadata"].get("dropped_ids"):
                    # A backlog-cap notice answers several messages at once: all are done.
                    dropped = len(event["metadata"]["dropped_ids"])
                    self.failed.append(f"backlog cap dropped {dropped} messages")
                    self._ended(dropped - 1)
                elif event["type"] in ("run.completed", "run.failed"):
                    if event["type"] == "run.failed":
                        self.failed.append(str(event.get("error")))
                    self._ended(1)

    def _ended(self, runs: int) -> None:
        self.completed += runs
        for _ in range(runs):
            self.window.release()
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
    watcher = _Watcher(WINDOW)
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
            posts = []
            for i in range(total):
                await watcher.window.acquire()
                posts.append(asyncio.create_task(_post(http, url, watcher, i, phase)))
            await asyncio.gather(*posts)
        else:
            for i in range(total):
                asyncio.get_running_loop().create_task(_post(http, url, watcher, i, phase))
                await asyncio.sleep(max(0.0, start + (i + 1) / rate - time.perf_counter()))
        try:
            await asyncio.wait_for(watcher.done.wait(), timeout=DRAIN_TIMEOUT_S)
        except TimeoutError:
            raise RuntimeError(
                f"{phase}: {watcher.completed} of {total} runs ended within"
                f" {DRAIN_TIMEOUT_S} s of the last POST ({len(watcher.failed)} failed)"
            ) from None
        if watcher.failed:
            raise RuntimeError(f"{phase}: {len(watcher.failed)} runs failed: {watcher.failed[0]}")
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


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in {**pids, "bench client": os.getpid()}.items()}


async def _latency_runs(stack: Stack) -> list[Figure]:
    total = LATENCY_RATE * LATENCY_SECONDS
    runs = []
    for i in range(LATENCY_RUNS):
        elapsed, watcher = await _through_http(stack.url, total, LATENCY_RATE, f"lat{i}")
        name = f"bus: first delta at {LATENCY_RATE} msgs/s, run {i + 1}"
        runs.append(Figure(name, total, elapsed, watcher.first_delta_ms))
    return runs


async def _throughput(stack: Stack, phase: str) -> tuple[Figure, dict[str, float]]:
    """The sustained rate, and CPU ms per message of each process over that phase."""
    before = _cpu(stack.pids)
    elapsed, _ = await _through_http(stack.url, THROUGHPUT_MESSAGES, None, phase)
    after = _cpu(stack.pids)
    per_message = {
        name: (after[name] - before[name]) * 1000 / THROUGHPUT_MESSAGES for name in before
    }
    name = f"bus: HTTP->worker->model->SSE, {CHATS} chats"
    return Figure(name, THROUGHPUT_MESSAGES, elapsed, []), per_message


def _gc_lines(log: Path, since: float) -> list[str]:
    """Gen-2 collections of each process during the measured phases (after ``since``)."""
    pauses: dict[str, list[tuple[float, float]]] = defaultdict(list)
    if log.exists():
        for row in log.read_text().splitlines():
            module, at, wall, cpu = row.split()
            if float(at) >= since:
                pauses[module].append((float(wall), float(cpu)))
    lines = []
    for module in ("gateway", "gateway.workers"):
        found = pauses.get(module, [])
        worst = max(found, default=(0.0, 0.0))
        lines.append(
            f"gen-2 GC in {module} while measured: {len(found)} collections,"
            f" longest {worst[0]:.1f} ms wall ({worst[1]:.1f} ms CPU)"
        )
    return lines


@dataclass
class VariantResult:
    variant: str
    rate: float
    cpu_ms: dict[str, float]
    latency: list[Figure]
    lines: list[str]


async def _variant(variant: str, with_latency: bool, with_memory: bool) -> VariantResult:
    with tempfile.TemporaryDirectory() as tmp:
        async with _stack(Path(tmp), variant) as stack:
            await _through_http(stack.url, 400, None, "warm")
            measured_from = time.time()
            latency = await _latency_runs(stack) if with_latency else []
            rate, cpu = await _throughput(stack, "rate")
            memory = [await _memory(stack.redis_url, stack.pids["worker"])] if with_memory else []
        gc_lines = _gc_lines(stack.gc_log, measured_from)
    cpu_text = ", ".join(f"{name} {ms:.2f}" for name, ms in cpu.items())
    lines = [
        f"[{variant}] " + rate.line().split("  p50")[0] + "  (sustained)",
        f"[{variant}] CPU ms per message: {cpu_text}",
        *(f"[{variant}] {f.line()}" for f in latency),
        *(f"[{variant}] {line}" for line in memory + gc_lines),
    ]
    return VariantResult(variant, rate.rate, cpu, latency, lines)


def _targets(results: list[VariantResult]) -> list[Target]:
    main = results[0]
    targets = [
        Target(
            f"bus CPU per message, {name} ({main.variant})",
            f"{main.cpu_ms[name]:.2f} ms",
            f"<= {TARGET_CPU_MS:g} ms",
            main.cpu_ms[name] <= TARGET_CPU_MS,
        )
        for name in ("gateway", "worker")
    ]
    p99s = [f.percentile(99) for f in main.latency]
    if p99s:
        targets.append(
            Target(
                f"bus first-delta p99 at {LATENCY_RATE} msgs/s, every run",
                " / ".join(f"{p:.1f}" for p in p99s) + " ms",
                f"<= {TARGET_P99_MS:g} ms",
                max(p99s) <= TARGET_P99_MS,
            )
        )
    targets.append(
        Target(
            f"bus throughput, 1 gateway + 1 worker ({main.variant})",
            f"{main.rate:.0f} msgs/s",
            f">= {TARGET_RATE:g} msgs/s",
            main.rate >= TARGET_RATE,
        )
    )
    return targets


def _ratios(results: list[VariantResult]) -> list[str]:
    base = results[0]
    lines = []
    for other in results[1:]:
        cpu = ", ".join(
            f"{name} x{other.cpu_ms[name] / base.cpu_ms[name]:.2f}"
            for name in ("gateway", "worker")
            if base.cpu_ms[name] > 0
        )
        lines.append(
            f"{base.variant} vs {other.variant}: throughput x{base.rate / other.rate:.2f};"
            f" CPU per message of {other.variant} / {base.variant}: {cpu}"
        )
    return lines


async def main() -> list[Target]:
    """Per variant: warm-up, the latency runs, the sustained rate, the memory soak.
    Prints each variant's lines as it ends; returns the targets."""
    results = []
    for index, variant in enumerate(VARIANTS):
        result = await _variant(
            variant,
            with_latency=index == 0 or VARIANT_LATENCY,
            with_memory=index == 0 and MEMORY_MESSAGES > 0,
        )
        results.append(result)
        for line in result.lines:
            print(line, flush=True)
    for line in _ratios(results):
        print(line, flush=True)
    return _targets(results)
