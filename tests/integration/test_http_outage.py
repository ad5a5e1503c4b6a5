"""Redis going away under a running gateway: 503 with ``Retry-After``, one log line, clean exit.

Each test runs its own ``redis-server`` (the shared one must stay up for other tests).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from gateway.app import GatewayApp
from tests.fakes.redis_server import RedisServer, free_port
from tests.integration.test_http_ingress import MESSAGE, make_settings

pytestmark = pytest.mark.integration

HANG_GUARD_S = 30.0
"""Bounds a step that could hang (a guard against a hung test, not a measurement)."""


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    data_dir = tmp_path / "redis"
    data_dir.mkdir()
    server = RedisServer(data_dir=data_dir).start()
    yield server
    server.close()


@pytest.fixture
async def gateway(own_redis: RedisServer, tmp_path: Path) -> AsyncIterator[GatewayApp]:
    async with GatewayApp(make_settings(own_redis.url, tmp_path), with_worker=False) as app:
        yield app


async def _assert_unavailable(response: aiohttp.ClientResponse) -> None:
    assert response.status == 503
    assert int(response.headers["Retry-After"]) > 0
    error = (await response.json())["error"]
    assert error["code"] == "unavailable" and "Redis" in error["message"]


class LogWaiter(logging.Handler):
    """Sets ``seen`` when a record holding ``text`` is logged (on the event loop's thread)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


def _outage_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


async def test_redis_outage_answers_503_logs_once_and_recovers(
    gateway: GatewayApp, own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    base = gateway.url
    async with aiohttp.ClientSession() as client:
        async with client.post(f"{base}/v1/messages", json=MESSAGE) as resp:
            assert resp.status == 202
            events_url = (await resp.json())["events_url"]
        async with client.get(f"{base}{events_url}&follow=1") as stream:
            assert stream.status == 200
            own_redis.kill()
            async with asyncio.timeout(HANG_GUARD_S):
                await stream.content.read()  # the started stream ends

        for _ in range(3):
            async with client.post(f"{base}/v1/messages", json=MESSAGE) as resp:
                await _assert_unavailable(resp)
        async with client.get(f"{base}/v1/sessions/http%3Aorder-7/events") as resp:
            await _assert_unavailable(resp)
        async with client.get(f"{base}/readyz") as resp:
            assert resp.status == 503 and (await resp.json())["status"] == "unavailable"
            assert int(resp.headers["Retry-After"]) > 0

        assert len(_outage_lines(caplog, "Redis is unreachable")) == 1
        assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]

        back = LogWaiter("Redis is reachable again")
        logging.getLogger("gateway.channels.http.outage").addHandler(back)
        try:
            own_redis.start()
            async with asyncio.timeout(HANG_GUARD_S):
                await back.seen.wait()
        finally:
            logging.getLogger("gateway.channels.http.outage").removeHandler(back)
        async with client.post(f"{base}/v1/messages", json=MESSAGE) as resp:
            assert resp.status == 202

        own_redis.kill()  # a second outage is logged again, once
        async with client.post(f"{base}/v1/messages", json=MESSAGE) as resp:
            await _assert_unavailable(resp)
    assert len(_outage_lines(caplog, "Redis is unreachable")) == 2


async def test_gateway_process_answers_503_then_exits_cleanly(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """``gateway start`` (with its worker) loses Redis, answers 503, and exits 0 on SIGINT
    with no traceback (it used to end in ``ImportError: sys.meta_path is None``)."""
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": "echo/echo",
                "workspace": str(tmp_path / "workspace"),
                "redis": {"url": own_redis.url},
                "http": {"host": "127.0.0.1", "port": port},
                "worker": {"ready_partitions": 2},
            }
        )
    )
    env = {**os.environ, "GATEWAY_HOME": str(tmp_path), "COLUMNS": "200"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "start", "--config", str(config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as client:
            async with asyncio.timeout(HANG_GUARD_S):
                while True:
                    try:
                        async with client.get(f"{base}/readyz") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        pass
                    await asyncio.sleep(0.1)
            async with client.post(f"{base}/v1/messages", json=MESSAGE) as resp:
                assert resp.status == 202
                events_url = (await resp.json())["events_url"]
            # Its turn done first: a turn caught mid-way would hold the shutdown for the
            # worker's grace period, which is not what this test is about.
            async with asyncio.timeout(HANG_GUARD_S), client.get(f"{base}{events_url}") as resp:
                assert b"run.completed" in await resp.read()
            own_redis.kill()
            async with client.post(f"{base}/v1/messages", json=MESSAGE) as resp:
                await _assert_unavailable(resp)
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(HANG_GUARD_S):
            _, stderr_bytes = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    stderr = stderr_bytes.decode(errors="replace")
    assert process.returncode == 0, stderr
    for sign in ("Traceback", "meta_path", "never retrieved", "Exception ignored"):
        assert sign not in stderr, stderr
    assert stderr.count("Redis is unreachable") == 1, stderr


async def test_shutdown_without_redis_still_undoes_everything(
    own_redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopping the worker fails without Redis; the rest (Redis client, worker assembly)
    must still be closed, or the interpreter's exit finishes the job and fails at it."""
    app = GatewayApp(make_settings(own_redis.url, tmp_path))
    await app.start()
    own_redis.kill()
    await app.shutdown()
    assert app.redis is None and app.worker is None and app.url is None
    assert [r.getMessage() for r in caplog.records if "shut down without Redis" in r.getMessage()]
    assert not [r for r in caplog.records if r.exc_info]
