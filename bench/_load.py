"""The bus benchmark's load generator: POSTs messages, follows every chat's SSE stream.

It shares the 2 cores with what it measures, so it does as little as it can per
message: SSE frames are split from raw reads (no per-line iteration), the event type
is read from the ``event:`` line, and JSON is parsed only for ``run.started`` (its run
id and a backlog notice's dropped ids) and ``run.failed`` (its error): two of the
five to eight events of a message. Its own CPU per message is printed with the others.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections import defaultdict, deque

import aiohttp

CHATS = 200
DRAIN_TIMEOUT_S = 600
LAG_TICK_S = 0.01
STALL_MS = 5.0


class LoopProbe:
    """Stalls of this process's own loop (as ``bench._launch`` records them for the
    gateway and the worker): a late first delta may be the load generator's lateness."""

    def __init__(self) -> None:
        self.stalls: list[tuple[float, float]] = []
        """(start epoch s, ms) of each tick more than ``STALL_MS`` late."""
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._handle = loop.call_at(loop.time() + LAG_TICK_S, self._tick, loop.time() + LAG_TICK_S)

    def _tick(self, due: float) -> None:
        loop = asyncio.get_running_loop()
        late_ms = (loop.time() - due) * 1000
        if late_ms > STALL_MS:
            self.stalls.append((time.time() - late_ms / 1000, late_ms))
        self._handle = loop.call_at(loop.time() + LAG_TICK_S, self._tick, loop.time() + LAG_TICK_S)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


class Watcher:
    """One SSE stream per chat (``follow=1``): first-delta and completion times per run."""

    def __init__(self, window: int, expected: int) -> None:
        self.window = asyncio.Semaphore(window)
        """Messages posted and not answered yet: the sustained phase keeps this many in flight."""
        self.posted: dict[str, deque[float]] = defaultdict(deque)
        self.first_delta_ms: list[float] = []
        self.first_delta_at: list[float] = []
        """Epoch seconds of each first delta (matched against GC pauses and loop stalls)."""
        self.completed = 0
        self.failed: list[str] = []
        self.done = asyncio.Event()
        self.expected = expected
        self.probe = LoopProbe()

    async def follow(self, http: aiohttp.ClientSession, url: str, chat: str) -> None:
        waiting: set[str] = set()  # runs started whose first delta has not come yet
        seen: set[str] = set()  # a re-run (same run id) must not count a second first delta
        pending = b""
        async with http.get(f"{url}/v1/sessions/http:{chat}/events?after=0-0&follow=1") as resp:
            async for data in resp.content.iter_any():
                *frames, pending = (pending + data).split(b"\n\n")
                for frame in frames:
                    if frame.startswith(b"id:"):
                        self._frame(chat, frame, waiting, seen)

    def _frame(self, chat: str, frame: bytes, waiting: set[str], seen: set[str]) -> None:
        _, event_line, data_line = frame.split(b"\n", 2)
        kind = event_line[7:]  # b"event: " is 7 bytes
        if kind == b"text.delta":
            if waiting:
                waiting.clear()
                now = time.perf_counter()
                self.first_delta_ms.append((now - self.posted[chat].popleft()) * 1000)
                self.first_delta_at.append(time.time())
        elif kind == b"run.started":
            event = json.loads(data_line[6:])
            if event["metadata"].get("dropped_ids"):
                # A backlog-cap notice answers several messages at once: all are done.
                dropped = len(event["metadata"]["dropped_ids"])
                self.failed.append(f"backlog cap dropped {dropped} messages")
                self._ended(dropped - 1)
            elif event["run_id"] not in seen:
                seen.add(event["run_id"])
                waiting.add(event["run_id"])
        elif kind == b"run.completed":
            self._ended(1)
        elif kind == b"run.failed":
            self.failed.append(str(json.loads(data_line[6:]).get("error")))
            self._ended(1)

    def _ended(self, runs: int) -> None:
        self.completed += runs
        for _ in range(runs):
            self.window.release()
        if self.completed >= self.expected:
            self.done.set()


async def _post(
    http: aiohttp.ClientSession, url: str, watcher: Watcher, i: int, phase: str
) -> None:
    chat = f"{phase}-{i % CHATS}"
    watcher.posted[chat].append(time.perf_counter())
    body = {"channel": "http", "chat_id": chat, "sender_id": "bench", "text": f"message {i}"}
    async with http.post(f"{url}/v1/messages", json=body) as resp:
        if resp.status != 202:
            raise RuntimeError(f"POST failed: {resp.status} {await resp.text()}")


async def through_http(
    url: str, total: int, rate: float | None, phase: str, window: int
) -> tuple[float, Watcher]:
    """Post ``total`` messages (at ``rate`` per second, or ``window`` in flight when None)
    and wait for every answer. Each phase uses its own chats, so SSE replays of earlier
    phases do not mix in."""
    watcher = Watcher(window, total)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout()) as http:
        followers = [
            asyncio.create_task(watcher.follow(http, url, f"{phase}-{c}")) for c in range(CHATS)
        ]
        await asyncio.sleep(0.5)  # let every SSE stream attach
        gc.collect()  # the client's own collections must not land inside the measurement
        gc.freeze()
        watcher.probe.start()
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
        watcher.probe.stop()
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
    return elapsed, watcher
