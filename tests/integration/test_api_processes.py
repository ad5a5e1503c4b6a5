"""The API across processes: two ``gateway start --no-worker`` and one worker process.

A pipeline is started on gateway A without waiting and read from gateway B: its
state lives in Redis, not in the process that runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml

from gateway.client import AsyncGatewayClient
from tests.e2e.conftest import PROJECT_ROOT, WorkerLauncher, worker_launcher  # noqa: F401
from tests.fakes.live_gateway import API_KEY
from tests.fakes.openai_server import FakeModelServer, Reply, fake_model  # noqa: F401
from tests.fakes.redis_server import free_port, redis_server, redis_url  # noqa: F401

pytestmark = pytest.mark.integration

READY_TIMEOUT_S = 30.0


def write_config(path: Path, redis_url: str, model_url: str, port: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "model": "local/fake-model",
        "providers": {"local": {"base_url": model_url, "api_key": "none", "max_retries": 0}},
        "workspace": str(path.parent / "ws"),
        "redis": {"url": redis_url},
        "http": {"host": "127.0.0.1", "port": port, "api_keys": [API_KEY]},
        "agents": {"researcher": {"tools": []}, "summarizer": {"tools": []}},
        "pipelines": {"research": {"steps": [{"agent": "researcher"}, {"agent": "summarizer"}]}},
        "worker": {"ready_partitions": 2, "lease_ms": 1000, "claim_idle_ms": 1000},
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def gateway_process(config: Path, port: int) -> AsyncIterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_") and k != "REDIS_URL"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "start", "--no-worker", "--config", str(config),
        cwd=PROJECT_ROOT, env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as probe, asyncio.timeout(READY_TIMEOUT_S):
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await probe.get("/healthz")).status_code == 200:
                        break
                assert process.returncode is None, "the gateway process exited"
                await asyncio.sleep(0.1)
        yield url
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def test_pipeline_run_is_read_from_a_second_gateway_process(
    redis_url: str, fake_model: FakeModelServer, worker_launcher: WorkerLauncher, tmp_path: Path
) -> None:
    port_a, port_b = free_port(), free_port()
    config_a = write_config(tmp_path / "a" / "c.yaml", redis_url, fake_model.base_url, port_a)
    config_b = write_config(tmp_path / "b" / "c.yaml", redis_url, fake_model.base_url, port_b)
    fake_model.script(Reply(text="many facts", chunk_delay_s=0.02), Reply(text="short"))
    await worker_launcher.start("W", redis_url=redis_url, config=config_a)
    async with (
        gateway_process(config_a, port_a) as url_a,
        gateway_process(config_b, port_b) as url_b,
        AsyncGatewayClient(url_a, API_KEY) as a,
        AsyncGatewayClient(url_b, API_KEY) as b,
    ):
        started = await a.pipelines.run(name="research", input="batteries", wait=False)
        assert started.status == "running"
        async with asyncio.timeout(30):
            for _ in range(10_000):  # polled: no notification exists for another replica's run
                run = await b.pipelines.get_run(started.run_id)
                if run.status != "running":
                    break
                await asyncio.sleep(0.05)
        assert (run.status, run.output) == ("completed", "short")
        assert [(s.name, s.status) for s in run.steps] == [
            ("researcher", "completed"),
            ("summarizer", "completed"),
        ]
        assert all(s.duration_ms is not None for s in run.steps)
        assert run.steps[0].duration_ms is not None and run.steps[0].duration_ms >= 20
        status = await b.pipelines.status(name="research")
        assert (status.run_id, status.status) == (started.run_id, "completed")
        # The same gateway also answers an invoke through the worker process.
        reply = await b.agents.invoke(name="researcher", input="ping")
        assert reply.output == "echo: ping"
