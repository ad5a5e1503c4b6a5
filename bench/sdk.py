"""Embedded SDK: per-turn overhead through the real ``openai`` client, and raw throughput.

The path users run: ``bot.run`` with file sessions, the ``openai`` client, over HTTP to
an OpenAI-compatible server in another process (``bench.model_server``). Each turn is
paired with the reference, the bare streaming request with the same body made with
``aiohttp`` straight to the same server; the overhead of a turn is the difference.
Sessions start with 0, 200 and 1,000 turns of history.

The in-process ``echo`` model figures (no HTTP) show the runtime's own ceiling.

Environment: ``BENCH_SDK_TURNS`` (measured turns per history length, default 40),
``BENCH_SDK_HISTORIES`` (default ``0,200,1000``), ``BENCH_SDK_ECHO_RUNS`` (default 2000;
0 skips the echo figures), ``BENCH_REPEATS`` (default 3).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench._procs import model_server
from bench._stats import Figure, Target, median_of, percentile
from gateway import Bot
from gateway.core.messages import Message
from gateway.core.sessions.base import Session
from gateway.core.sessions.file import FileSessionStore
from gateway.core.settings import Settings
from gateway.core.tools.builtin import builtin_tools

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
TURNS = int(os.environ.get("BENCH_SDK_TURNS", "40"))
HISTORIES = [int(h) for h in os.environ.get("BENCH_SDK_HISTORIES", "0,200,1000").split(",")]
ECHO_RUNS = int(os.environ.get("BENCH_SDK_ECHO_RUNS", "2000"))
WARM_TURNS = 3
SESSION = "bench:user"
TARGET_MS = 1.0


def _bot(root: Path) -> Bot:
    return Bot(Settings(model="echo/echo", workspace=root))


def _settings(root: Path, base_url: str) -> Settings:
    return Settings(
        model="bench/fake-model",
        providers={"bench": {"base_url": base_url, "api_key": "bench-key"}},
        workspace=root,
        # No compaction inside the measurement: the history must stay as long as stated.
        agents={"assistant": {"history_token_budget": 100_000_000}},
    )


def _history(turns: int) -> list[Message]:
    messages: list[Message] = []
    for i in range(turns):
        messages.append({"role": "user", "content": f"message {i}: how is the weather today?"})
        messages.append({"role": "assistant", "content": f"echo: message {i}: it is sunny."})
    return messages


async def _bare_request(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> str:
    """The reference: one streaming chat completion, read to the end, deltas joined."""
    text: list[str] = []
    async with http.post(f"{url}/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for raw in resp.content:
            if not raw.startswith(b"data: ") or raw.startswith(b"data: [DONE]"):
                continue
            for choice in json.loads(raw[6:])["choices"]:
                text.append(choice["delta"].get("content") or "")
    return "".join(text)


@dataclass
class Samples:
    """Per measured turn, paired: wall and CPU (this process) ms of bot.run and the reference."""

    bot_ms: list[float] = field(default_factory=list)
    ref_ms: list[float] = field(default_factory=list)
    bot_cpu_ms: list[float] = field(default_factory=list)
    ref_cpu_ms: list[float] = field(default_factory=list)


async def _overhead_at(base_url: str, history_turns: int) -> Samples:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        mirror = _history(history_turns)
        FileSessionStore(root / "sessions").save_sync(Session(key=SESSION, messages=list(mirror)))
        samples = Samples()
        settings = _settings(root, base_url)
        async with Bot(settings) as bot, aiohttp.ClientSession() as http:
            agent = settings.agent()
            schemas = builtin_tools(settings.tools).select(agent.tools).schemas()
            system: Message = {"role": "system", "content": agent.system_prompt}
            for turn in range(WARM_TURNS + TURNS):
                user: Message = {"role": "user", "content": f"turn {turn}: and tomorrow?"}
                body = {
                    "model": "fake-model",
                    "messages": [system, *mirror, user],
                    "stream": True,
                    "stream_options": {"include_usage": True},
                    "tools": schemas,
                }
                c0, t0 = time.process_time(), time.perf_counter()
                expected = await _bare_request(http, base_url, body)
                c1, t1 = time.process_time(), time.perf_counter()
                result = await bot.run(str(user["content"]), session_key=SESSION)
                c2, t2 = time.process_time(), time.perf_counter()
                if result.error or result.content != expected:
                    raise RuntimeError(f"bot and reference disagree: {result.content!r}")
                mirror += [user, {"role": "assistant", "content": result.content}]
                if turn >= WARM_TURNS:
                    samples.ref_ms.append((t1 - t0) * 1000)
                    samples.bot_ms.append((t2 - t1) * 1000)
                    samples.ref_cpu_ms.append((c1 - c0) * 1000)
                    samples.bot_cpu_ms.append((c2 - c1) * 1000)
    return samples


def _med(values: list[float]) -> float:
    return statistics.median(values)


def _paired(bot: list[float], ref: list[float], q: float) -> float:
    return percentile([b - r for b, r in zip(bot, ref, strict=True)], q)


def _overhead_line(history_turns: int, runs: list[Samples]) -> str:
    """Medians over runs of: the paired per-turn difference (wall and CPU), bot and reference."""
    over50s = [_paired(r.bot_ms, r.ref_ms, 50) for r in runs]
    over50 = _med(over50s)
    over99 = _med([_paired(r.bot_ms, r.ref_ms, 99) for r in runs])
    cpu50 = _med([_paired(r.bot_cpu_ms, r.ref_cpu_ms, 50) for r in runs])
    cpu99 = _med([_paired(r.bot_cpu_ms, r.ref_cpu_ms, 99) for r in runs])
    bot = f"{_med([percentile(r.bot_ms, 50) for r in runs]):.2f}"
    ref = f"{_med([percentile(r.ref_ms, 50) for r in runs]):.2f}"
    bot_cpu = f"{_med([percentile(r.bot_cpu_ms, 50) for r in runs]):.2f}"
    ref_cpu = f"{_med([percentile(r.ref_cpu_ms, 50) for r in runs]):.2f}"
    verdict = "met" if over50 <= TARGET_MS else "MISSED"
    spread = ", ".join(f"{v:.2f}" for v in over50s)
    return (
        f"{'sdk: per-turn overhead, ' + str(history_turns) + ' turns of history':<46}"
        f" p50 {over50:7.3f} ms  p99 {over99:7.3f} ms  [target p50 <= {TARGET_MS:g} ms: {verdict}]"
        f"\n{'':<46} CPU of this process: p50 {cpu50:.3f} ms  p99 {cpu99:.3f} ms"
        f"\n{'':<46} p50 wall/CPU: bot.run {bot}/{bot_cpu} ms, bare aiohttp {ref}/{ref_cpu} ms;"
        f" wall overhead p50 per run [{spread}]"
    )


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
    return Figure("sdk: sequential bot.run, echo model", n, elapsed, latencies)


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
    return Figure(
        f"sdk: {sessions} concurrent sessions, echo model", len(latencies), elapsed, latencies
    )


REFERENCE = {0: "0.68 / 0.63 ms", 200: "0.58 / 0.52 ms", 1000: "0.26 / 0.26 ms"}
"""This round's starting figures (README: last round's final code on this round's
machine, the same day), printed next to this run's."""


async def main() -> list[Target]:
    """Prints each figure as it is measured; returns the targets."""
    targets = []
    async with model_server() as (base_url, _pid):
        for history in HISTORIES:
            runs = [await _overhead_at(base_url, history) for _ in range(REPEATS)]
            print(_overhead_line(history, runs), flush=True)
            wall = _med([_paired(r.bot_ms, r.ref_ms, 50) for r in runs])
            cpu = _med([_paired(r.bot_cpu_ms, r.ref_cpu_ms, 50) for r in runs])
            targets.append(
                Target(
                    f"SDK per-turn overhead p50, {history} turns (wall / CPU)",
                    f"{wall:.2f} / {cpu:.2f} ms",
                    f"<= {TARGET_MS:g} ms",
                    wall <= TARGET_MS,
                    REFERENCE.get(history, ""),
                )
            )
    if ECHO_RUNS:
        seq = median_of([await sequential(ECHO_RUNS) for _ in range(REPEATS)])
        conc = median_of([await concurrent(ECHO_RUNS * 2, 50) for _ in range(REPEATS)])
        print(seq.line(), conc.line(), sep="\n", flush=True)
    return targets
