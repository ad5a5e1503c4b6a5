"""One machine, no Redis URL anywhere: ``gateway start --no-worker``, two ``gateway
worker``s and ``gateway status`` find the Redis the gateway spawned through
``$GATEWAY_HOME``; a gateway killed with SIGKILL leaves an orphan that status reports
and the next start adopts; SIGINT stops it, naming the signal, and stops Redis too."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sys
from collections import deque
from pathlib import Path

import aiohttp
import pytest
import yaml

from gateway.redis_state import data_dir_of, pid_alive, read_state
from tests.e2e.conftest import PROJECT_ROOT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

WAIT_S = 30.0


class Proc:
    """A ``python -m gateway …`` child whose merged output is read line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: deque[str] = deque(maxlen=400)
        self._new_line = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, home: Path, *args: str) -> Proc:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "REDIS_"))}
        env.update(GATEWAY_HOME=str(home), COLUMNS="200")
        env.pop("OPENAI_API_KEY", None)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            env=env,
        )  # fmt: skip
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            async with self._new_line:
                self.lines.append(raw.decode("utf-8", "replace").rstrip())
                self._new_line.notify_all()
        async with self._new_line:
            self._new_line.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def wait_for(self, pattern: str) -> re.Match[str]:
        """The first output line matching ``pattern``; fails if the process ends first."""
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            return next((m for line in self.lines if (m := regex.search(line))), None)

        try:
            async with asyncio.timeout(WAIT_S), self._new_line:
                await self._new_line.wait_for(lambda: found() is not None or self._reader.done())
        except TimeoutError:
            pass
        match = found()
        assert match is not None, f"no line matching {pattern!r} in:\n{self.output}"
        return match

    async def finish(self) -> int:
        async with asyncio.timeout(WAIT_S):
            code = await self.process.wait()
            await self._reader
        return code

    async def end(self, sig: int = signal.SIGTERM) -> None:
        if self.process.returncode is None:
            self.process.send_signal(sig)
        try:
            await self.finish()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def run(home: Path, *args: str) -> tuple[int, str]:
    proc = await Proc.start(home, *args)
    code = await proc.finish()
    return code, proc.output


async def ask(base: str, chat_id: str, text: str) -> str:
    """POST a message, then read its events until the run's final one."""
    body = {"channel": "http", "chat_id": chat_id, "sender_id": "me", "text": text}
    async with aiohttp.ClientSession() as client:
        async with client.post(f"{base}/v1/messages", json=body) as resp:
            assert resp.status == 202, await resp.text()
            events_url = (await resp.json())["events_url"]
        async with asyncio.timeout(WAIT_S), client.get(base + events_url) as resp:
            return await resp.text()


async def test_gateway_two_workers_and_status_find_redis_through_the_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.yaml").write_text(yaml.safe_dump({"model": "echo/echo"}))
    procs: list[Proc] = []
    try:
        gateway = await Proc.start(home, "start", "--no-worker", "--port", "0")
        procs.append(gateway)
        base = (await gateway.wait_for(r"(http://127\.0\.0\.1:\d+)")).group(1)
        workers = []
        for name in ("w1", "w2"):
            worker = await Proc.start(
                home, "worker", "--worker-id", name, "--stop-grace", "1", "--log-format", "json"
            )
            procs.append(worker)
            workers.append(worker)
            await worker.wait_for(f"worker {name} ready")

        code, output = await run(home, "status")
        assert code == 0, output
        assert "w1" in output and "w2" in output and "(redis-server)" in output

        for i in range(4):  # spread over the chats, so both workers may serve
            reply = await ask(base, f"chat-{i}", f"hello {i}")
            assert "run.completed" in reply and f"hello {i}" in reply, reply
        assert (home / "workspace").is_dir(), "the workspace follows GATEWAY_HOME"

        await workers[1].end(signal.SIGTERM)
        records = [json.loads(line) for line in workers[1].lines if line.startswith("{")]
        stopping = {"logger": "gateway", "level": "INFO"}
        stopping["message"] = "SIGTERM received: stopping the worker"
        assert any(stopping.items() <= record.items() for record in records), records
        assert "SIGUSR1" not in workers[1].output  # arq's own stop used to name that one
        assert not [r for r in records if r["level"] in ("ERROR", "CRITICAL")], records

        # A crash of the gateway leaves its redis-server behind: noticed, then adopted.
        state = read_state(data_dir_of(home))
        assert state is not None and pid_alive(state.pid)
        await gateway.end(signal.SIGKILL)
        code, output = await run(home, "status")
        assert code == 0 and "orphaned" in output, output

        again = await Proc.start(home, "start", "--no-worker", "--port", "0")
        procs.append(again)
        await again.wait_for(f"adopted redis-server pid {state.pid}")
        base = (await again.wait_for(r"(http://127\.0\.0\.1:\d+)")).group(1)
        assert "hello again" in await ask(base, "chat-0", "hello again")

        again.process.send_signal(signal.SIGINT)
        assert await again.finish() == 0, again.output
        assert "SIGINT received: stopping the gateway" in again.output
        assert not pid_alive(state.pid), "the adopted Redis stops with the gateway"
        assert read_state(data_dir_of(home)) is None
    finally:
        for proc in reversed(procs):
            await proc.end()
        leftover = read_state(data_dir_of(home))
        if leftover is not None and pid_alive(leftover.pid):
            os.kill(leftover.pid, signal.SIGKILL)
