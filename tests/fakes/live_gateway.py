"""A real gateway (HTTP API + in-process worker) and the fake model server, on a thread.

The gateway runs on its own event loop in a background thread, so a test can talk
to it with blocking clients (``GatewayClient``, the official ``openai`` client) as
well as async ones. Redis is the test's real ``redis-server``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway.app import GatewayApp
from gateway.core.settings import Settings
from tests.fakes.openai_server import FakeModelServer

T = TypeVar("T")

START_TIMEOUT_S = 30.0


def api_settings(redis_url: str, model_url: str, workspace: Path, **extra: Any) -> Settings:
    """Three agents on the fake model, one pipeline, quick worker settings."""
    data: dict[str, Any] = {
        "model": "local/fake-model",
        "providers": {"local": {"base_url": model_url, "api_key": "none", "max_retries": 0}},
        "workspace": str(workspace),
        "redis": {"url": redis_url},
        "http": {"host": "127.0.0.1", "port": 0},
        "agents": {
            "assistant": {"system_prompt": "You are helpful.", "tools": ["read_file"]},
            "researcher": {"system_prompt": "You research.", "tools": []},
            "summarizer": {"system_prompt": "You summarize.", "tools": []},
            "offline": {"model": "nowhere/model", "description": "No such provider."},
        },
        "pipelines": {
            "research-and-summarize": {"steps": [{"agent": "researcher"}, {"agent": "summarizer"}]}
        },
        "worker": {"ready_partitions": 2, "coalesce_ms": 5, "lease_ms": 2000, "max_deliveries": 1},
    }
    data.update(extra)
    return Settings(**data)


class LiveGateway:
    """``with LiveGateway(make_settings) as gw: gw.url, gw.fake``."""

    def __init__(
        self, make_settings: Callable[[str], Settings], *, with_worker: bool = True
    ) -> None:
        self._make_settings = make_settings
        self._with_worker = with_worker
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.fake = FakeModelServer()
        self.app: GatewayApp | None = None
        self.url = ""

    def run(self, work: Coroutine[Any, Any, T], timeout: float = START_TIMEOUT_S) -> T:
        """Run ``work`` on the gateway's loop and wait for its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(work, self._loop)
        return future.result(timeout)

    def __enter__(self) -> LiveGateway:
        self._thread.start()
        try:
            self.run(self._start())
        except BaseException:
            self.__exit__()
            raise
        return self

    async def _start(self) -> None:
        await self.fake.start()
        self.app = GatewayApp(
            self._make_settings(self.fake.base_url), with_worker=self._with_worker
        )
        await self.app.start()
        assert self.app.url is not None
        self.url = self.app.url

    async def _stop(self) -> None:
        if self.app is not None:
            await self.app.shutdown()
        await self.fake.stop()

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.run(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(START_TIMEOUT_S)
            self._loop.close()


API_KEY = "test-key-123"


@pytest.fixture
def live_gateway(redis_url: str, tmp_path: Path) -> Iterator[LiveGateway]:
    """A gateway requiring ``API_KEY``, with a worker, on the fake model server."""

    def make(model_url: str) -> Settings:
        return api_settings(
            redis_url, model_url, tmp_path / "workspace", http=_http(api_keys=[API_KEY])
        )

    with LiveGateway(make) as gateway:
        yield gateway


def _http(**extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": 0, **extra}
