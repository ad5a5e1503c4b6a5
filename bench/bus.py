"""The whole bus path (issue: the message bus), with real processes on loopback.

``gateway start --no-worker`` (HTTP ingress + SSE) and ``python -m gateway.workers`` run as two
processes on a redis-server this benchmark starts; the model is ``bench.model_server``,
an OpenAI-compatible server in its own process reached over HTTP by the worker's real
``openai`` client. What is measured: HTTP -> Redis -> worker -> model -> Redis -> SSE.

Per variant (``BENCH_BUS_VARIANTS``, default ``default,no-hiredis,no-uvloop,neither,
no-gc-freeze``; ``default`` uses hiredis and uvloop when installed, the others hide
them, or keep Python's GC defaults (no freeze, no thresholds), through
``bench._launch``): the sustained rate and the CPU time per message of every process
over that phase (utime+stime from /proc). The ``default`` variant also runs the
first-delta latency at 100 msgs/s (``BENCH_LATENCY_RUNS`` runs of
``BENCH_LATENCY_SECONDS`` s; ``BENCH_VARIANT_LATENCY=1`` for every variant) and the
memory soak (``BENCH_MEMORY_MESSAGES``, 0 skips it). Gen-2 GC pauses and event-loop
stalls of the gateway and the worker are reported from the processes themselves, the
latency tail is split by what it waited through, and the CPU budget (CPU per message
summed over every process against the cores) explains the sustained rate
(``bench._tail``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml
from redis.asyncio import Redis

from bench._load import CHATS, through_http
from bench._memory import memory_soak
from bench._procs import cpu_seconds, model_server
from bench._stats import Figure, Target
from bench._tail import (
    LatencySample,
    budget_lines,
    machine_cpu_s,
    pause_lines,
    read_pauses,
    tail_line,
)
from gateway.core.settings import Settings
from gateway.redis_launcher import resolve_redis

THROUGHPUT_MESSAGES = int(os.environ.get("BENCH_BUS_MESSAGES", "6000"))
LATENCY_RATE = 100
LATENCY_SECONDS = int(os.environ.get("BENCH_LATENCY_SECONDS", "10"))
LATENCY_RUNS = int(os.environ.get("BENCH_LATENCY_RUNS", "3"))
MEMORY_MESSAGES = int(os.environ.get("BENCH_MEMORY_MESSAGES", "20000"))
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


@dataclass
class Throughput:
    figure: Figure
    cpu_ms: dict[str, float]
    """CPU ms per message of each process over the phase."""
    machine_ms: float
    """CPU ms per message of the whole machine (every process, ours or not)."""


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in {**pids, "bench client": os.getpid()}.items()}


@dataclass
class LatencyRun:
    figure: Figure
    sample: LatencySample


async def _latency_runs(stack: Stack) -> list[LatencyRun]:
    total = LATENCY_RATE * LATENCY_SECONDS
    runs = []
    for i in range(LATENCY_RUNS):
        before, machine_before = sum(_cpu(stack.pids).values()), machine_cpu_s()
        elapsed, watcher = await through_http(stack.url, total, LATENCY_RATE, f"lat{i}", WINDOW)
        ours = sum(_cpu(stack.pids).values()) - before
        others = max(0.0, machine_cpu_s() - machine_before - ours) / elapsed
        name = f"bus: first delta at {LATENCY_RATE} msgs/s, run {i + 1}"
        figure = Figure(name, total, elapsed, watcher.first_delta_ms)
        sample = LatencySample(
            watcher.first_delta_ms, watcher.first_delta_at, watcher.probe.stalls, others
        )
        runs.append(LatencyRun(figure, sample))
    return runs


async def _throughput(stack: Stack, phase: str) -> Throughput:
    """The sustained rate, and CPU ms per message of each process over that phase."""
    before, machine_before = _cpu(stack.pids), machine_cpu_s()
    elapsed, _ = await through_http(stack.url, THROUGHPUT_MESSAGES, None, phase, WINDOW)
    after, machine_after = _cpu(stack.pids), machine_cpu_s()
    per_message = {
        name: (after[name] - before[name]) * 1000 / THROUGHPUT_MESSAGES for name in before
    }
    machine_ms = (machine_after - machine_before) * 1000 / THROUGHPUT_MESSAGES
    name = f"bus: HTTP->worker->model->SSE, {CHATS} chats"
    return Throughput(Figure(name, THROUGHPUT_MESSAGES, elapsed, []), per_message, machine_ms)


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
            await through_http(stack.url, 400, None, "warm", WINDOW)
            measured_from = time.time()
            latency = await _latency_runs(stack) if with_latency else []
            sustained = await _throughput(stack, "rate")
            memory = (
                [await memory_soak(stack.redis_url, stack.pids["worker"], MEMORY_MESSAGES)]
                if with_memory
                else []
            )
        pauses = read_pauses(stack.gc_log, measured_from)
    rate, cpu = sustained.figure, sustained.cpu_ms
    cpu_text = ", ".join(f"{name} {ms:.2f}" for name, ms in cpu.items())
    tails = [
        f"run {i + 1}: " + tail_line(run.sample, pauses, TARGET_P99_MS)
        for i, run in enumerate(latency)
    ]
    lines = [
        f"[{variant}] " + rate.line().split("  p50")[0] + "  (sustained)",
        f"[{variant}] CPU ms per message: {cpu_text}",
        *(f"[{variant}] {run.figure.line()}" for run in latency),
        *(f"[{variant}] {line}" for line in memory + pause_lines(pauses) + tails),
        *(f"[{variant}] {line}" for line in budget_lines(cpu, rate.rate, sustained.machine_ms)),
    ]
    return VariantResult(variant, rate.rate, cpu, [run.figure for run in latency], lines)


REFERENCE = {
    "gateway": "0.63 ms",
    "worker": "1.36 ms",
    "p99": "6.5 ms, 1 run",
    "rate": "607 msgs/s",
}
"""This round's starting figures (README, issue 12: last round's final code on the
machine of this round, measured the same day), printed next to this run's."""


def _targets(results: list[VariantResult]) -> list[Target]:
    main = results[0]
    targets = [
        Target(
            f"bus CPU per message, {name} ({main.variant})",
            f"{main.cpu_ms[name]:.2f} ms",
            f"<= {TARGET_CPU_MS:g} ms",
            main.cpu_ms[name] <= TARGET_CPU_MS,
            REFERENCE[name],
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
                REFERENCE["p99"],
            )
        )
    targets.append(
        Target(
            f"bus throughput, 1 gateway + 1 worker ({main.variant})",
            f"{main.rate:.0f} msgs/s",
            f">= {TARGET_RATE:g} msgs/s",
            main.rate >= TARGET_RATE,
            REFERENCE["rate"],
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
