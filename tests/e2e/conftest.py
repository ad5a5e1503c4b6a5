"""Helpers of the end-to-end tests: worker processes, their config, waiting on the bus.

``worker_launcher`` starts real ``python -m gateway.workers`` processes (each waits for its
``worker <id> ready`` line) and kills whatever is still running when the test ends.
``OutboundWatch`` follows chats' outbound streams with blocking ``XREAD``s.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import pytest_asyncio
import yaml
from redis.asyncio import Redis
from redis.typing import KeyT, StreamIdT

from gateway.core.bus import keys
from gateway.core.bus.codec import decode_event
from gateway.core.bus.inbound import Published, publish_inbound
from gateway.core.bus.signals import stream_batches
from gateway.core.events import RunCompleted, RunFailed, StreamEvent
from gateway.core.messages import InboundMessage
from gateway.core.settings import Settings, load_settings

T = TypeVar("T")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
OUTPUT_LINES_KEPT = 300

FAST_WORKER: dict[str, object] = {
    "lease_ms": 1000,
    "claim_idle_ms": 1000,
    "ready_partitions": 4,
    "coalesce_ms": 20,
    "concurrency": 16,
}
"""Quick leases and claims so a killed worker's session is taken over within seconds."""


def write_worker_config(
    path: Path, *, workspace: Path, model_base_url: str | None = None, **worker: object
) -> Settings:
    """Write a worker config (the fake server's model, else the echo model) and load it."""
    workspace.mkdir(parents=True, exist_ok=True)
    data: dict[str, object] = {
        "model": "local/fake-model" if model_base_url else "echo/echo",
        "workspace": str(workspace),
        "agents": {"assistant": {"system_prompt": "You are helpful.", "tools": []}},
        "worker": {**FAST_WORKER, **worker},
    }
    if model_base_url:
        data["providers"] = {
            "local": {"base_url": model_base_url, "api_key": "none", "max_retries": 0}
        }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_settings(path, required=True)


def die_with_parent() -> None:
    """``preexec_fn`` of test children: on Linux, SIGKILL the child when the test process
    dies (a test killed by its timeout leaves no worker running on)."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _worker_env() -> dict[str, str]:
    """This environment without ``GATEWAY_*``/``REDIS_URL``: they would beat the config."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("GATEWAY_") and name != "REDIS_URL"
    }


class WorkerProcess:
    """One ``python -m gateway.workers`` child; its merged stdout/stderr is drained continuously."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self.output: deque[str] = deque(maxlen=OUTPUT_LINES_KEPT)
        self._ready = asyncio.Event()
        # Drained until EOF so the child never blocks on a full pipe.
        self._reader = asyncio.create_task(self._read_output(), name=f"output of {name}")

    async def _read_output(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        ready_line = f"worker {self.name} ready"
        async for raw in stream:
            line = raw.decode("utf-8", errors="replace").rstrip()
            self.output.append(line)
            if line == ready_line:
                self._ready.set()

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def output_tail(self, lines: int = 40) -> str:
        return "\n".join(list(self.output)[-lines:])

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Return once the worker reads signals; fail if it exits or takes too long."""
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({ready, self._reader}, timeout=timeout_s, return_when="FIRST_COMPLETED")
        ready.cancel()
        if not self._ready.is_set():
            raise AssertionError(
                f"worker {self.name} not ready after {timeout_s}s "
                f"(exit code {self.process.returncode}):\n{self.output_tail()}"
            )

    async def kill(self) -> None:
        """SIGKILL, as a crash: nothing is released or acked."""
        if self.running:
            self.process.kill()
        await self.process.wait()

    async def stop(self) -> None:
        """SIGTERM (graceful stop), SIGKILL if it does not exit in time; then drain output."""
        if self.running:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await self._reader


