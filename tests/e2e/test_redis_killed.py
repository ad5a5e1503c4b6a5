"""Redis killed (``kill -9``) under a running ``gateway start --no-worker`` and a
``gateway worker`` that found it through ``$GATEWAY_HOME``: the gateway starts it again
on the same port, the API answers 503 meanwhile, then both carry on without a restart."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

import aiohttp
import pytest
import yaml
from redis.asyncio import Redis

from gateway.redis_state import data_dir_of, pid_alive, read_state
from tests.e2e.conftest import FAST_WORKER
from tests.e2e.test_one_machine import WAIT_S, Proc, ask, run

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


async def until_accepting(base: str) -> None:
    """Poll ``/readyz`` as a load balancer would, until Redis answers the gateway again."""
    async with asyncio.timeout(WAIT_S), aiohttp.ClientSession() as client:
        while True:
            async with client.get(f"{base}/readyz") as resp:
                if resp.status == 200:
                    return
            await asyncio.sleep(0.2)


async def on_disk(url: str) -> None:
    """Rewrite the AOF and wait for it: what the first turn wrote survives the kill, so
    the test is about the restart, not about the second everysec may lose."""
    client = Redis.from_url(url)
    try:
        await client.execute_command("BGREWRITEAOF")
        async with asyncio.timeout(WAIT_S):
            while True:
                info = await client.info("persistence")
                if not (info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"]):
                    return
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def test_redis_killed_under_the_gateway_and_a_worker_comes_back(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    # Short leases: a release that the crash took (AOF everysec) costs a second, not 30.
    config = {"model": "echo/echo", "worker": FAST_WORKER}
    (home / "config.yaml").write_text(yaml.safe_dump(config))
    procs: list[Proc] = []
    try:
        gateway = await Proc.start(home, "start", "--no-worker", "--port", "0")
        procs.append(gateway)
        base = (await gateway.wait_for(r"(http://127\.0\.0\.1:\d+)")).group(1)
        worker = await Proc.start(home, "worker", "--worker-id", "w1", "--stop-grace", "1")
        procs.append(worker)
        await worker.wait_for("worker w1 ready")
        assert "before" in await ask(base, "chat-1", "before")

        first = read_state(data_dir_of(home))
        assert first is not None
        await on_disk(first.url)
        os.kill(first.pid, signal.SIGKILL)
        await gateway.wait_for(f"redis-server pid {first.pid} exited .* starting it again")
        await until_accepting(base)
        reply = await ask(base, "chat-1", "after")
        assert "run.completed" in reply and "after" in reply, reply

        again = read_state(data_dir_of(home))
        assert again is not None and again.url == first.url and again.pid != first.pid
        code, output = await run(home, "status")
        assert code == 0 and "w1" in output, output

        await worker.end(signal.SIGTERM)
        gateway.process.send_signal(signal.SIGINT)
        assert await gateway.finish() == 0, gateway.output
        assert not pid_alive(again.pid), "the restarted Redis stops with the gateway"
        assert "Traceback" not in gateway.output + worker.output
    finally:
        for proc in reversed(procs):
            await proc.end()
        leftover = read_state(data_dir_of(home))
        if leftover is not None and pid_alive(leftover.pid):
            os.kill(leftover.pid, signal.SIGKILL)
