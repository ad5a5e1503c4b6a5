"""The parts of a chaos run: the gateway process, the model, the outbound recorder."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.core.bus import keys
from gateway.core.bus.codec import decode_event
from gateway.core.bus.signals import stream_batches
from gateway.core.events import RunCompleted, RunFailed
from tests.e2e.conftest import PROJECT_ROOT, _worker_env, die_with_parent
from tests.fakes.openai_server import Reply, last_user_text

GATEWAY_READY_TIMEOUT_S = 30.0


def counting_echo(delay_s: float) -> Any:
    """``echo: <last user text> #<user messages in the history>``, streamed slowly."""

    def reply(messages: list[dict[str, Any]]) -> Reply:
        users = sum(1 for m in messages if m.get("role") == "user")
        text = f"echo: {last_user_text(messages)} #{users}"
        return Reply(text=text, chunk_delay_s=delay_s, chunk_size=6)

    return reply


def write_config(path: Path, *, redis_url: str, port: int, model_url: str, workspace: Path) -> None:
    data = {
        "model": "local/fake-model",
        "providers": {"local": {"base_url": model_url, "api_key": "none", "max_retries": 0}},
        "workspace": str(workspace),
        "redis": {"url": redis_url},
        "http": {"host": "127.0.0.1", "port": port},
        "agents": {"assistant": {"system_prompt": "You are helpful.", "tools": []}},
        "worker": {
            # Short enough that a killed worker's sessions move on within seconds, long
            # enough that a worker starved of CPU on a busy machine keeps its leases.
            "lease_ms": 2000,
            "claim_idle_ms": 2000,
            "ready_partitions": 4,
            "coalesce_ms": 20,
            "concurrency": 16,
            # A kill counts as a failed attempt; several kills may hit one turn.
            "max_deliveries": 10,
        },
    }
    workspace.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


class GatewayProcess:
    """``gateway start --no-worker``; output drained to a bounded tail."""

    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.port = port
        self.process: asyncio.subprocess.Process | None = None
        self.output: deque[str] = deque(maxlen=200)
        self._reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, client: aiohttp.ClientSession) -> None:
        executable = Path(sys.executable).with_name("gateway")
        self.process = await asyncio.create_subprocess_exec(
            str(executable),
            "start",
            "--no-worker",
            "--config",
            str(self.config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            env=_worker_env(),
            preexec_fn=die_with_parent,
        )
        self._reader = asyncio.create_task(self._drain(self.process))
        deadline = time.monotonic() + GATEWAY_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                break
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with client.get(f"{self.url}/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise AssertionError("gateway did not start:\n" + "\n".join(self.output))

    async def _drain(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            self.output.append(raw.decode("utf-8", errors="replace").rstrip())

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._reader is not None:
            await self._reader


class OutboundRecorder:
    """Follows every chat's outbound stream; survives Redis restarts."""

    def __init__(self, redis: Redis, session_keys: list[str]) -> None:
        self._redis = redis
        self._after = dict.fromkeys(session_keys, "0-0")
        self._key_of = {keys.outbound(k): k for k in session_keys}
        self.terminals: dict[str, list[RunCompleted | RunFailed]] = defaultdict(list)
        self.answered_at: dict[str, float] = {}
        self.answers: dict[str, int] = defaultdict(int)
        self.answered_in: dict[str, int] = defaultdict(int)
        """Messages answered per chat."""
        self.runs_ended: dict[str, int] = defaultdict(int)
        self.changed = asyncio.Event()
        """Set whenever a terminal event was recorded."""

    async def run(self) -> None:
        while True:
            try:
                streams = {keys.outbound(k): a for k, a in self._after.items()}
                reply = await self._redis.xread(streams, count=1000, block=500)  # type: ignore[arg-type]
            except (RedisError, OSError):
                await asyncio.sleep(0.1)
                continue
            now = time.monotonic()
            for stream, entries in stream_batches(reply):
                key = self._key_of[stream]
                for entry_id, fields in entries:
                    self._after[key] = entry_id
                    event = decode_event(fields)
                    if isinstance(event, RunCompleted | RunFailed):
                        self._record(key, event, now)

    def _record(self, key: str, event: RunCompleted | RunFailed, now: float) -> None:
        self.terminals[key].append(event)
        self.changed.set()
        self.runs_ended[f"{key} {event.run_id}"] += 1
        for message_id in event.message_ids:  # unique within its chat only
            self.answers[f"{key} {message_id}"] += 1
            self.answered_in[key] += 1
            self.answered_at.setdefault(f"{key} {message_id}", now)
