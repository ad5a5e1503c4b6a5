"""Embedded SDK throughput and per-turn overhead (issue: core runtime and SDK).

A model that answers at once (the built-in ``echo`` provider, in-process) isolates
the gateway's own cost: prompt building, the loop, events, file sessions.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from bench._stats import Figure, median_of, p50
from core.messages import Message
from core.providers.base import ModelRequest, ModelSpec
from core.providers.echo import EchoProvider
from core.settings import Settings
from gateway import Bot

REPEATS = 3


def _bot(root: Path) -> Bot:
    return Bot(Settings(model="echo/echo", workspace=root))


async def sequential(n: int) -> Figure:
    with tempfile.TemporaryDirectory() as tmp:
        async with _bot(Path(tmp)) as bot:
            latencies = []
            start = time.perf_counter()
            for i in range(n):
                t0 = time.perf_counter()
                await bot.run(f"message {i}", session_key=f"bench:{i % 100}")
                latencies.append((time.perf_counter() - t0) * 1000)
            elapsed = time.perf_counter() - start
    return Figure("sdk: sequential bot.run", n, elapsed, latencies)


async def concurrent(n: int, sessions: int) -> Figure:
    with tempfile.TemporaryDirectory() as tmp:
        async with _bot(Path(tmp)) as bot:
            latencies: list[float] = []

            async def one_session(s: int) -> None:
                for i in range(n // sessions):
                    t0 = time.perf_counter()
                    await bot.run(f"message {i}", session_key=f"bench:{s}")
                    latencies.append((time.perf_counter() - t0) * 1000)

            start = time.perf_counter()
            await asyncio.gather(*(one_session(s) for s in range(sessions)))
            elapsed = time.perf_counter() - start
    return Figure(f"sdk: {sessions} concurrent sessions", len(latencies), elapsed, latencies)


async def model_time_ms(n: int = 2000) -> float:
    """Median time of the echo model alone, to subtract from a turn's total."""
    provider = EchoProvider()
    spec = ModelSpec(provider="echo", model="echo")
    messages: list[Message] = [{"role": "user", "content": "message 1"}]
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        async for _chunk in provider.stream(ModelRequest(spec=spec, messages=messages)):
            pass
        samples.append((time.perf_counter() - t0) * 1000)
    return p50(samples)


async def main() -> list[str]:
    seq = median_of([await sequential(2000) for _ in range(REPEATS)])
    conc = median_of([await concurrent(5000, 50) for _ in range(REPEATS)])
    model_ms = await model_time_ms()
    overhead = seq.percentile(50) - model_ms
    return [
        seq.line(),
        conc.line(),
        f"{'sdk: gateway overhead per turn (p50 - model)':<46} {overhead:9.3f} ms"
        f"  (model alone p50 {model_ms:.3f} ms)",
    ]
