"""An invoke whose worker process is killed mid-run is still answered, once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from gateway.app import GatewayApp
from gateway.core.bus import keys
from gateway.core.bus.outbound import read_events
from gateway.core.events import RunCompleted, RunFailed
from gateway.core.settings import HttpSettings, RedisSettings
from tests.e2e.conftest import WorkerLauncher, worker_launcher, write_worker_config  # noqa: F401
from tests.fakes.openai_server import FakeModelServer, Reply, fake_model  # noqa: F401
from tests.fakes.redis_server import redis, redis_server, redis_url  # noqa: F401

pytestmark = pytest.mark.integration

SLOW_REPLY = " ".join(f"word{i}" for i in range(40))


async def outbound_with_events(redis: Redis, at_least: int) -> str:
    """The first API session's outbound stream once it holds ``at_least`` events."""
    while True:
        for stream in await redis.keys(keys.outbound("api:*")):
            if await redis.xlen(stream) >= at_least:
                return str(stream)
        await asyncio.sleep(0.02)


async def test_worker_killed_during_invoke_answers_once(
    redis: Redis,
    redis_url: str,
    fake_model: FakeModelServer,
    worker_launcher: WorkerLauncher,
    tmp_path: Path,
) -> None:
    config = tmp_path / "worker.yaml"
    settings = write_worker_config(
        config, workspace=tmp_path / "ws", model_base_url=fake_model.base_url
    )
    gateway_settings = settings.model_copy(
        update={"redis": RedisSettings(url=redis_url), "http": HttpSettings(port=0)}
    )
    fake_model.script(Reply(text=SLOW_REPLY, chunk_delay_s=0.05))
    doomed = await worker_launcher.start("A", redis_url=redis_url, config=config)
    async with (
        GatewayApp(gateway_settings, with_worker=False) as gateway,
        httpx.AsyncClient(base_url=str(gateway.url), timeout=60) as http,
    ):
        invoke = asyncio.create_task(
            http.post("/v1/agents/assistant/invoke", json={"input": "hello"})
        )
        stream = await asyncio.wait_for(outbound_with_events(redis, 2), 30)
        await doomed.kill()
        assert not invoke.done()
        await worker_launcher.start("B", redis_url=redis_url, config=config)
        response = await asyncio.wait_for(invoke, 60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["output"] == "echo: hello"  # B's re-run, not A's cut-off reply
    session_key = stream.removeprefix("gw:out:{").removesuffix("}")
    events = [e for _, e in await read_events(redis, session_key, after="0-0", block_ms=None)]
    finals = [e for e in events if isinstance(e, RunCompleted | RunFailed)]
    assert [(e.type, e.run_id) for e in finals] == [("run.completed", body["run_id"])]
    assert len(fake_model.requests) == 2
