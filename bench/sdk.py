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
from pathlib import Path
from typing import Any

import aiohttp

from bench._procs import model_server
from bench._stats import Figure, median_of, percentile
from core.messages import Message
from core.sessions.base import Session
from core.sessions.file import FileSessionStore
from core.settings import Settings
from core.tools.builtin import builtin_tools
from gateway import Bot

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


async def _overhead_at(base_url: str, history_turns: int) -> tuple[list[float], list[float]]:
    """(bot ms, reference ms) per measured turn, paired."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        mirror = _history(history_turns)
        FileSessionStore(root / "sessions").save_sync(Session(key=SESSION, messages=list(mirror)))
        bot_ms: list[float] = []
        ref_ms: list[float] = []
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
                t0 = time.perf_counter()
                expected = await _bare_request(http, base_url, body)
                t1 = time.perf_counter()
                result = await bot.run(str(user["content"]), session_key=SESSION)
                t2 = time.perf_counter()
                if result.error or result.content != expected:
                    raise RuntimeError(f"bot and reference disagree: {result.content!r}")
                mirror += [user, {"role": "assistant", "content": result.content}]
                if turn >= WARM_TURNS:
                    ref_ms.append((t1 - t0) * 1000)
                    bot_ms.append((t2 - t1) * 1000)
    return bot_ms, ref_ms


def _overhead_line(history_turns: int, runs: list[tuple[list[float], list[float]]]) -> str:
    """Median over runs of: p50/p99 of bot, of the reference, and of the paired difference."""

    def med(values: list[float]) -> float:
        return statistics.median(values)

    bot50 = med([percentile(b, 50) for b, _ in runs])
    bot99 = med([percentile(b, 99) for b, _ in runs])
    ref50 = med([percentile(r, 50) for _, r in runs])
    ref99 = med([percentile(r, 99) for _, r in runs])
    diffs = [[b - r for b, r in zip(bs, rs, strict=True)] for bs, rs in runs]
    over50s = [percentile(d, 50) for d in diffs]
    over50 = med(over50s)
    over99 = med([percentile(d, 99) for d in diffs])
    verdict = "met" if over50 <= TARGET_MS else "MISSED"
    spread = ", ".join(f"{v:.2f}" for v in over50s)
    return (
        f"{'sdk: per-turn overhead, ' + str(history_turns) + ' turns of history':<46}"
        f" p50 {over50:8.3f} ms  p99 {over99:8.3f} ms  [target p50 <= {TARGET_MS:g} ms: {verdict}]"
        f"\n{'':<46} bot.run p50/p99 {bot50:.2f}/{bot99:.2f} ms;"
        f" bare aiohttp p50/p99 {ref50:.2f}/{ref99:.2f} ms; overhead p50 per run [{spread}]"
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


async def main() -> list[str]:
    lines = []
    async with model_server() as (base_url, _pid):
        for history in HISTORIES:
            runs = [await _overhead_at(base_url, history) for _ in range(REPEATS)]
            lines.append(_overhead_line(history, runs))
    if ECHO_RUNS:
        seq = median_of([await sequential(ECHO_RUNS) for _ in range(REPEATS)])
        conc = median_of([await concurrent(ECHO_RUNS * 2, 50) for _ in range(REPEATS)])
        lines += [seq.line(), conc.line()]
    return lines