class WorkerLauncher:
    """Starts worker processes and ends every one of them in ``close``."""

    def __init__(self) -> None:
        self.started: list[WorkerProcess] = []

    async def start(
        self,
        name: str,
        *,
        redis_url: str,
        config: Path,
        deliver_channels: Sequence[str] = (),
    ) -> WorkerProcess:
        args = [
            "-m", "gateway.workers",
            "--redis-url", redis_url,
            "--config", str(config),
            "--worker-id", name,
            "--no-jobs",
            "--stop-grace", "1",
        ]  # fmt: skip
        for channel in deliver_channels:
            args += ["--deliver-channel", channel]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            env=_worker_env(),
            preexec_fn=die_with_parent,
        )
        worker = WorkerProcess(name, process)
        self.started.append(worker)
        await worker.wait_ready()
        return worker

    def output_tails(self) -> str:
        """Every worker's recent output, for assertion messages."""
        return "\n".join(f"--- {w.name}:\n{w.output_tail()}" for w in self.started)

    async def close(self) -> None:
        for worker in self.started:
            await worker.stop()


@pytest_asyncio.fixture
async def worker_launcher() -> AsyncIterator[WorkerLauncher]:
    launcher = WorkerLauncher()
    try:
        yield launcher
    finally:
        await launcher.close()
        # Captured by pytest and shown only when the test failed.
        print(launcher.output_tails())


def inbound(
    chat_id: str, text: str, *, channel: str = "test", event_id: str | None = None
) -> InboundMessage:
    return InboundMessage(
        channel=channel, chat_id=chat_id, sender_id="u1", text=text, platform_event_id=event_id
    )


async def publish(redis: Redis, settings: Settings, message: InboundMessage) -> Published:
    cfg = settings.worker
    return await publish_inbound(
        redis, message, partitions=cfg.ready_partitions, maxlen=cfg.stream_maxlen
    )


async def eventually_equal(
    probe: Callable[[], Awaitable[T]],
    expected: T,
    *,
    what: str,
    timeout_s: float = 10.0,
    interval_s: float = 0.05,
) -> None:
    """Re-read ``probe()`` until it equals ``expected``; fail naming ``what`` at the deadline.

    Only for state with no event to wait on (a commit landing after its last event).
    """
    deadline = time.monotonic() + timeout_s
    while (value := await probe()) != expected:
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout_s}s waiting for {what}: {value!r} != {expected!r}"
            )
        await asyncio.sleep(interval_s)


class OutboundWatch:
    """The events of some chats' outbound streams, read with blocking XREADs."""

    def __init__(self, redis: Redis, session_keys: Sequence[str]) -> None:
        self._redis = redis
        self.events: dict[str, list[tuple[str, StreamEvent]]] = {k: [] for k in session_keys}
        self._after = dict.fromkeys(session_keys, "0-0")
        self._key_of = {keys.outbound(k): k for k in session_keys}

    def of(self, key: str) -> list[StreamEvent]:
        return [event for _, event in self.events[key]]

    def terminals(self, key: str) -> list[RunCompleted | RunFailed]:
        return [e for e in self.of(key) if isinstance(e, RunCompleted | RunFailed)]

    def completed(self, key: str) -> list[tuple[str, RunCompleted]]:
        """``run.completed`` events of the chat with their entry ids."""
        return [(i, e) for i, e in self.events[key] if isinstance(e, RunCompleted)]

    def summary(self) -> str:
        return "; ".join(
            f"{key}: {[e.type for e in self.of(key)][-12:]}" for key in list(self.events)[:5]
        )

    async def until(
        self, done: Callable[[OutboundWatch], bool], *, what: str, timeout_s: float = 20.0
    ) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                while not done(self):
                    await self._read()
        except TimeoutError:
            raise AssertionError(
                f"timed out after {timeout_s}s waiting for {what}; seen: {self.summary()}"
            ) from None

    async def _read(self) -> None:
        streams: dict[KeyT, StreamIdT] = {
            keys.outbound(key): after for key, after in self._after.items()
        }
        reply = await self._redis.xread(streams, block=1000)
        for stream, entries in stream_batches(reply):
            key = self._key_of[stream]
            for entry_id, fields in entries:
                self.events[key].append((entry_id, decode_event(fields)))
                self._after[key] = entry_id
